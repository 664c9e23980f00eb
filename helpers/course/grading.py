"""Grade a folder of lab submissions, each in its own sandbox, several at once; every student gets a true reason.

    python -m helpers.course.grading --lab lab0_warmup --submissions FOLDER --out grades [--jobs N]
    (or: make grade LAB=lab0_warmup SUBMISSIONS=FOLDER)

FOLDER holds one folder per student, with the student's notebook inside: ``FOLDER/<student>/<lab>.ipynb``
(nbgrader's ``submitted/<student>/<lab>/<lab>.ipynb`` layout works too). The grader writes
``OUT/grades.csv`` (student, lab, score, max_score, status, reason), one row per student in name order, and
``OUT/feedback/<student>.html``.

Each submission runs in a bubblewrap sandbox (helpers.course.sandbox) that holds only the released lab and that
student's notebook. Inside, a trusted runner (helpers.course.testrun) loads only the definitions of the student's
cells (helpers.course.restricted) and runs the lab's own tests, hidden ones included (helpers.course.submission),
reporting each outcome on a signed stream. The score is the sum of the points of the tests the grader saw pass. A test
that runs past its time limit, or a grading process that dies, costs that test only: the runner is started
again for the remaining tests.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import html
import json
import os
import queue
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO

from helpers.course.labs import lab_ids
from helpers.course.sandbox import Finished, Limits, Sandbox, SandboxUnavailable
from helpers.course.submission import Lab, Program, SubmissionError, load_lab, read_notebook
from helpers.course.testrun import verify
from helpers.paths import LABS_DIR, SOLUTIONS_DIR

CELL_TIMEOUT = 60  # seconds one test cell may run
LOAD_TIMEOUT = 300  # seconds the lab's set-up and the student's definitions may take, between tests
STUDENT_TIMEOUT = 900  # seconds all of one student's grading may take
OUTPUT_CHARS = 20_000  # printed characters of a test kept for the feedback
FEEDBACK_BYTES = 256_000  # the most one feedback page may hold
FIRST_UID = 62000  # when grading as root, each parallel slot runs as its own unprivileged user from here ...
LAST_UID = 62800  # ... to here, one that no other grader on this machine holds (so no two share a process limit)
UID_LOCKS = Path("/run/lock") if os.path.isdir("/run/lock") else Path("/tmp")
RUNNER = [sys.executable, "-I", "-m", "helpers.course.testrun"]


@dataclass
class GradeRow:
    """One line of grades.csv."""

    student: str
    lab: str
    score: float
    max_score: float
    status: str  # "graded" or "not graded"
    reason: str


@dataclass
class Outcome:
    """One test's outcome as the grader saw it."""

    passed: bool
    why: str | None = None
    output: str = ""  # what the test printed before its hidden part (the first OUTPUT_CHARS characters)
    output_chars: int = 0
    hidden_chars: int = 0  # what it printed during its hidden part: counted, never shown


@dataclass
class Graded:
    """Everything known about one submission once it is graded."""

    row: GradeRow
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # for the feedback only (skipped statements, ...)


@dataclass
class Settings:
    cell_timeout: int = CELL_TIMEOUT
    load_timeout: int = LOAD_TIMEOUT
    student_timeout: int = STUDENT_TIMEOUT
    limits: Limits = field(default_factory=Limits)


def reserve_uids(count: int) -> tuple[dict[int, int], list[IO]]:
    """Slot -> a user id from FIRST_UID (or $COURSE_GRADING_FIRST_UID) on that no other grader on this machine
    holds, and the open lock files that hold them until they are closed. Two graders at once never share a user, and
    so never a process limit (RLIMIT_NPROC counts every process of a user: one class's fork bomb must not starve
    another's tests)."""
    first = int(os.environ.get("COURSE_GRADING_FIRST_UID", FIRST_UID))
    uids: dict[int, int] = {}
    locks: list[IO] = []
    for uid in range(first, LAST_UID):
        if len(uids) == count:
            break
        lock = open(UID_LOCKS / f"course-grading-uid-{uid}.lock", "a")  # noqa: SIM115 - held by the grader
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        locks.append(lock)
        uids[len(uids)] = uid
    if len(uids) < count:
        raise SystemExit(f"Other graders on this machine hold the sandbox users {first}–{LAST_UID - 1}: wait for them "
                         f"to finish, or grade with fewer --jobs.")
    return uids, locks


