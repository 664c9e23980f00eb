"""The trusted test runner: runs one submission's tests inside the sandbox and reports each outcome, signed.

    python -I -m helpers.course.testrun < job.json     (helpers.course.grading starts it; a teacher never does)

The job (JSON on standard input, read once, then closed) holds a one-time key and the program: the lab's set-up
cells, each student cell to load (helpers.course.restricted: definitions only, guarded) and the lab's test cells with
their hidden tests, in the notebook's order. The tests come from the lab, never from the student's notebook, and
exist only in this process's memory: nothing of them is on the sandbox's disk.

Before any of it runs, the runner drops root (to the job's ``uid``), sets its limits (memory, CPU time, processes,
file size) and installs the audit hook. It writes one record per line to its standard output (a socket, which no
path reaches), each signed with the key (an HMAC): the grader ignores a line it cannot verify, so code that
manages to write to that stream anyway cannot forge a result. Everything else (a test's prints, C-level output)
goes to per-test buffers or to standard error. After each test it checks that the modules and classes of torch
and of the course are as they were; if not, that test fails and the runner stops (the grader starts it again for
the remaining tests).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import functools
import hashlib
import hmac
import importlib
import io
import json
import os
import resource
import runpy
import sys
import time
import warnings
from collections.abc import Callable
from types import FunctionType, MethodType, ModuleType, TracebackType
from typing import Any

from helpers.course import restricted

TRUSTED_PACKAGES = frozenset({"builtins", "collections", "copy", "dataclasses", "functools", "helpers", "itertools",
                              "math", "numpy", "torch", "typing"})
CHANGED_COURSE = 3  # exit status: a test changed the course's code, restart for the rest


class Capture(io.TextIOBase):
    """A cell's printed output: the first ``limit`` characters are kept, the rest only counted.

    What is printed while a line of a hidden test runs (``hidden`` line numbers of the cell ``filename``) is only
    counted: the feedback must not tell what the hidden tests do, beyond why one failed."""

    def __init__(self, limit: int, filename: str = "", hidden: frozenset[int] = frozenset()) -> None:
        self.limit, self.filename, self.hidden = limit, filename, hidden
        self.total, self.hidden_total, self.parts = 0, 0, []

    def writable(self) -> bool:
        return True

    def _in_hidden_test(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename != self.filename:
            frame = frame.f_back
        return frame is not None and frame.f_lineno in self.hidden

    def write(self, text: str) -> int:
        if self.hidden and self._in_hidden_test():
            self.hidden_total += len(text)
            return len(text)
        kept = sum(len(p) for p in self.parts)
        if kept < self.limit:
            self.parts.append(str(text)[: self.limit - kept])
        self.total += len(text)
        return len(text)

    def text(self) -> str:
        return "".join(self.parts)


def hidden_lines(source: str) -> frozenset[int]:
    """The line numbers of a test cell between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``."""
    hidden, inside = set(), False
    for number, line in enumerate(source.splitlines(), start=1):
        inside = inside or line.strip() == "### BEGIN HIDDEN TESTS"
        if inside:
            hidden.add(number)
        inside = inside and line.strip() != "### END HIDDEN TESTS"
    return frozenset(hidden)


def signer(stream: io.TextIOBase, key: bytes) -> Callable[[dict], None]:
    def send(record: dict) -> None:
        payload = json.dumps(record, ensure_ascii=True)
        stream.write(hmac.new(key, payload.encode(), hashlib.sha256).hexdigest() + " " + payload + "\n")
        stream.flush()
    return send


def verify(line: str, key: bytes) -> dict | None:
    """The record on a line written by :func:`signer`, or None if the line is not one (forged, cut, noise)."""
    mac, _, payload = line.partition(" ")
    expected = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        record = json.loads(payload)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def quietly(function: Callable) -> Callable:
    """Run ``function`` with warnings off: a deprecated alias in torch warns when it is only looked at."""
    @functools.wraps(function)
    def run(*args: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return function(*args)
    return run


def _spaces() -> dict[str, dict[str, Any]]:
    """The namespaces tests rely on: every module of the trusted packages, and every class defined in one."""
    spaces: dict[str, dict[str, Any]] = {}
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in TRUSTED_PACKAGES:
            continue
        values = dict(vars(module))
        spaces[name] = values
        for value in values.values():
            if isinstance(value, type) and value.__dict__.get("__module__") == name:
                spaces[f"{name}.{value.__qualname__}"] = dict(vars(value))
    return spaces


@quietly
def fingerprint() -> dict[str, dict[str, int]]:
    """Identity of every function, class and module in those namespaces; a digest of the course's own tables."""
    found = {}
    for space, values in _spaces().items():
        course = space.startswith("helpers.") and space in sys.modules  # a module of the course (not a class)
        found[space] = {k: hash(repr(v)) if course and _is_table(k, v) else id(v) for k, v in values.items()
                        if callable(v) or isinstance(v, ModuleType) or (course and _is_table(k, v))}
    return found


