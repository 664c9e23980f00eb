"""helpers.paths.data_script: the scripts of data/ import as modules, once, and a wrong name says what exists."""

import pytest

from helpers.paths import DATA_DIR, data_script


def test_data_script_imports_the_file_once():
    shakespeare = data_script("shakespeare")
    assert shakespeare.__file__ == str(DATA_DIR / "shakespeare.py")
    assert callable(shakespeare.build)
    assert data_script("shakespeare") is shakespeare


def test_a_missing_data_script_names_the_ones_there_are():
    with pytest.raises(FileNotFoundError, match=r"no data script .*nope\.py; the scripts in data/ are: .*shakespeare"):
        data_script("nope")
