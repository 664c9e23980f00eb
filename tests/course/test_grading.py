"""Grading a batch as a hostile class would: every submission gets its true grade and one true reason.

One parallel batch of small notebooks generated here from Lab 0's solution: honest controls, accidents and one
attack of each kind seen in issue 15 (patched checks, an input transformer, patches from inside a function, a
lying object, the answer key, forged grades, harm to other students, memory, output, the network, a frozen or
interrupted or exiting part, lost or copied cells). The batch must finish, the grades must be the ones the tests
earn, and nothing outside the grading folder may change.
"""

import contextlib
import csv
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import nbformat
import pytest

from helpers.course.grading import UID_LOCKS, Grader, Settings, preflight, reserve_uids
from helpers.course.sandbox import Sandbox
from helpers.course.submission import load_lab
from helpers.paths import DATA_DIR, LABS_DIR, REPO_ROOT, SOLUTIONS_DIR

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")]
LAB = "lab0_warmup"
CELL_TIMEOUT = 15
OWN_UIDS = 62500  # this file's graders run their sandboxes as users of their own, away from other tests' graders


def _solution():
    return nbformat.read(SOLUTIONS_DIR / LAB / f"{LAB}.ipynb", as_version=4)


def _index(nb, grade_id):
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _cell(nb, grade_id):
    return nb.cells[_index(nb, grade_id)]


def _with(nb, grade_id, new_body, after=""):
    """``nb`` with one solution's body replaced (the signature is kept) and ``after`` appended to its cell."""
    cell = _cell(nb, grade_id)
    cell.source = re.sub(r"### BEGIN SOLUTION.*### END SOLUTION", lambda m: new_body, cell.source, flags=re.S) + after
    return nb


def _with_solution(grade_id, new_body, after=""):
    return _with(_solution(), grade_id, new_body, after)


PATCHES_CHECKS = """
import helpers.checks
helpers.checks.assert_close = helpers.checks.check_function = lambda *args, **kwargs: None
assert_close = check_function = lambda *args, **kwargs: None
get_ipython().input_transformers_cleanup.append(lambda lines: ["pass\\n"])
"""
PATCHES_AT_CALL_TIME = """import helpers.checks as checks
    for patch in (lambda: setattr(checks, "assert_close", lambda *a, **k: None),
                  lambda: setattr(torch, "allclose", lambda *a, **k: True),
                  lambda: setattr(torch.Tensor, "__eq__", lambda *a: True)):
        try:
            patch()
        except Exception:
            pass
    return x"""
PEEKS_AT_THE_TESTS = """for peek in (lambda: torch.sys.modules, lambda: getattr((lambda: (yield))(), "gi_frame")):
            try:
                peek()
            except Exception:
                pass
        return x + self.mlp(self.norm(x))"""
LIAR = """class Liar(torch.Tensor):
    def __eq__(self, other):
        return True


def gradient_norms(model, x, y):
    return Liar()
"""
READS_THE_KEY = """from helpers.paths import SOLUTIONS_DIR
    (SOLUTIONS_DIR / "lab0_warmup" / "lab0_warmup.ipynb").read_text()
    return x"""
LOOKS_AROUND = """from helpers.paths import REPO_ROOT
        seen = {{p.name for p in REPO_ROOT.iterdir()}} | {{p.name for p in REPO_ROOT.home().iterdir()}}
        seen |= {{str(p) for p in (type(REPO_ROOT)("{submissions}"), type(REPO_ROOT)("{out}")) if p.exists()}}
        if seen & {{"solutions", "labs", "grades", "submissions", ".git"}} or any("/" in s for s in seen):
            raise RuntimeError(f"I can see {{sorted(seen)}}")
        return x + self.mlp(self.norm(x))"""
FORGES = """from helpers.paths import REPO_ROOT
    for forge in (lambda: (type(REPO_ROOT)("{out}") / "grades.csv").write_text("student,score\\nleo,10\\n"),
                  lambda: (REPO_ROOT / "gradebook.db").write_text("leo 10/10"),
                  lambda: torch.multiprocessing.Process(target=print).start()):
        try:
            forge()
        except Exception:
            pass
    print("0" * 64 + ' {{"kind": "result", "test": "rms_norm_tests", "passed": true, "why": null}}')
    return x"""
