"""Every lab grades cleanly: its solution gets full marks, its untouched student version zero with "not written yet"
as the reason of every test, and a solution with any one part blanked loses that part's points and no more (a test
never needs another test, or another part, to have passed).

(tests/test_grading.py covers broken and hostile submissions in depth on lab 0; here each further lab gets the two
ends, in the sandbox where bubblewrap is installed, and lab 0 once without it, as `--unsafe-no-sandbox` grades.)
"""

import csv
import json
import shutil
import subprocess
import sys

import pytest

from helpers.course.labs import lab_ids
from helpers.course.submission import code_cells, load_lab
from helpers.paths import LABS_DIR, REPO_ROOT, SOLUTIONS_DIR

pytestmark = pytest.mark.slow
FURTHER_LABS = [lab for lab in lab_ids() if lab != "lab0_warmup"]
NO_SANDBOX = ["--unsafe-no-sandbox"]
SANDBOX = [] if shutil.which("bwrap") else NO_SANDBOX


def parts_blanked(lab):
    """For each solution cell of the lab: its grade_id, the solution with that cell replaced by the released lab's
    (the student's empty version), and the points of the tests between that cell and the next solution cell (that
    part's own tests)."""
    text = (SOLUTIONS_DIR / lab / f"{lab}.ipynb").read_text(encoding="utf-8")
    stubs = load_lab(lab, SOLUTIONS_DIR, LABS_DIR).stubs
    kinds = code_cells(json.loads(text))
    solutions = [i for i, c in enumerate(kinds) if c.kind == "solution"]
    for k, index in enumerate(solutions):
        nb = json.loads(text)
        [c for c in nb["cells"] if c["cell_type"] == "code"][index]["source"] = stubs[kinds[index].grade_id]
        end = solutions[k + 1] if k + 1 < len(solutions) else len(kinds)
        yield kinds[index].grade_id, nb, sum(c.points for c in kinds[index + 1:end])


def grade_both_ends(lab, tmp_path, flags):
    submissions = tmp_path / "submissions"
    for student, source in [("solution", SOLUTIONS_DIR), ("untouched", LABS_DIR)]:
        (submissions / student).mkdir(parents=True)
        shutil.copy(source / lab / f"{lab}.ipynb", submissions / student / f"{lab}.ipynb")
    blank_points = {}
    for part, nb, points in parts_blanked(lab):
        blank_points[f"blank_{part}"] = points
        (submissions / f"blank_{part}").mkdir()
        (submissions / f"blank_{part}" / f"{lab}.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    out = tmp_path / "grades"
    result = subprocess.run(
        [sys.executable, "-m", "helpers.course.grading", "--lab", lab, "--submissions", str(submissions),
         "--out", str(out), *flags], capture_output=True, text=True, cwd=REPO_ROOT, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out / "grades.csv", newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    solution, untouched = rows["solution"], rows["untouched"]
    assert float(solution["max_score"]) > 0
    assert (solution["status"], float(solution["score"])) == ("graded", float(solution["max_score"])), solution
    assert solution["reason"] == "all tests pass"
    assert (untouched["status"], float(untouched["score"])) == ("graded", 0), untouched
    assert all("not written yet" in why for why in untouched["reason"].split("; ")), untouched["reason"]
    for student, points in blank_points.items():
        assert points > 0, f"{student}: the part has no tests of its own"
        row = rows[student]
        assert (row["status"], float(row["score"])) == ("graded", float(row["max_score"]) - points), row
    return result


@pytest.mark.parametrize("lab", FURTHER_LABS)
def test_solution_full_marks_and_untouched_zero(lab, tmp_path):
    grade_both_ends(lab, tmp_path, SANDBOX)


def test_without_a_sandbox_the_flag_grades_by_the_same_rules_and_warns(tmp_path):
    result = grade_both_ends("lab0_warmup", tmp_path, NO_SANDBOX)
    assert "WARNING: grading without a sandbox (--unsafe-no-sandbox)" in result.stderr
