"""helpers.course.sandbox: what a submission's process can reach even if it escaped the Python-level rules entirely.

The script below runs in the sandbox as the test runner would (root dropped, limits set), but as plain Python,
without helpers.course.restricted: it tries the network, the course checkout, the answer key, the grader, a fork bomb
and a process left running. None of it may work, and nothing may be left behind.
"""

import json
import os
import shutil
import sys
import time

import pytest

from helpers.course import grading, sandbox
from helpers.course.sandbox import Limits, Sandbox, SandboxUnavailable
from helpers.course.submission import Test as LabTest
from helpers.course.testrun import signer, verify
from helpers.paths import REPO_ROOT

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
UID = 62900  # a slot of its own, away from the grader's (62000 + slot)
ESCAPE = """
import json, os, socket, subprocess, sys, time
from helpers.course.testrun import drop_privileges, set_limits
drop_privileges({uid})
set_limits({limits})
found = {{}}
def attempt(name, action):
    try:
        found[name] = ["ok", repr(action())[:300]]
    except BaseException as exc:
        found[name] = [type(exc).__name__, str(exc)[:300]]
attempt("network", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
attempt("write_course", lambda: open("{repo}/helpers/planted.py", "w"))
attempt("answer_key", lambda: os.listdir("{repo}/solutions"))
attempt("course", lambda: sorted(os.listdir("{repo}")))
attempt("host_home", lambda: os.listdir("{home}"))
attempt("write_tmp", lambda: open("/tmp/planted", "w").write("x"))
attempt("kill_grader", lambda: os.kill({grader}, 9))
attempt("processes", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
attempt("user", os.getuid)
children = []
def bomb():
    while True:
        pid = os.fork()
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        children.append(pid)
attempt("fork_bomb", bomb)
found["forked"] = len(children)
os.kill(children.pop(), 9) if children else None
attempt("left_running", lambda: subprocess.Popen(["sleep", "120"], start_new_session=True).pid)  # a session of its own
print(json.dumps(found), flush=True)
"""


