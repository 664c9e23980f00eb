"""Grade a folder of lab submissions with nbgrader; every student gets a grade and a reason, none stops the batch.

    python -m helpers.course.grading --lab lab0_warmup --submissions FOLDER --out grades
    (or: make grade LAB=lab0_warmup SUBMISSIONS=FOLDER)

FOLDER holds one folder per student, with the student's notebook inside: ``FOLDER/<student>/<lab>.ipynb``
(nbgrader's ``submitted/<student>/<lab>/<lab>.ipynb`` layout works too). The grader writes
``OUT/grades.csv`` (student, lab, score, max_score, status, reason) and ``OUT/feedback/<student>.html``.

Each submission is graded by nbgrader in its own process, in a throw-away course folder, in the ``smoke``
profile, with a time limit per cell (an endless loop costs only its part) and per student. Graded test cells
are always restored from the source before grading; an edit to them is reported in the reason.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from helpers.course.deps import MissingDependency, require
from helpers.course.labs import lab_ids, make_course_dir, release, run_nbgrader
from helpers.course.notebooks import NotebookError, load

nbformat = require("nbformat", purpose="Grading")

CELL_TIMEOUT = 60  # seconds one cell may run during grading
STUDENT_TIMEOUT = 900  # seconds all of one student's grading may take


@dataclass
class GradeRow:
    """One line of grades.csv."""

    student: str
    lab: str
    score: float
    max_score: float
    status: str  # "graded" or "not graded"
    reason: str


def find_notebook(student_dir: Path, lab: str) -> Path | None:
    """The student's notebook for ``lab``: <lab>.ipynb, <lab>/<lab>.ipynb, or the only notebook there."""
    for candidate in (student_dir / f"{lab}.ipynb", student_dir / lab / f"{lab}.ipynb"):
        if candidate.is_file():
            return candidate
    notebooks = [p for p in student_dir.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
    return notebooks[0] if len(notebooks) == 1 else None


def graded_sources(nb: nbformat.NotebookNode) -> dict[str, str]:
    """grade_id → source of every graded (autograder test) cell."""
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in nb.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("grade") and c.cell_type == "code"}


def edited_tests(submission: nbformat.NotebookNode, *originals: nbformat.NotebookNode) -> list[str]:
    """Graded test cells whose source matches none of the originals (release or source); deleted ones too."""
    known = [graded_sources(nb) for nb in originals]
    submitted = graded_sources(submission)
    edited = []
    for grade_id in known[0]:
        if grade_id not in submitted:
            edited.append(f"{grade_id} (deleted)")
        elif all(submitted[grade_id].strip() != k.get(grade_id, "").strip() for k in known):
            edited.append(grade_id)
    return edited


def _first_line(text: str, limit: int = 200) -> str:
    line = next((s for s in text.strip().splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def lost_points(autograded: nbformat.NotebookNode, timeout: int) -> list[str]:
    """One phrase per test cell that did not pass, with the error it raised."""
    reasons = []
    for cell in autograded.cells:
        nbg = cell.get("metadata", {}).get("nbgrader", {})
        if not nbg.get("grade") or cell.cell_type != "code":
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if not errors:
            continue
        error = errors[-1]
        if error.get("ename") in {"CellTimeoutError", "KeyboardInterrupt"}:
            why = f"stopped after {timeout} s (an endless loop?)"
        elif error.get("ename") == "NotImplementedError":
            why = "not written yet (the code still raises NotImplementedError)"
        else:
            why = f"{error.get('ename')}: {_first_line(error.get('evalue', ''))}".rstrip(": ")
        reasons.append(f"{nbg['grade_id']} ({nbg.get('points', 0):g} points): {why}")
    return reasons


def student_folders(submissions: Path) -> list[Path]:
    return sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))