LEAVES_A_PROCESS = """
import subprocess
subprocess.Popen(["sh", "-c", "sleep 20; echo leo,lab0_warmup,10,10,graded,forged >> {out}/grades.csv"])
"""
HARMS_OTHERS = """from helpers.paths import REPO_ROOT
    for harm in (lambda: (REPO_ROOT / "helpers" / "checks.py").write_text("assert_close = print"),
                 lambda: (REPO_ROOT.home() / ".bashrc").write_text("rm -rf ~"),
                 lambda: torch.os.kill(torch.os.getppid(), 9),
                 lambda: torch.sys.exit(0)):
        try:
            harm()
        except Exception:
            pass
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)).to(x.dtype)"""
FLOODS = """chunk = "<script>alert('pwned')</script>" + "x" * (1 << 20)
        for _ in range(210):
            print(chunk)
        return x + self.mlp(self.norm(x))"""
NETWORK = """import socket
    socket.create_connection(("1.1.1.1", 53))"""
FREEZES = """while True:
        try:
            pass
        except BaseException:
            pass"""


def _accidents():
    nb = _solution()
    nb.cells.insert(_index(nb, "rms_norm") + 1, nbformat.from_dict(dict(_cell(nb, "rms_norm"))))  # pasted twice
    del nb.cells[_index(nb, "pre_norm_block_tests")]  # deleted
    _cell(nb, "gradient_norms_tests").metadata = {}  # stripped
    return nb


def _lost_cells():
    nb = _solution()
    del nb.cells[_index(nb, "rms_norm")]  # a solution deleted
    _cell(nb, "gradient_norms").metadata = {}  # a solution stripped of its metadata
    return nb


