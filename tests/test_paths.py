"""helpers.paths: the course's folders, and a clear message for the name that left in version 0.2."""

import pytest

from helpers.paths import DATA_DIR, REPO_ROOT


def test_folders_are_the_checkouts():
    assert (REPO_ROOT / "pyproject.toml").is_file() and DATA_DIR == REPO_ROOT / "data"


def test_data_script_says_where_the_data_code_went():
    with pytest.raises(ImportError, match=r"from helpers.sam import scenes"):
        from helpers.paths import data_script  # noqa: F401
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import helpers.paths

        helpers.paths.nope  # noqa: B018