def grade_one(course_dir: Path, lab: str, student: str, notebook: Path, release_nb: nbformat.NotebookNode,
              source_nb: nbformat.NotebookNode, cell_timeout: int) -> GradeRow:
    """Autograde one submission in ``course_dir`` (which already holds the released lab)."""
    Gradebook = require("nbgrader.api", package="nbgrader", purpose="Grading").Gradebook

    try:
        submission = load(notebook)
    except NotebookError as exc:
        return GradeRow(student, lab, 0, 0, "not graded", f"the notebook could not be read: it{exc.problem}")
    edited = edited_tests(submission, release_nb, source_nb)

    target = course_dir / "submitted" / student / lab / f"{lab}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook, target)
    args = ["autograde", lab, "--student", student, "--force", "--create",
            f"--Execute.timeout={cell_timeout}"]
    try:
        result = run_nbgrader(args, course_dir, timeout=STUDENT_TIMEOUT, env={"COURSE_PROFILE": "smoke"})
    except subprocess.TimeoutExpired:
        return GradeRow(student, lab, 0, 0, "not graded",
                        f"grading took longer than {STUDENT_TIMEOUT} s and was stopped")
    autograded_path = course_dir / "autograded" / student / lab / f"{lab}.ipynb"
    if result.returncode != 0 or not autograded_path.is_file():
        log = result.stdout + result.stderr
        errors = [line for line in log.splitlines() if "[ERROR]" in line or "Error" in line]
        detail = _first_line(errors[-1] if errors else log[-300:] or "no output")
        return GradeRow(student, lab, 0, 0, "not graded", f"nbgrader could not grade it: {detail}")

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        graded = gradebook.find_submission(lab, student)
        score, max_score = float(graded.score), float(graded.max_score)
    reasons = lost_points(nbformat.read(autograded_path, as_version=4), cell_timeout)
    if edited:
        reasons.insert(0, "edited test cells " + ", ".join(edited) + " were restored from the source before grading")
    if not reasons:
        reasons = ["all tests pass"] if score == max_score else ["points lost in manually graded cells"]
    return GradeRow(student, lab, score, max_score, "graded", "; ".join(reasons))


def grade(lab: str, submissions: Path, out: Path, cell_timeout: int = CELL_TIMEOUT) -> list[GradeRow]:
    """Grade every student folder in ``submissions``; write ``out/grades.csv`` and ``out/feedback/``."""
    if lab not in lab_ids():
        raise SystemExit(f"There is no lab {lab!r}; the labs are: {', '.join(lab_ids())}.")
    if not submissions.is_dir():
        raise SystemExit(f"{submissions} is not a folder: give the folder that holds one folder per student.")
    students = student_folders(submissions)
    if not students:
        raise SystemExit(f"{submissions} holds no student folders (expected {submissions}/<student>/{lab}.ipynb).")

    rows: list[GradeRow] = []
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="grading-") as tmp:
        course_dir = make_course_dir(Path(tmp))
        released = release(course_dir, lab)
        release_nb = nbformat.read(released / f"{lab}.ipynb", as_version=4)
        source_nb = nbformat.read(course_dir / "solutions" / lab / f"{lab}.ipynb", as_version=4)
        for folder in students:
            notebook = find_notebook(folder, lab)
            if notebook is None:
                row = GradeRow(folder.name, lab, 0, 0, "not graded",
                               f"no notebook found (expected {folder.name}/{lab}.ipynb)")
            else:
                row = grade_one(course_dir, lab, folder.name, notebook, release_nb, source_nb, cell_timeout)
            if row.status == "not graded":
                row.max_score = float(sum(c.metadata["nbgrader"].get("points", 0) for c in source_nb.cells
                                          if c.get("metadata", {}).get("nbgrader", {}).get("grade")))
            else:
                run_nbgrader(["generate_feedback", lab, "--student", folder.name, "--force"], course_dir,
                             timeout=300)
                html = course_dir / "feedback" / folder.name / lab / f"{lab}.html"
                if html.is_file():
                    shutil.copy(html, out / "feedback" / f"{folder.name}.html")
            rows.append(row)
            print(f"{row.student}: {row.score:g}/{row.max_score:g} ({row.status}) {row.reason}", flush=True)
            write_csv(rows, out / "grades.csv")  # after every student: a later crash keeps earlier grades
    return rows


def write_csv(rows: list[GradeRow], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(GradeRow)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.grading", description=__doc__.splitlines()[0])
    parser.add_argument("--lab", required=True, help="the lab's id, e.g. lab0_warmup")
    parser.add_argument("--submissions", required=True, type=Path, help="one folder per student")
    parser.add_argument("--out", type=Path, default=Path("grades"), help="where grades.csv and feedback/ go")
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT, help="seconds a cell may run")
    args = parser.parse_args(argv)
    try:
        require("nbgrader", purpose="Grading")
        rows = grade(args.lab, args.submissions, args.out, args.cell_timeout)
    except MissingDependency as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"Graded {sum(r.status == 'graded' for r in rows)} of {len(rows)} submissions; "
          f"wrote {args.out / 'grades.csv'} and {args.out / 'feedback'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