def _tree(root, skip=(".venv", ".git", "__pycache__")):
    """Every file under ``root`` with its size, time and content hash."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            path = os.path.join(folder, name)
            stat = os.lstat(path)
            found[path] = (stat.st_size, stat.st_mtime_ns, hashlib.sha1(open(path, "rb").read()).hexdigest())
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    submissions, out = root / "submissions", root / "grades"
    home, temp = root / "home", root / "tmp"
    home.mkdir()
    temp.mkdir()
    (home / ".bashrc").write_text("# the teacher's\n")

    def submit(student, nb=None, text=None):
        folder = submissions / student
        folder.mkdir(parents=True)
        path = folder / f"{LAB}.ipynb"
        path.write_text(text if text is not None else nbformat.writes(nb), encoding="utf-8")

    paths = {"submissions": submissions, "out": out}
    submit("alice_solution", _solution())
    submit("bob_untouched", text=(LABS_DIR / LAB / f"{LAB}.ipynb").read_text())
    submit("carol_not_json", text=(LABS_DIR / LAB / f"{LAB}.ipynb").read_text()[:500])
    submit("dave_raises", _with_solution("rms_norm", 'raise ValueError("my bug")'))
    submit("erin_endless_loop", _with_solution("gradient_norms", "while True:\n        pass"))
    frank = _with_solution("rms_norm", "return x")  # wrong, and the tests "fixed" to pass
    _cell(frank, "rms_norm_tests").source = "pass  # tests removed"
    submit("frank_edited_tests", frank)
    (submissions / "grace_empty").mkdir()
    submit("hal_hidden_tests", _with_solution("pre_norm_block",
                                              "return x + self.mlp(self.norm(x)) if x.shape[0] != 3 else x * 2"))
    submit("ivan_patches_checks", _with_solution("rms_norm", "return x", after=PATCHES_CHECKS))
    judy = _with(_with_solution("rms_norm", PATCHES_AT_CALL_TIME), "pre_norm_block", PEEKS_AT_THE_TESTS)
    _cell(judy, "gradient_norms").source = LIAR
    submit("judy_patches_at_call_time", judy)
    submit("karl_reads_the_key", _with(_with_solution("rms_norm", READS_THE_KEY), "pre_norm_block",
                                       LOOKS_AROUND.format(**paths)))
    submit("leo_forges_grades", _with_solution("rms_norm", FORGES.format(**paths),
                                               after=LEAVES_A_PROCESS.format(**paths)))
    submit("mallory_harms_others", _with_solution("rms_norm", HARMS_OTHERS))
    nick = _with(_with_solution("rms_norm", "return torch.empty(3 * 2**30)"), "pre_norm_block", FLOODS)
    submit("nick_uses_too_much", _with(nick, "gradient_norms", NETWORK))
    submit("olga_accidents", _accidents())
    submit("pam_lost_cells", _lost_cells())
    submit("quinn_freezes", _with_solution("rms_norm", FREEZES))
    submit("rita_interrupts", _with_solution("rms_norm", "raise KeyboardInterrupt"))
    submit("sam_exits", _with(_with_solution("rms_norm", "raise SystemExit(0)"), "gradient_norms", "exit()"))

    before = _tree(REPO_ROOT), _tree(home)
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(temp), "COURSE_GRADING_FIRST_UID": str(OWN_UIDS)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "helpers.course.grading", "--lab", LAB, "--submissions", str(submissions),
         "--out", str(out), "--cell-timeout", str(CELL_TIMEOUT), "--jobs", "2"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=1200, env=env,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    time.sleep(1)
    after = _tree(REPO_ROOT), _tree(home)
    with open(out / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"rows": {r["student"]: r for r in rows}, "order": [r["student"] for r in rows], "out": out,
            "before": before, "after": after, "temp": temp, "students": sorted(p.name for p in submissions.iterdir()),
            "seconds": seconds}


EXPECTED = {  # student: (status, score, what the reason must say)
    "alice_solution": ("graded", 10, ["all tests pass"]),
    "dave_raises": ("graded", 7, ["rms_norm_tests (3 points): ValueError: my bug (in cell rms_norm, line"]),
    "erin_endless_loop": ("graded", 6, [f"gradient_norms_tests (4 points): stopped after {CELL_TIMEOUT} s"]),
    "frank_edited_tests": ("graded", 7, ["edited test cells rms_norm_tests were restored",
                                         "rms_norm_tests (3 points)"]),
    "hal_hidden_tests": ("graded", 7, ["pre_norm_block_tests (3 points): CheckError"]),
    "ivan_patches_checks": ("graded", 7, ["rms_norm_tests (3 points): CheckError"]),
    "judy_patches_at_call_time": ("graded", 3, [
        "rms_norm_tests (3 points): CheckError",
        "gradient_norms_tests (4 points): Liar was not loaded: line 2 uses the special method __eq__"]),
    "karl_reads_the_key": ("graded", 7, ["rms_norm_tests (3 points): FileNotFoundError"]),
    "leo_forges_grades": ("graded", 7, ["rms_norm_tests (3 points): CheckError"]),
    "mallory_harms_others": ("graded", 10, ["all tests pass"]),
    "nick_uses_too_much": ("graded", 3, [
        "rms_norm_tests (3 points): ran out of memory: a submission may use 4 GB",
        "gradient_norms_tests (4 points): gradient_norms was not loaded: line 3 uses the module socket",
        "pre_norm_block_tests printed"]),
    "olga_accidents": ("graded", 10, [
        "deleted test cells pre_norm_block_tests were restored from the lab before grading",
        "test cells gradient_norms_tests had lost their grading metadata and were restored from the lab",
        "solution cell rms_norm appeared 2 times", "all tests pass"]),
    "pam_lost_cells": ("graded", 7, [
        "solution cell rms_norm was missing: the lab's empty version was restored",
        "solution cell gradient_norms had lost its grading metadata: its code (added cell",
        "rms_norm_tests (3 points): not written yet"]),
    "quinn_freezes": ("graded", 7, [f"rms_norm_tests (3 points): stopped after {CELL_TIMEOUT} s (the time limit"]),
    "rita_interrupts": ("graded", 7, ["rms_norm_tests (3 points): KeyboardInterrupt raised by the code (not a "
                                      "time-out)"]),
    "sam_exits": ("graded", 3, ["rms_norm_tests (3 points): the code raised SystemExit",
                                "gradient_norms_tests (4 points): gradient_norms was not loaded: line 3 uses `exit`"]),
}


def test_every_student_gets_one_row_in_name_order(graded):
    assert graded["order"] == graded["students"]  # every folder, no one else (a forged row would show here)
    for row in graded["rows"].values():
        assert float(row["max_score"]) == 10 and row["reason"] and "\n" not in row["reason"], row


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_each_submission_gets_the_grade_its_tests_earn_and_a_true_reason(graded, student):
    row = graded["rows"][student]
    status, score, reasons = EXPECTED[student]
    assert (row["status"], float(row["score"])) == (status, score), row
    for reason in reasons:
        assert reason in row["reason"], row["reason"]
    if score < 10:
        assert "all tests pass" not in row["reason"]
    assert (graded["out"] / "feedback" / f"{student}.html").is_file()


def test_untouched_student_version_gets_zero_without_error(graded):
    row = graded["rows"]["bob_untouched"]
    assert (row["status"], float(row["score"])) == ("graded", 0)
    assert row["reason"].count("not written yet") == 3


def test_unreadable_and_missing_notebooks_are_reported(graded):
    carol, grace = graded["rows"]["carol_not_json"], graded["rows"]["grace_empty"]
    assert (carol["status"], float(carol["score"])) == ("not graded", 0)
    assert "could not be read" in carol["reason"] and "JSON error" in carol["reason"]
    assert (grace["status"], float(grace["score"])) == ("not graded", 0) and "no notebook found" in grace["reason"]


def test_feedback_shows_why_but_never_the_hidden_tests_or_a_script(graded):
    pages = {p.stem: p.read_text() for p in (graded["out"] / "feedback").glob("*.html")}
    assert len(pages) == len(graded["students"]) - 2  # carol and grace were not graded
    for student, page in pages.items():
        assert "HIDDEN TESTS" not in page and "LlamaRMSNorm" not in page and "seen.append" not in page, student
        assert "<script" not in page, student
        assert len(page.encode()) <= 256_000 + 100
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)" in pages["nick_uses_too_much"]
    assert "stopped after" in pages["quinn_freezes"] and "CheckError" in pages["hal_hidden_tests"]


def test_nothing_outside_the_grading_folder_changes(graded):
    assert graded["after"][0] == graded["before"][0]  # the course checkout (solutions/, helpers/, ...)
    assert graded["after"][1] == graded["before"][1]  # the teacher's home
    assert list(graded["temp"].iterdir()) == []  # every temporary folder removed
    if os.geteuid() == 0:
        assert _processes_of_sandbox_users() == []


def _processes_of_sandbox_users():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = int(open(f"/proc/{pid}/status").read().split("\nUid:\t")[1].split("\t")[0])
        except (OSError, IndexError):
            continue
        if OWN_UIDS <= uid < OWN_UIDS + 100:
            found.append(pid)
    return found


def test_a_stopped_grader_kills_its_sandboxes_and_cleans_up(tmp_path):
    submissions, temp = tmp_path / "submissions", tmp_path / "tmp"
    temp.mkdir()
    (submissions / "quinn").mkdir(parents=True)
    nbformat.write(_with_solution("rms_norm", FREEZES), submissions / "quinn" / f"{LAB}.ipynb")
    grader = subprocess.Popen(
        [sys.executable, "-m", "helpers.course.grading", "--lab", LAB, "--submissions", str(submissions), "--out",
         str(tmp_path / "out")], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(temp), "COURSE_GRADING_FIRST_UID": str(OWN_UIDS)})
    deadline = time.monotonic() + 60
    while not any(p.name.startswith("student-") for d in temp.iterdir() for p in d.iterdir()):
        assert time.monotonic() < deadline and grader.poll() is None
        time.sleep(0.2)
    time.sleep(3)  # quinn's runner is now in its endless loop
    grader.send_signal(signal.SIGTERM)
    assert grader.wait(timeout=30) != 0
    time.sleep(1)
    assert list(temp.iterdir()) == []
    if os.geteuid() == 0:
        assert _processes_of_sandbox_users() == []


def test_grading_a_missing_lab_says_which_labs_exist(tmp_path):
    result = subprocess.run([sys.executable, "-m", "helpers.course.grading", "--lab", "lab9", "--submissions",
                             str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode != 0
    assert "There is no lab 'lab9'; the labs are: lab0_warmup" in result.stderr


def _lab_that_loads(marker):
    """A one-test lab (source, release) whose set-up cell builds ``marker`` under data/cache if it is missing, as
    the labs' data loaders do, and whose test needs what it read."""
    def code(source, **nbgrader):
        metadata = {"nbgrader": {"schema_version": 3, "locked": True, **nbgrader}} if nbgrader else {}
        return nbformat.v4.new_code_cell(source, metadata=metadata)
    set_up = (f"MARKER = DATA_DIR / 'cache' / {str(marker.relative_to(DATA_DIR / 'cache'))!r}\n"
              "if not MARKER.exists():\n"
              "    MARKER.parent.mkdir(parents=True, exist_ok=True)\n"
              "    MARKER.write_text('built')\n"
              "BUILT = MARKER.read_text()\n")
    notebooks = []
    for body in ("return 1", "raise NotImplementedError"):
        notebooks.append(nbformat.v4.new_notebook(cells=[
            code("from helpers.paths import DATA_DIR", grade_id="imports", grade=False, solution=False),
            code(set_up),
            code(f"def answer():\n    {body}", grade_id="answer", grade=False, solution=True, locked=False),
            code("assert answer() == 1 and BUILT == 'built'", grade_id="answer_tests", grade=True, solution=False,
                 points=1)]))
    return notebooks


