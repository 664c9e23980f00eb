"""Grading a batch: the solution gets full marks, the untouched lab zero, broken ones a grade and a reason."""

import csv
import re
import subprocess
import sys

import nbformat
import pytest

from helpers.paths import LABS_DIR, REPO_ROOT, SOLUTIONS_DIR

pytestmark = pytest.mark.slow
LAB = "lab0_warmup"
CELL_TIMEOUT = 15


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _with_solution(grade_id, new_body):
    """The solution notebook with one solution cell's body replaced (the signature is kept)."""
    nb = nbformat.read(SOLUTIONS_DIR / LAB / f"{LAB}.ipynb", as_version=4)
    cell = _cell(nb, grade_id)
    cell.source = re.sub(r"### BEGIN SOLUTION.*### END SOLUTION", new_body, cell.source, flags=re.S)
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    submissions = root / "submissions"

    def submit(student, nb=None, text=None):
        folder = submissions / student
        folder.mkdir(parents=True)
        path = folder / f"{LAB}.ipynb"
        path.write_text(text if text is not None else nbformat.writes(nb), encoding="utf-8")

    submit("alice_solution", nbformat.read(SOLUTIONS_DIR / LAB / f"{LAB}.ipynb", as_version=4))
    submit("bob_untouched", text=(LABS_DIR / LAB / f"{LAB}.ipynb").read_text())
    submit("carol_not_json", text=(LABS_DIR / LAB / f"{LAB}.ipynb").read_text()[:500])
    submit("dave_raises", _with_solution("rms_norm", 'raise ValueError("my bug")'))
    submit("erin_endless_loop", _with_solution("gradient_norms", "while True:\n        pass"))
    frank = _with_solution("rms_norm", "return x")  # wrong, and the tests "fixed" to pass
    _cell(frank, "rms_norm_tests").source = "pass  # tests removed"
    submit("frank_edited_tests", frank)
    (submissions / "grace_empty").mkdir()

    out = root / "grades"
    result = subprocess.run(
        [sys.executable, "-m", "helpers.course.grading", "--lab", LAB, "--submissions", str(submissions),
         "--out", str(out), "--cell-timeout", str(CELL_TIMEOUT)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out / "grades.csv", newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    return rows, out, result.stdout


def test_every_student_gets_a_row(graded):
    rows, _, _ = graded
    assert sorted(rows) == ["alice_solution", "bob_untouched", "carol_not_json", "dave_raises",
                            "erin_endless_loop", "frank_edited_tests", "grace_empty"]
    assert all(float(r["max_score"]) == 10 for r in rows.values())


def test_solution_gets_full_marks(graded):
    rows, out, _ = graded
    assert float(rows["alice_solution"]["score"]) == 10
    assert rows["alice_solution"]["reason"] == "all tests pass"
    assert (out / "feedback" / "alice_solution.html").is_file()


def test_untouched_student_version_gets_zero_without_error(graded):
    rows, out, _ = graded
    row = rows["bob_untouched"]
    assert (row["status"], float(row["score"])) == ("graded", 0)
    assert row["reason"].count("not written yet") == 3
    assert (out / "feedback" / "bob_untouched.html").is_file()


def test_invalid_json_gets_zero_and_a_reason(graded):
    row = graded[0]["carol_not_json"]
    assert (row["status"], float(row["score"])) == ("not graded", 0)
    assert "could not be read" in row["reason"] and "JSON error" in row["reason"]


def test_a_cell_that_raises_costs_its_part_only(graded):
    row = graded[0]["dave_raises"]
    assert float(row["score"]) == 7
    assert "rms_norm_tests (3 points)" in row["reason"] and "ValueError: my bug" in row["reason"]


def test_an_endless_loop_is_cut_by_the_timeout(graded):
    row = graded[0]["erin_endless_loop"]
    assert float(row["score"]) == 6
    assert f"gradient_norms_tests (4 points): stopped after {CELL_TIMEOUT} s" in row["reason"]


def test_edited_test_cells_are_restored_and_reported(graded):
    row = graded[0]["frank_edited_tests"]
    assert float(row["score"]) == 7  # the restored tests catch the wrong rms_norm
    assert "edited test cells rms_norm_tests were restored" in row["reason"]
    assert "rms_norm_tests (3 points)" in row["reason"]


def test_a_folder_without_notebook_is_reported(graded):
    row = graded[0]["grace_empty"]
    assert (row["status"], float(row["score"])) == ("not graded", 0)
    assert "no notebook found" in row["reason"]


def test_hidden_tests_count_in_grading(tmp_path):
    """A submission that passes the visible tests only is caught by the hidden ones."""
    nb = _with_solution("pre_norm_block", "return x + self.mlp(self.norm(x)) if x.shape[0] != 3 else x * 2")
    folder = tmp_path / "submissions" / "hal"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{LAB}.ipynb")
    result = subprocess.run(
        [sys.executable, "-m", "helpers.course.grading", "--lab", LAB, "--submissions", str(tmp_path / "submissions"),
         "--out", str(tmp_path / "out"), "--cell-timeout", str(CELL_TIMEOUT)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["score"]) == 7 and "pre_norm_block_tests" in row["reason"]


def test_grading_a_missing_lab_says_which_labs_exist(tmp_path):
    result = subprocess.run([sys.executable, "-m", "helpers.course.grading", "--lab", "lab9",
                             "--submissions", str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode != 0
    assert "There is no lab 'lab9'; the labs are: lab0_warmup" in result.stderr
