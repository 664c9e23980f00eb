"""Every lab grades cleanly: its solution gets full marks, its untouched student version zero with "not written yet"
as the reason of every test, and a solution with only its first part blanked loses that part's points and no more
(a test never needs another test to have passed).

(tests/test_grading.py covers broken and hostile submissions in depth on lab 0; here each further lab gets the two
ends, in the sandbox where bubblewrap is installed, and lab 0 once without it, as `--unsafe-no-sandbox` grades.)
"""

import csv
import json
import re
import shutil
import subprocess
import sys

import pytest

from helpers.course.labs import lab_ids
from helpers.course.submission import code_cells
from helpers.paths import LABS_DIR, REPO_ROOT, SOLUTIONS_DIR

pytestmark = pytest.mark.slow
FURTHER_LABS = [lab for lab in lab_ids() if lab != "lab0_warmup"]
NO_SANDBOX = ["--unsafe-no-sandbox"]
SANDBOX = [] if shutil.which("bwrap") else NO_SANDBOX


def first_part_blanked(lab):
    """The lab's solution with the body of its first solution cell replaced as the release does, and the points of
    the tests between that cell and the next solution cell (the first part's own tests)."""
    nb = json.loads((SOLUTIONS_DIR / lab / f"{lab}.ipynb").read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    kinds = code_cells(nb)
    first = next(i for i, c in enumerate(kinds) if c.kind == "solution")
    source = "".join(cells[first]["source"])
    cells[first]["source"] = re.sub(r"### BEGIN SOLUTION.*?### END SOLUTION", "raise NotImplementedError()", source,
                                    count=1, flags=re.S)
    points = 0.0
    for cell in kinds[first + 1:]:
        if cell.kind == "solution":
            break
        points += cell.points
    return nb, points


def grade_both_ends(lab, tmp_path, flags):
    submissions = tmp_path / "submissions"
    for student, source in [("solution", SOLUTIONS_DIR), ("untouched", LABS_DIR)]:
        (submissions / student).mkdir(parents=True)
        shutil.copy(source / lab / f"{lab}.ipynb", submissions / student / f"{lab}.ipynb")
    blanked, first_points = first_part_blanked(lab)
    (submissions / "first_part_blank").mkdir()
    (submissions / "first_part_blank" / f"{lab}.ipynb").write_text(json.dumps(blanked), encoding="utf-8")
    out = tmp_path / "grades"
    result = subprocess.run(
        [sys.executable, "-m", "helpers.course.grading", "--lab", lab, "--submissions", str(submissions),
         "--out", str(out), *flags], capture_output=True, text=True, cwd=REPO_ROOT, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out / "grades.csv", newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    solution, untouched, blank = rows["solution"], rows["untouched"], rows["first_part_blank"]
    assert float(solution["max_score"]) > 0
    assert (solution["status"], float(solution["score"])) == ("graded", float(solution["max_score"])), solution
    assert solution["reason"] == "all tests pass"
    assert (untouched["status"], float(untouched["score"])) == ("graded", 0), untouched
    assert all("not written yet" in why for why in untouched["reason"].split("; ")), untouched["reason"]
    assert first_points > 0
    assert (blank["status"], float(blank["score"])) == ("graded", float(solution["max_score"]) - first_points), blank
    return result


@pytest.mark.parametrize("lab", FURTHER_LABS)
def test_solution_full_marks_and_untouched_zero(lab, tmp_path):
    grade_both_ends(lab, tmp_path, SANDBOX)


def test_without_a_sandbox_the_flag_grades_by_the_same_rules_and_warns(tmp_path):
    result = grade_both_ends("lab0_warmup", tmp_path, NO_SANDBOX)
    assert "WARNING: grading without a sandbox (--unsafe-no-sandbox)" in result.stderr