def _grader_for(notebooks, tmp_path):
    lab = "lab_loads_data"
    for folder, nb in zip(("solutions", "labs"), notebooks, strict=True):
        (tmp_path / folder / lab).mkdir(parents=True)
        nbformat.write(nb, tmp_path / folder / lab / f"{lab}.ipynb")
    (tmp_path / "work").mkdir()
    settings = Settings()
    return Grader(load_lab(lab, tmp_path / "solutions", tmp_path / "labs"), Sandbox(settings.limits), settings,
                  tmp_path / "work", 1, labs_dir=tmp_path / "labs")


def test_data_a_lab_loads_is_built_before_grading_not_charged_to_the_students(tmp_path):
    """The sandbox sees data/ read-only: a lab whose data was never built would fail its set-up in every sandbox
    and cost every student the tests that need it (a solution scored 8/10 on a fresh checkout). The preflight
    builds it outside the sandbox first; grading then gives the solution its full marks."""
    marker = DATA_DIR / "cache" / "grading-test" / f"{os.getpid()}-{time.monotonic_ns()}"
    grader = _grader_for(_lab_that_loads(marker), tmp_path)
    try:
        assert grader.set_up()[0], "in the sandbox, the set-up cannot build the data: the case this test is about"
        preflight(grader)
        assert marker.read_text() == "built"
        submission = tmp_path / "student"
        submission.mkdir()
        nbformat.write(nbformat.v4.new_notebook(cells=_lab_that_loads(marker)[0].cells), submission / "x.ipynb")
        row = grader.grade("student", submission).row
        assert (row.status, row.score, row.reason) == ("graded", 1.0, "all tests pass")
    finally:
        marker.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another test process may be using the folder
            marker.parent.rmdir()