def find_notebook(student_dir: Path, lab: str) -> Path | None:
    """The student's notebook for ``lab``: <lab>.ipynb, <lab>/<lab>.ipynb, or the only notebook there."""
    for candidate in (student_dir / f"{lab}.ipynb", student_dir / lab / f"{lab}.ipynb"):
        if candidate.is_file():
            return candidate
    notebooks = [p for p in student_dir.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
    return notebooks[0] if len(notebooks) == 1 else None


def student_folders(submissions: Path) -> list[Path]:
    return sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))


class Attempt:
    """One run of the runner for one submission: the signed records it sent, and the deadlines they imply."""

    def __init__(self, key: bytes, tests: set[str], settings: Settings, final: float) -> None:
        self.key, self.tests, self.settings, self.final = key, tests, settings, final
        self.results: dict[str, Outcome] = {}
        self.notes: list[str] = []
        self.current: str | None = None  # the test running now
        self.loading = "the lab's set-up"  # what was loading when no test was running
        self.done, self.unsigned = False, 0
        self.deadline = min(final, time.monotonic() + settings.load_timeout)

    def on_line(self, line: str) -> float:
        record = verify(line, self.key)
        kind = record.get("kind") if record else None
        test = record.get("test") if record else None
        now = time.monotonic()
        if record is None:
            self.unsigned += bool(line.strip())
        elif kind == "start" and test in self.tests:
            self.current, self.deadline = test, min(self.final, now + self.settings.cell_timeout)
        elif kind == "result" and test in self.tests:
            why = str(record.get("why") or "") or None
            self.results[test] = Outcome(record.get("passed") is True and why is None, why,
                                         str(record.get("output", "")), int(record.get("output_chars") or 0),
                                         int(record.get("hidden_chars") or 0))
            self.current, self.deadline = None, min(self.final, now + self.settings.load_timeout)
        elif kind == "loading":
            self.loading = f"the definitions of cell {record.get('label')}"
        elif kind == "loaded":
            self.notes += [f"cell {record.get('label')}: {s}" for s in record.get("skipped") or []]
            self.notes += [f"cell {record.get('label')}: {n} was not loaded: {why}"
                           for n, why in (record.get("not_loaded") or {}).items()]
        elif kind == "note":
            self.notes.append(str(record.get("text")))
        elif kind == "done":
            self.done = True
        return self.deadline

    def why_stopped(self, finished: Finished) -> str:
        """One line that says truthfully why the runner ended before finishing."""
        limits = self.settings.limits
        if finished.stopped == "deadline":
            if time.monotonic() >= self.final - 0.5:
                return f"stopped: all of one student's grading may take {self.settings.student_timeout} s"
            if self.current:
                return f"stopped after {self.settings.cell_timeout} s (the time limit of a test cell)"
            return f"stopped after {self.settings.load_timeout} s while loading {self.loading}"
        if finished.stopped == "output":
            return f"stopped: it wrote more than {limits.stream_bytes >> 20} MB to its error stream"
        code = finished.returncode
        signum = -code if code < 0 else code - 128 if code > 128 else 0
        name = signal.Signals(signum).name if signum in signal.valid_signals() else None
        if name == "SIGXCPU":
            return f"the grading process was stopped: it used its {limits.cpu_seconds} s of CPU time"
        if name == "SIGXFSZ":
            return f"the grading process was stopped: it wrote a file larger than {limits.file_bytes >> 20} MB"
        if name:
            return f"the grading process died ({name}{': out of memory?' if name == 'SIGKILL' else ''})"
        last = next((s for s in reversed(finished.stderr_tail.splitlines()) if s.strip()), "")
        return f"the grading process exited with status {code}" + (f" ({last.strip()[:200]})" if last else "")