def _is_table(name: str, value: Any) -> bool:
    """A constant table of the course (MARGINS, DEFAULTS, ...): its contents must not change."""
    return name.isupper() and isinstance(value, (dict, list, set))


def student_made(value: Any, name: str = "", in_class: bool = False) -> bool:
    """Whether ``value`` comes from a student's code (a function, a method, an object of a student's class), or is
    a method generated for a class after the fact (``@dataclass`` applied to a course or torch class)."""
    if isinstance(value, functools.partial):
        value = value.func
    if isinstance(value, (MethodType, classmethod, staticmethod)):
        value = value.__func__
    code = value.__code__ if isinstance(value, FunctionType) else None
    if code is not None:
        generated = in_class and name.startswith("__") and code.co_filename == "<string>"
        return code.co_filename.startswith(restricted.STUDENT_FILE) or generated
    return vars(type(value)).get("__module__") == restricted.STUDENT_MODULE


@quietly
def changes(before: dict[str, dict[str, int]]) -> list[str]:
    """What a student's code changed since ``before``: a function replaced by one of theirs or by something that
    is not a function, one of theirs added to a module or class, a function removed, a course table changed.

    (Libraries rebind some functions lazily, as transformers wraps torch.manual_seed; that is not a change.)"""
    missing = object()
    now = fingerprint()
    found = []
    for space, values in _spaces().items():
        old_values = before.get(space)
        if old_values is None:
            continue
        in_class = space not in sys.modules
        for name, value in values.items():
            if name not in old_values:
                changed = student_made(value, name, in_class)
            elif now[space].get(name) == old_values[name]:
                continue
            else:
                changed = not callable(value) or student_made(value, name, in_class)
            if changed:
                found.append(f"{space}.{name}")
        found += [f"{space}.{name}" for name in old_values if values.get(name, missing) is missing]
    return found


def student_location(tb: TracebackType | None) -> str:
    """Where in the student's code an error was raised: " (in cell rms_norm, line 4)", or ""."""
    where = ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(restricted.STUDENT_FILE):
            where = f" (in cell {filename[len(restricted.STUDENT_FILE):-1]}, line {tb.tb_lineno})"
        tb = tb.tb_next
    return where


def first_line(text: str, limit: int = 200) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def missing_name(exc: BaseException) -> str | None:
    """The name of a NameError behind ``exc`` (a check wraps the error it met in a CheckError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, NameError):
            return getattr(exc, "name", None)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def describe(exc: BaseException, not_loaded: dict[str, str], memory_bytes: int) -> str:
    """One line that says truthfully why a test cell failed."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - str() of an odd exception
        message = ""
    if isinstance(exc, NotImplementedError):
        return "not written yet (the code still raises NotImplementedError)"
    if isinstance(exc, KeyboardInterrupt):
        why = "KeyboardInterrupt raised by the code (not a time-out)"
    elif isinstance(exc, SystemExit):
        why = "the code raised SystemExit (exit() does not end grading)"
    elif isinstance(exc, restricted.Refused):
        why = f"refused: {first_line(message)}"
    elif isinstance(exc, MemoryError) or "can't allocate memory" in message:
        why = f"ran out of memory: a submission may use {memory_bytes / 2**30:g} GB"
    elif missing_name(exc) in not_loaded:
        return f"{missing_name(exc)} was not loaded: {not_loaded[missing_name(exc)]}"
    else:
        why = f"{type(exc).__name__}: {first_line(message)}".rstrip(": ")
    return why + student_location(exc.__traceback__)


def run_cell(source: str, filename: str, namespace: dict, output: Capture) -> BaseException | None:
    """Execute trusted code (a set-up or test cell) in ``namespace``; the exception it raised, if any."""
    try:
        code = compile(restricted.strip_magics(source), filename, "exec")
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            exec(code, namespace)
    except BaseException as exc:  # noqa: BLE001 - every failure of a cell is a result, not a crash
        return exc
    return None