def test_a_lab_that_cannot_set_itself_up_stops_grading_with_the_reason(tmp_path):
    source, release = _lab_that_loads(DATA_DIR / "cache" / "grading-test" / "x")
    for nb in (source, release):  # a set-up cell that fails wherever it runs
        nb.cells[1].source = "BUILT = (DATA_DIR / 'cache' / 'grading-test' / 'never' / 'there').read_text()"
    with pytest.raises(SystemExit, match=r"lab_loads_data cannot set itself up even outside the sandbox, with its "
                                         r"own solutions: the lab's cell cell 2 failed: FileNotFoundError"):
        preflight(_grader_for((source, release), tmp_path))


@pytest.mark.skipif(not os.access(UID_LOCKS, os.W_OK), reason="only a grader running as root reserves users")
def test_two_graders_at_once_never_share_a_sandbox_user(monkeypatch):
    monkeypatch.setenv("COURSE_GRADING_FIRST_UID", "62700")  # a range no other test uses
    first, first_locks = reserve_uids(3)
    second, second_locks = reserve_uids(3)
    assert sorted(first) == sorted(second) == [0, 1, 2]
    assert not set(first.values()) & set(second.values()), (first, second)
    for lock in first_locks:
        lock.close()
    third, _ = reserve_uids(3)
    assert third == first  # users are free again once their grader has let go of them