class Grader:
    """Grades the submissions of one lab; safe to call from several threads at once."""

    def __init__(self, lab: Lab, sandbox: Sandbox, settings: Settings, workspace: Path, slots: int,
                 labs_dir: Path = LABS_DIR) -> None:
        self.lab, self.sandbox, self.settings, self.workspace = lab, sandbox, settings, workspace
        self.labs_dir = labs_dir  # where the released lab is, a copy of which each runner works in
        self.slots: queue.Queue[int] = queue.Queue()
        for slot in range(slots):
            self.slots.put(slot)
        # slot -> its user, and the locks that keep the users ours while this grader lives
        self.uids, self._uid_locks = reserve_uids(slots) if os.geteuid() == 0 and not sandbox.unsafe else ({}, [])

    def uid(self, slot: int) -> int | None:
        """The user a slot's runner drops to when grading as root in the sandbox (without it, Python itself may be
        unreadable to another user, as under /root)."""
        return self.uids.get(slot)

    def job(self, program: Program, skip: list[str], key: bytes, uid: int | None) -> bytes:
        limits = asdict(self.settings.limits)
        if self.sandbox.unsafe:
            limits["processes"] = None  # without a sandbox, a process limit would count the teacher's own processes
        return json.dumps({"key": key.hex(), "uid": uid, "limits": limits, "program": program.steps,
                           "graded": program.graded, "skip": skip, "output_chars": OUTPUT_CHARS,
                           "paths": [str(p) for p in self.sandbox.extra_paths]}).encode()

    def run_program(self, program: Program, folder: Path | None) -> tuple[dict[str, Outcome], list[str]]:
        """Run the program until every test has an outcome (restarting after a test that stopped the runner)."""
        final = time.monotonic() + self.settings.student_timeout
        tests = {t.id for t in program.tests}
        outcomes: dict[str, Outcome] = {}
        notes: list[str] = []
        slot = self.slots.get()
        uid = self.uid(slot)
        try:
            while len(outcomes) < len(tests):
                key = secrets.token_bytes(32)
                attempt = Attempt(key, tests - set(outcomes), self.settings, final)
                finished = self.sandbox.run(RUNNER, self.job(program, sorted(outcomes), key, uid), folder,
                                            attempt.on_line, attempt.deadline)
                outcomes.update(attempt.results)
                notes += [n for n in attempt.notes if n not in notes]
                if attempt.unsigned:
                    notes.append(f"the grader ignored {attempt.unsigned} unsigned lines on its result stream")
                if attempt.done:
                    for test in tests - set(outcomes):  # its result line arrived damaged
                        outcomes[test] = Outcome(False, "the grader received no readable result for this test")
                    break
                why = attempt.why_stopped(finished)
                if attempt.current:
                    outcomes[attempt.current] = Outcome(False, why)
                if (attempt.current or attempt.results) and time.monotonic() < final - 0.5:
                    continue  # start again for the tests that remain
                for test in tests - set(outcomes):  # it stopped while loading, or no time is left: none can run
                    outcomes[test] = Outcome(False, why)
        finally:
            self.slots.put(slot)
        return outcomes, notes

    @contextlib.contextmanager
    def released_copy(self, prefix: str, notebook: Path | None = None) -> Iterator[Path]:
        """A fresh copy of the released lab in the workspace, with ``notebook`` (a student's) as the lab's notebook if
        given, readable by the sandbox's users; removed afterwards."""
        place = Path(tempfile.mkdtemp(prefix=prefix, dir=self.workspace))
        try:
            shutil.copytree(self.labs_dir / self.lab.id, place / self.lab.id)
            if notebook is not None:
                shutil.copy(notebook, place / self.lab.id / f"{self.lab.id}.ipynb")
            place.chmod(0o755)
            yield place / self.lab.id
        finally:
            shutil.rmtree(place, ignore_errors=True)

    def set_up(self) -> tuple[list[str], str | None]:
        """Run the lab with its own solutions and none of its tests, in a copy of the released lab: the lab's
        set-up cells that failed, and why the runner ended early (None: it finished)."""
        program = self.lab.program(self.lab.source)
        key = secrets.token_bytes(32)
        attempt = Attempt(key, set(), self.settings, time.monotonic() + self.settings.student_timeout)
        slot = self.slots.get()
        try:
            with self.released_copy("set-up-") as folder:
                finished = self.sandbox.run(RUNNER, self.job(program, [t.id for t in program.tests], key,
                                                             self.uid(slot)), folder, attempt.on_line, attempt.deadline)
        finally:
            self.slots.put(slot)
        failed = [n for n in attempt.notes if n.startswith("the lab's cell")]
        if attempt.done:
            return failed, None
        last = finished.stderr_tail.strip()[-2000:]
        return failed, attempt.why_stopped(finished) + (f"; its last words:\n{last}" if last else "")

    def grade(self, student: str, folder: Path) -> Graded:
        """Grade one student's folder; never raises (a failure of the grader itself becomes the reason)."""
        try:
            return self._grade(student, folder)
        except Exception as exc:  # noqa: BLE001 - one submission must not stop the batch
            return Graded(self._row(student, 0.0, "not graded",
                                    f"the grader failed on this submission ({type(exc).__name__}: {exc})"))

    def _row(self, student: str, score: float, status: str, reason: str) -> GradeRow:
        return GradeRow(student, self.lab.id, score, self.lab.max_score, status, reason)

    def _grade(self, student: str, folder: Path) -> Graded:
        notebook = find_notebook(folder, self.lab.id)
        if notebook is None:
            return Graded(self._row(student, 0.0, "not graded",
                                    f"no notebook found (expected {folder.name}/{self.lab.id}.ipynb)"))
        try:
            program = self.lab.program(read_notebook(notebook))
        except SubmissionError as exc:
            return Graded(self._row(student, 0.0, "not graded", str(exc)))
        with self.released_copy("student-", notebook) as folder:
            outcomes, notes = self.run_program(program, folder)
        score = float(sum(t.points for t in program.tests if outcomes[t.id].passed))
        reasons = list(program.repairs)
        reasons += [f"{t.id} ({t.points:g} points): {outcomes[t.id].why}" for t in program.tests
                    if not outcomes[t.id].passed]
        reasons += [f"{t.id} printed {outcomes[t.id].output_chars:,} characters (the feedback keeps the first "
                    f"{OUTPUT_CHARS:,})" for t in program.tests if outcomes[t.id].output_chars > OUTPUT_CHARS]
        reasons += [n for n in notes if n.startswith("the grader ignored")]
        if score == self.lab.max_score:
            reasons.append("all tests pass")
        reason = "; ".join(r.replace("\n", " ") for r in reasons)
        return Graded(self._row(student, score, "graded", reason), outcomes, notes)