def prefetch(program: list[dict[str, Any]]) -> None:
    """Import what the lab's tests import before any test's clock starts (transformers alone takes seconds)."""
    for step in program:
        if step["kind"] != "test":
            continue
        for node in ast.walk(ast.parse(step["source"])):
            if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                for name in [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]:
                    with contextlib.suppress(Exception):  # the test itself will say what is missing
                        importlib.import_module(name)


def drop_privileges(uid: int | None) -> None:
    if uid is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.geteuid() == 0:
            raise SystemExit("could not drop root")


def set_limits(limits: dict[str, int]) -> None:
    for which, value in [(resource.RLIMIT_AS, limits["memory_bytes"]), (resource.RLIMIT_FSIZE, limits["file_bytes"]),
                         (resource.RLIMIT_NPROC, limits.get("processes")), (resource.RLIMIT_CORE, 0)]:
        if value is not None:  # no process limit where the grader's own user would share it (no sandbox, no root)
            resource.setrlimit(which, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 5))


def run(job: dict[str, Any], send: Callable[[dict], None]) -> int:
    """Run the job's program; send a record per step. Returns the exit status."""
    limits, skip, graded = job["limits"], set(job.get("skip", [])), set(job["graded"])
    output_limit = job.get("output_chars", 20_000)
    lab: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    setup_names: set[str] = set()
    student = restricted.StudentGlobals(lab, lambda: setup_names | graded)
    not_loaded: dict[str, str] = {}
    intact = fingerprint()
    for step in job["program"]:
        if step["kind"] == "setup":
            before = dict(lab)
            error = run_cell(step["source"], f"<lab {step['label']}>", lab, Capture(0))
            setup_names |= {n for n in lab if not n.startswith("__") and (n not in before or lab[n] is not before[n])}
            if error is not None:
                send({"kind": "note", "text": f"the lab's cell {step['label']} failed: "
                                              f"{describe(error, not_loaded, limits['memory_bytes'])}"})
            intact = fingerprint()
        elif step["kind"] == "student":
            send({"kind": "loading", "label": step["label"]})
            for cell in step["cells"]:
                report = restricted.load_cell(cell["source"], cell["label"], student, graded,
                                              cell.get("definitions_only", False))
                for name in report.defined:
                    not_loaded.pop(name, None)
                not_loaded.update(report.not_loaded)
                send({"kind": "loaded", "label": cell["label"], "skipped": report.skipped,
                      "not_loaded": report.not_loaded})
        elif step["id"] not in skip:
            send({"kind": "start", "test": step["id"]})
            filename = f"<test {step['id']}>"
            output, started = Capture(output_limit, filename, hidden_lines(step["source"])), time.monotonic()
            error = run_cell(step["source"], filename, lab, output)
            why = None if error is None else describe(error, not_loaded, limits["memory_bytes"])
            changed = changes(intact)
            if changed:
                why = f"the course's code was changed while this test ran ({', '.join(changed[:3])})"
            send({"kind": "result", "test": step["id"], "passed": why is None, "why": why, "output": output.text(),
                  "output_chars": output.total, "hidden_chars": output.hidden_total,
                  "seconds": round(time.monotonic() - started, 2)})
            if changed:
                return CHANGED_COURSE
            intact = fingerprint()  # modules the test imported are watched from now on
    send({"kind": "done"})
    return 0


def main() -> int:
    job = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    with contextlib.suppress(OSError):
        os.close(0)
    records = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # from now on, anything written to file descriptor 1 goes to standard error
    sys.stdout = sys.stderr
    drop_privileges(job.get("uid"))
    set_limits(job["limits"])
    sys.dont_write_bytecode = True
    sys.path[:0] = job.get("paths", [])
    for path in job.get("paths", []):  # what Python would have run at start-up from PYTHONPATH (-I skips it)
        if os.path.isfile(os.path.join(path, "sitecustomize.py")):
            runpy.run_path(os.path.join(path, "sitecustomize.py"))
    send = signer(records, bytes.fromhex(job["key"]))
    import torch  # noqa: F401 - before the audit hook and the fingerprint: every lab uses it

    prefetch(job["program"])
    restricted.install_audit_hook()
    return run(job, send)


if __name__ == "__main__":
    sys.exit(main())