def leftover(uid):
    """Processes still running as ``uid``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        if f"\nUid:\t{uid}\t" in status:
            found.append(pid)
    return found


@needs_bwrap
def test_code_that_escaped_python_is_still_contained(tmp_path):
    limits = Limits(processes=40, disk_bytes=1 << 20)
    box = Sandbox(limits)
    home = tmp_path / "home"
    home.mkdir()
    uid = UID if os.geteuid() == 0 else None
    script = ESCAPE.format(uid=uid, limits=dict(vars(limits)), repo=REPO_ROOT, home=home, grader=os.getpid())
    lines = []
    finished = box.run([sys.executable, "-I", "-c", script], b"", None, lambda line: lines.append(line) or deadline,
                       deadline := time.monotonic() + 120)
    assert finished.returncode == 0, finished.stderr_tail
    found = json.loads(lines[0])
    assert found["network"][0] == "OSError" and "unreachable" in found["network"][1]
    assert found["write_course"][0] == "OSError" and "Read-only" in found["write_course"][1]
    assert found["answer_key"][0] == "FileNotFoundError" and found["host_home"][0] == "FileNotFoundError"
    assert set(eval(found["course"][1])) <= {".venv", "data", "helpers", "pyproject.toml", "tests"}  # noqa: S307
    assert found["write_tmp"][0] == "ok"  # its own /tmp, gone with it
    assert found["kill_grader"][0] == "ProcessLookupError"  # the grader is not even visible
    assert len(eval(found["processes"][1])) < 10  # noqa: S307 - its own few processes only
    if uid is not None:
        assert found["user"][1] == str(UID)
        assert found["fork_bomb"][0] == "BlockingIOError" and found["forked"] < limits.processes
    time.sleep(0.5)
    assert not (REPO_ROOT / "helpers" / "planted.py").exists() and not list(home.iterdir())
    if uid is not None:
        assert leftover(UID) == []  # the sleeping children and the fork bomb died with the sandbox


@needs_bwrap
def test_the_sandbox_is_stopped_at_its_deadline_and_when_it_writes_too_much():
    box = Sandbox(Limits(stream_bytes=1 << 20))
    start = time.monotonic()
    finished = box.run(["/bin/sh", "-c", "sleep 100 & sleep 100"], b"", None, lambda line: start + 2, start + 2)
    assert finished.stopped == "deadline" and time.monotonic() - start < 10
    flood = [sys.executable, "-I", "-c", "import sys\nwhile True: sys.stderr.write('x' * 65536)"]
    assert box.run(flood, b"", None, lambda line: start + 60, start + 60).stopped == "output"


@needs_bwrap
def test_the_result_stream_cannot_be_opened_again_from_inside():
    box = Sandbox(Limits())
    lines = []
    code = "import sys\ntry:\n    open('/proc/self/fd/1', 'w')\nexcept OSError as e:\n    print(e.strerror)"
    box.run([sys.executable, "-I", "-c", code], b"", None, lambda line: lines.append(line) or time.monotonic() + 60,
            time.monotonic() + 60)
    assert lines[0] == "No such device or address"  # a socket: no C library can write to it by path


def test_without_bubblewrap_grading_refuses_and_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap.*--unsafe-no-sandbox"):
        Sandbox(Limits())
    Sandbox(Limits(), unsafe=True)  # the teacher's explicit choice


def test_only_signed_records_count():
    key = os.urandom(32)
    lines = []
    signer(type("S", (), {"write": lambda self, s: lines.append(s), "flush": lambda self: None})(), key)(
        {"kind": "result", "test": "t", "passed": True})
    assert verify(lines[0].rstrip("\n"), key) == {"kind": "result", "test": "t", "passed": True}
    assert verify(lines[0].rstrip("\n"), os.urandom(32)) is None  # another key
    assert verify(lines[0].replace("true", "false").rstrip("\n"), key) is None  # changed
    assert verify("0" * 64 + ' {"kind": "result", "test": "t", "passed": true}', key) is None  # forged


def test_every_way_a_runner_can_end_gets_a_true_reason():
    settings = grading.Settings(cell_timeout=7)
    attempt = grading.Attempt(b"k", {"t"}, settings, time.monotonic() + 100)
    end = grading.Finished
    assert "CPU time" in attempt.why_stopped(end(-24, None, ""))  # SIGXCPU
    assert "larger than 64 MB" in attempt.why_stopped(end(128 + 25, None, ""))  # SIGXFSZ, through bwrap
    assert "SIGKILL: out of memory?" in attempt.why_stopped(end(-9, None, ""))
    assert "SIGSEGV" in attempt.why_stopped(end(-11, None, ""))
    assert attempt.why_stopped(end(1, None, "boom\nValueError: x\n")) == \
        "the grading process exited with status 1 (ValueError: x)"
    assert "more than 8 MB" in attempt.why_stopped(end(-9, "output", ""))
    assert "while loading the lab's set-up" in attempt.why_stopped(end(-9, "deadline", ""))
    attempt.current = "t"
    assert attempt.why_stopped(end(-9, "deadline", "")) == "stopped after 7 s (the time limit of a test cell)"


def test_feedback_escapes_everything_and_is_capped():
    tests = [LabTest("t", 2.0, "")]
    row = grading.GradeRow("<b>eve</b>", "lab", 0, 2, "graded", "t (2 points): <script>alert(1)</script>")
    page = grading.feedback_html(grading.Graded(row, {"t": grading.Outcome(
        False, "<script>x</script>", "<script>" * 100_000, 800_000)}, ["<img src=x onerror=alert(1)>"]), tests)
    assert "<script" not in page and "<img" not in page and "&lt;script&gt;" in page
    assert len(page.encode()) <= grading.FEEDBACK_BYTES + 100 and page.endswith("</body></html>")
