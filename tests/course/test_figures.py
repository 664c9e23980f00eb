"""helpers.course.figures: a lab's measured figures are recorded by its run, saved beside it and rendered into its
text, and every lab's table equals the rendering of its saved runs."""

import json
import subprocess
import sys

import nbformat
import pytest

from helpers.course import figures
from helpers.course.notebooks import FIGURES_ENV_VAR, measure
from helpers.paths import REPO_ROOT


def test_record_figures_writes_only_in_a_measuring_run(tmp_path, monkeypatch):
    monkeypatch.delenv(FIGURES_ENV_VAR, raising=False)
    assert figures.record_figures("lab9", [{"loss": 1.0}], profile="cpu") is None
    monkeypatch.setenv(FIGURES_ENV_VAR, str(tmp_path))
    path = figures.record_figures("lab9", [{"model": "a", "loss": 1.23456}, {"model": "b", "loss": 2.0}],
                                  profile="cpu")
    saved = json.loads(path.read_text())
    assert path == tmp_path / "lab9_cpu.json" and saved["profile"] == "cpu" and saved["rows"][0]["loss"] == 1.23456
    assert saved["machine"].startswith("CPU (") and "load average" in saved["machine"]
    with pytest.raises(ValueError, match="non-empty list"):
        figures.record_figures("lab9", [], profile="cpu")


def saved_run(folder, lab, profile, rows, minutes=None):
    data = {"lab": lab, "profile": profile, "machine": "CPU (x86_64, 1 thread)", "rows": rows}
    if minutes is not None:
        data["minutes"] = minutes
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{lab}_{profile}.json").write_text(json.dumps(data))


def test_render_lists_every_profile_and_says_which_was_not_measured(tmp_path):
    saved_run(tmp_path, "lab9", "cpu", [{"model": "LLaMA", "loss": 1.9336}, {"model": "GPT-2", "loss": 2.125}], 3.8)
    table = figures.render("lab9", tmp_path)
    assert table.splitlines()[:4] == ["| profile | model | loss |", "|---|---|---|",
                                      "| cpu | LLaMA | 1.934 |", "| cpu | GPT-2 | 2.125 |"]
    assert "- `cpu`: measured on CPU (x86_64, 1 thread), the whole lab in 3.8 minutes" in table
    assert "- `gpu`: not measured yet (no saved run)." in table
    with pytest.raises(FileNotFoundError, match="no saved run of lab8"):
        figures.render("lab8", tmp_path)


def test_a_table_is_rewritten_between_its_markers_and_nowhere_else(tmp_path, monkeypatch):
    lab = "lab9_demo"
    (tmp_path / lab).mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        f"Before.\n\n{figures.BEGIN}\nold table\n{figures.END}\n\nAfter.")])
    nbformat.write(nb, tmp_path / lab / f"{lab}.ipynb")
    saved_run(tmp_path / lab / figures.MEASURED, lab, "gpu", [{"loss": 1.5}])
    monkeypatch.setattr(figures, "SOLUTIONS_DIR", tmp_path)
    assert figures.labs_with_figures() == [lab] and figures.differs(lab)
    assert figures.update(lab) and not figures.differs(lab) and not figures.update(lab)
    source = nbformat.read(tmp_path / lab / f"{lab}.ipynb", as_version=4).cells[0].source
    assert source.startswith("Before.\n\n" + figures.BEGIN) and source.endswith(figures.END + "\n\nAfter.")
    assert "| gpu | 1.500 |" in source and "old table" not in source


def test_every_labs_table_equals_its_saved_runs():
    """Prose and numbers cannot drift: a lab's quoted table is the rendering of the runs saved beside it."""
    result = subprocess.run([sys.executable, "-m", "helpers.course.figures", "check"], capture_output=True, text=True,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_a_measuring_run_saves_the_figures_with_its_minutes(tmp_path):
    notebook = tmp_path / "lab9_demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from helpers.course.figures import record_figures\n"
        "record_figures('lab9_demo', [{'steps': 3, 'loss': 0.5}])")]), notebook)
    out, raised = measure(notebook, tmp_path / "runs", "smoke", timeout=120)
    saved = json.loads((tmp_path / "runs" / "lab9_demo_smoke.json").read_text())
    assert raised == [] and out.is_file()
    assert saved["rows"] == [{"steps": 3, "loss": 0.5}] and saved["profile"] == "smoke" and saved["minutes"] >= 0
