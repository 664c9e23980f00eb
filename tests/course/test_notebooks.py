"""The notebooks' format: valid, with the Colab badge and set-up cell, clear messages when broken."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.course import notebooks
from helpers.course.notebooks import (
    NotebookError,
    badge_source,
    course_notebooks,
    load,
    setup_source,
    stamp,
    validate,
)
from helpers.paths import REPO_ROOT

ALL = course_notebooks()


def test_there_are_notebooks():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in ALL}
    assert "chapters/llama/01_rmsnorm_prenorm.ipynb" in names
    assert "solutions/lab0_warmup/lab0_warmup.ipynb" in names
    assert "labs/lab0_warmup/lab0_warmup.ipynb" in names


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_notebook_opens_in_colab(path):
    assert validate([path]) == []
    nb = load(path)
    assert "colab.research.google.com/github/" in nb.cells[0].source
    assert nb.metadata.kernelspec.name == "python3"
    assert "widgets" not in nb.metadata, "widget state makes the book load scripts from a CDN"


@pytest.mark.parametrize("path", [p for p in ALL if p.relative_to(REPO_ROOT).parts[0] == "chapters"],
                         ids=lambda p: p.name)
def test_chapters_are_committed_executed(path):
    code = [c for c in load(path).cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.get("execution_count") for c in code), "run the chapter and commit its outputs"
    assert all(c.outputs for c in code[:3]), "the first code cells show their outputs"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"the committed chapter shows an error: {errors[0].ename if errors else ''}"


def test_solution_badge_points_at_the_student_version():
    badge = badge_source(REPO_ROOT / "solutions/lab0_warmup/lab0_warmup.ipynb")
    assert "/blob/main/labs/lab0_warmup/lab0_warmup.ipynb" in badge


def test_setup_cell_does_nothing_where_the_course_is_installed():
    result = subprocess.run([sys.executable, "-c", setup_source()], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The course is installed: nothing to set up."


def test_setup_cell_installs_the_course_on_colab(tmp_path):
    """Where `helpers` cannot be imported (Colab), the cell clones the configured repository and pip-installs it."""
    script = tmp_path / "colab.py"
    script.write_text(
        "import importlib.util, subprocess\n"
        "importlib.util.find_spec = lambda name, *a: None\n"
        "calls = []\n"
        "subprocess.run = lambda cmd, check: calls.append(cmd)\n"
        f"exec(compile({setup_source()!r}, 'setup', 'exec'))\n"
        "print(calls)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = notebooks.course_config()
    assert f"https://github.com/{config['repository']}" in result.stdout
    assert "'pip', 'install'" in result.stdout and "Installed the course from" in result.stdout


def test_malformed_notebook_gets_one_clear_message(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": [}')
    with pytest.raises(NotebookError) as excinfo:
        load(broken)
    message = str(excinfo.value)
    assert "is not a valid notebook: JSON error at line 1, column 12" in message and "git checkout" in message
    not_a_notebook = tmp_path / "list.ipynb"
    not_a_notebook.write_text("[1, 2]")
    assert "is JSON but not a notebook" in validate([not_a_notebook])[0]
    bad_schema = tmp_path / "schema.ipynb"
    bad_schema.write_text(json.dumps({"cells": [{"cell_type": "code"}], "metadata": {}, "nbformat": 4,
                                      "nbformat_minor": 4}))
    assert "does not follow the notebook format" in validate([bad_schema])[0]


def test_validate_command_exits_1_with_the_reason(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("not json")
    result = subprocess.run([sys.executable, "-m", "helpers.course.notebooks", "validate", str(broken)],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 1
    assert "is not a valid notebook" in result.stderr and "Traceback" not in result.stderr


def test_stamp_adds_both_cells_once(tmp_path):
    import nbformat

    path = tmp_path / "new.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title")]), path)
    assert validate([path]) != []
    assert stamp(path) is True
    assert stamp(path) is False  # idempotent
    nb = load(path)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "markdown"]
    assert nb.cells[1].source == setup_source()
    assert "remove-cell" in nb.cells[1].metadata.tags  # hidden in the book
    assert Path(path).read_text().count("colab-badge.svg") == 1


def test_measure_runs_a_copy_in_the_profile_saves_each_cell_and_goes_on_after_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    nb = notebooks.nbformat.v4.new_notebook()
    nb.cells = [notebooks.nbformat.v4.new_code_cell("import os\nprint(os.environ['COURSE_PROFILE'])"),
                notebooks.nbformat.v4.new_code_cell("raise ValueError('a broken cell')"),
                notebooks.nbformat.v4.new_code_cell("print('after the error')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "demo.ipynb"
    source.write_text(notebooks.nbformat.writes(nb))
    before = source.read_text()
    out, raised = notebooks.measure(source, tmp_path / "runs", "smoke", timeout=120)
    assert out == tmp_path / "runs" / "demo_smoke.ipynb" and raised == [1]
    assert source.read_text() == before, "measure must not touch the notebook it runs"
    cells = load(out).cells
    assert cells[0].outputs[0]["text"] == "smoke\n"
    assert cells[1].outputs[0]["ename"] == "ValueError"
    assert cells[2].outputs[0]["text"] == "after the error\n"
    assert all(c.metadata["measure"]["seconds"] >= 0 for c in cells)
    assert "COURSE_PROFILE" not in os.environ, "the profile is the kernel's, not this process's"


def test_measure_names_an_unknown_profile(tmp_path, capsys):
    assert notebooks.main(["measure", "--profile", "tpu", "--out", str(tmp_path),
                           str(REPO_ROOT / "solutions/lab0_warmup/lab0_warmup.ipynb")]) == 1
    assert "is not a run profile" in capsys.readouterr().err