def feedback_html(graded: Graded, tests: list) -> str:
    """The student's feedback page: every test, its points and why it failed, and what the grader repaired.

    Everything from the submission is escaped; the page is cut to FEEDBACK_BYTES. It never shows a test's source."""
    row, e = graded.row, html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(row.lab)}: {e(row.student)}</title></head>"
             f"<body><h1>{e(row.lab)}: {row.score:g} / {row.max_score:g}</h1><p>{e(row.reason)}</p>"]
    if graded.outcomes:
        parts.append("<table border='1'><tr><th>test</th><th>points</th><th>result</th></tr>")
        for t in tests:
            o = graded.outcomes[t.id]
            result = "passed" if o.passed else f"failed: {o.why}"
            parts.append(f"<tr><td>{e(t.id)}</td><td>{t.points if o.passed else 0:g} / {t.points:g}</td>"
                         f"<td>{e(result)}</td></tr>")
        parts.append("</table>")
    if graded.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in graded.notes) + "</ul>")
    for t in tests:
        o = graded.outcomes.get(t.id)
        if o and (o.output or o.hidden_chars):
            hidden = f"<p>({o.hidden_chars:,} characters printed by its hidden tests are not shown)</p>"
            parts.append(f"<h3>Output of {e(t.id)}</h3><pre>{e(o.output)}</pre>{hidden if o.hidden_chars else ''}")
    page = "".join(parts)
    if len(page.encode()) > FEEDBACK_BYTES:
        page = page.encode()[: FEEDBACK_BYTES - 100].decode("utf-8", "ignore")
        page = page[: page.rfind("<")] + "<p>(cut: this page holds at most 256 kB)</p>"
    return page + "</body></html>"


def write_csv(rows: list[GradeRow], path: Path) -> None:
    temporary = path.with_suffix(".csv.part")
    with open(temporary, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(GradeRow)])
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    temporary.replace(path)


def default_jobs(limits: Limits) -> int:
    """All cores, but no more submissions at once than the memory holds at their limit."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(cores, memory // limits.memory_bytes))


def grade(lab: str, submissions: Path, out: Path, cell_timeout: int = CELL_TIMEOUT, jobs: int | None = None,
          unsafe: bool = False) -> list[GradeRow]:
    """Grade every student folder in ``submissions``; write ``out/grades.csv`` and ``out/feedback/``."""
    if lab not in lab_ids():
        raise SystemExit(f"There is no lab {lab!r}; the labs are: {', '.join(lab_ids())}.")
    if not submissions.is_dir():
        raise SystemExit(f"{submissions} is not a folder: give the folder that holds one folder per student.")
    students = student_folders(submissions)
    if not students:
        raise SystemExit(f"{submissions} holds no student folders (expected {submissions}/<student>/{lab}.ipynb).")
    settings = Settings(cell_timeout=cell_timeout)
    extra = [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    try:
        sandbox = Sandbox(settings.limits, unsafe=unsafe, extra_paths=extra)
    except SandboxUnavailable as exc:
        raise SystemExit(str(exc)) from None
    if unsafe:
        print("WARNING: grading without a sandbox (--unsafe-no-sandbox): the students' code runs with your rights.",
              file=sys.stderr)
    jobs = jobs or default_jobs(settings.limits)
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    rows: dict[str, GradeRow] = {}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="grading-") as tmp, stop_on_signals():
        grader = Grader(load_lab(lab, SOLUTIONS_DIR, LABS_DIR), sandbox, settings, Path(tmp), jobs)
        preflight(grader)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(grader.grade, folder.name, folder): folder for folder in students}
            try:
                for future in as_completed(futures):
                    graded = future.result()
                    row = graded.row
                    if graded.outcomes:
                        (out / "feedback" / f"{row.student}.html").write_text(
                            feedback_html(graded, grader.lab.tests), encoding="utf-8")
                    print(f"{row.student}: {row.score:g}/{row.max_score:g} ({row.status}) {row.reason}", flush=True)
                    with lock:
                        rows[row.student] = row
                        write_csv([rows[s] for s in sorted(rows)], out / "grades.csv")  # a crash keeps these
            except BaseException:
                for future in futures:
                    future.cancel()
                sandbox.kill_all()
                raise
    return [rows[s] for s in sorted(rows)]


def preflight(grader: Grader) -> None:
    """Before any submission, set the lab up in the sandbox with its own solutions and no tests. Where its set-up
    fails there, set it up once outside the sandbox, where its cells can build the data they load into data/cache
    (which the sandbox sees read-only), and try again. A lab that still cannot set itself up, or a sandbox that
    cannot run the runner, stops grading with the reason, instead of costing every student the tests that need it."""
    where = "" if grader.sandbox.unsafe else " in the sandbox"
    failed, stopped = grader.set_up()
    if failed and not grader.sandbox.unsafe:
        outside = Grader(grader.lab, Sandbox(grader.settings.limits, unsafe=True,
                                             extra_paths=grader.sandbox.extra_paths),
                         grader.settings, grader.workspace, 1, grader.labs_dir)
        failed_outside, stopped_outside = outside.set_up()
        if failed_outside or stopped_outside:
            failed, stopped, where = failed_outside, stopped_outside, " even outside the sandbox"
        else:
            failed, stopped = grader.set_up()
    if stopped:
        raise SystemExit(f"The grader's test runner could not set up {grader.lab.id}{where} ({stopped}); no "
                         f"submission was graded.")
    if failed:
        raise SystemExit(f"{grader.lab.id} cannot set itself up{where}, with its own solutions: {'; '.join(failed)}. "
                         f"No submission was graded (each would lose the tests that need it): the course's "
                         f"installation needs fixing first.")


class stop_on_signals:
    """Turn SIGTERM and SIGHUP into SystemExit, so that temporary folders are removed and sandboxes killed."""

    def __enter__(self) -> None:
        self.previous = {s: signal.signal(s, self.stop) for s in (signal.SIGTERM, signal.SIGHUP)}

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    @staticmethod
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.grading", description=__doc__.splitlines()[0])
    parser.add_argument("--lab", required=True, help="the lab's id, e.g. lab0_warmup")
    parser.add_argument("--submissions", required=True, type=Path, help="one folder per student")
    parser.add_argument("--out", type=Path, default=Path("grades"), help="where grades.csv and feedback/ go")
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT, help="seconds a test cell may run")
    parser.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: all cores)")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="grade without bubblewrap: the students' code runs with your rights")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows = grade(args.lab, args.submissions, args.out, args.cell_timeout, args.jobs, args.unsafe_no_sandbox)
    print(f"Graded {sum(r.status == 'graded' for r in rows)} of {len(rows)} submissions in "
          f"{time.monotonic() - started:.0f} s; wrote {args.out / 'grades.csv'} and {args.out / 'feedback'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
