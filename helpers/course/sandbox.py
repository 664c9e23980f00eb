"""Run one command per submission in a bubblewrap sandbox: no network, a fresh folder, read-only course code.

The sandbox sees, read-only, only what grading needs: the system's programs and libraries, Python and the
course's environment, the course's code (``helpers/``, ``data/``) and the one folder prepared for this student
(the released lab and their notebook). It has its own process, network, IPC and host-name namespaces (no network;
it cannot see or signal the grader or anything else), fresh size-capped ``/tmp`` and home folders that vanish with
it, and it dies with the grader. ``solutions/``, the hidden tests, the output folder and the other students'
work are not in it. Limits on memory, CPU time, processes and file size are set by the runner inside
(helpers.course.testrun); wall time and output bytes are enforced here.

Bubblewrap (``bwrap``) is the only tool it needs: ``sudo apt-get install bubblewrap`` (Debian, Ubuntu),
``sudo dnf install bubblewrap`` (Fedora), ``sudo pacman -S bubblewrap`` (Arch). Without it, grading refuses to
run unless the teacher passes ``--unsafe-no-sandbox``.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.paths import REPO_ROOT

INSTALL_HINT = ("Install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf install "
                "bubblewrap`; Arch: `sudo pacman -S bubblewrap`), or pass --unsafe-no-sandbox to grade without a "
                "sandbox (the students' code then runs with your rights and can read and change your files).")
HOME = "/home/student"  # the sandbox's home and working folder (a fresh tmpfs)
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
                "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives", "/etc/ssl/certs")
COURSE_PATHS = ("helpers", "data", "pyproject.toml")  # what of the course checkout a submission may read


class SandboxUnavailable(RuntimeError):
    """Grading cannot be sandboxed here; the message says how to fix it."""


@dataclass(frozen=True)
class Limits:
    """What one submission may use; the runner inside the sandbox sets the first four with setrlimit."""

    memory_bytes: int = 4 << 30  # address space of the grading process
    cpu_seconds: int = 900  # CPU time of the grading process
    processes: int = 256  # processes and threads of its user
    file_bytes: int = 64 << 20  # largest file it may write
    disk_bytes: int = 64 << 20  # size of its /tmp and of its home folder
    stream_bytes: int = 8 << 20  # bytes it may write to its standard error (beyond: stopped)


@dataclass
class Finished:
    """How a sandboxed command ended: its exit status, or why it was stopped."""

    returncode: int
    stopped: str | None  # "deadline" or "output" when the sandbox killed it
    stderr_tail: str


def _bound(paths: list[Path]) -> list[str]:
    """bwrap arguments that show ``paths`` read-only at the same place (their parents readable by anyone)."""
    paths = [p for p in dict.fromkeys(paths) if not any(q != p and q in p.parents for q in paths)]
    parents = sorted({a for p in paths for a in p.parents if a != Path("/")}, key=lambda a: len(a.parts))
    args: list[str] = [a for parent in parents for a in ("--perms", "0755", "--dir", str(parent))]
    for path in paths:
        if os.path.islink(path) and str(path).count("/") == 1:  # /lib -> usr/lib on merged-/usr systems
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.exists():
            args += ["--ro-bind", str(path), str(path)]
    return args


class Sandbox:
    """Builds and runs the sandbox for each submission (``unsafe``: no sandbox, only the runner's own limits)."""

    def __init__(self, limits: Limits, unsafe: bool = False, extra_paths: list[Path] | None = None) -> None:
        self.limits, self.unsafe = limits, unsafe
        # PYTHONPATH may name the checkout itself (the tests do): its helpers/ is bound anyway, and the rest of it
        # (solutions/, .git, ...) must stay out of the sandbox
        root = REPO_ROOT.resolve()
        self.extra_paths = [p.resolve() for p in extra_paths or []
                            if p.exists() and p.resolve() != root and p.resolve() not in root.parents]
        self.bwrap = shutil.which("bwrap")
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False  # set by kill_all: no new sandbox starts
        if not unsafe:
            self._check()

    def _readable(self) -> list[Path]:
        python = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent}
        course = [REPO_ROOT / p for p in COURSE_PATHS]
        return [Path(p) for p in SYSTEM_PATHS] + sorted(python) + course + self.extra_paths

    def command(self, argv: list[str], folder: Path | None) -> list[str]:
        """``argv`` wrapped in bwrap; ``folder`` (read-only) appears as ~/<its name> and is the working folder."""
        if self.unsafe:
            return argv
        disk = str(self.limits.disk_bytes)
        inside = f"{HOME}/{folder.name}" if folder else HOME
        return [
            self.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            *([] if os.geteuid() == 0 else ["--unshare-user"]), "--die-with-parent", "--new-session",
            "--clearenv", *[a for k, v in self.environment().items() for a in ("--setenv", k, v)],
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", disk, "--tmpfs", "/tmp", "--perms", "1777", "--size", disk, "--tmpfs", HOME,
            # after the fresh /tmp and home: a course or environment that lives under /tmp stays visible
            *_bound(self._readable()),
            *(["--ro-bind", str(folder), inside] if folder else []), "--chdir", inside, "--hostname", "sandbox",
            "--", *argv,
        ]

    def environment(self) -> dict[str, str]:
        """The environment inside: no secrets of the grader's, one thread, the smoke profile, no model hub."""
        return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": HOME,
                "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/matplotlib", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "COURSE_PROFILE": "smoke", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0", "XDG_CACHE_HOME": "/tmp/cache"}

    def _check(self) -> None:
        if self.bwrap is None:
            raise SandboxUnavailable(f"Grading runs each submission in a sandbox, and bubblewrap (bwrap) is not "
                                     f"installed. {INSTALL_HINT}")
        probe = subprocess.run(self.command(["/bin/true"], None), capture_output=True, text=True,
                               env=self.environment(), timeout=60)
        if probe.returncode != 0:
            raise SandboxUnavailable(f"bubblewrap is installed but cannot create a sandbox here "
                                     f"({probe.stderr.strip()[:300] or f'status {probe.returncode}'}): it needs "
                                     f"unprivileged user namespaces, or root. {INSTALL_HINT}")

    def run(self, argv: list[str], stdin: bytes, folder: Path | None, on_line: Callable[[str], float],
            deadline: float) -> Finished:
        """Run ``argv`` in the sandbox; hand each stdout line to ``on_line``, which returns the new deadline.

        Its standard output is a socket, not a pipe: code inside cannot open it again through /proc/self/fd
        (a C library that writes to a path would otherwise reach it). The command is killed, with everything it
        started, at the deadline or when its standard error passes ``limits.stream_bytes``."""
        if self.stopping:
            raise RuntimeError("grading is stopping")
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(self.command(argv, folder), stdin=subprocess.PIPE, stdout=theirs.fileno(),
                                       stderr=subprocess.PIPE, env=self.environment(), start_new_session=True,
                                       cwd=folder if self.unsafe and folder else None)
        finally:
            theirs.close()
        with self.lock:
            self.running.add(process)
            if self.stopping:
                _kill(process)
        stopped, stderr, pending, written = None, b"", b"", 0
        try:
            process.stdin.write(stdin)
            process.stdin.close()
        except BrokenPipeError:
            pass
        with ours, selectors.DefaultSelector() as selector:
            selector.register(ours, selectors.EVENT_READ)
            selector.register(process.stderr, selectors.EVENT_READ)
            while selector.get_map() and stopped is None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    stopped = "deadline"
                    break
                for key, _ in selector.select(timeout=min(wait, 1.0)):
                    chunk = ours.recv(1 << 16) if key.fileobj is ours else os.read(process.stderr.fileno(), 1 << 16)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    elif key.fileobj is process.stderr:
                        written += len(chunk)
                        stderr = (stderr + chunk)[-4000:]
                        if written > self.limits.stream_bytes:
                            stopped = "output"
                    else:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            deadline = on_line(line.decode("utf-8", "replace"))
            if stopped:
                _kill(process)
            returncode = process.wait()
        process.stderr.close()
        with self.lock:
            self.running.discard(process)
        return Finished(returncode, stopped, stderr.decode("utf-8", "replace"))

    def kill_all(self) -> None:
        """Kill every sandbox still running (the grader is stopping)."""
        with self.lock:
            self.stopping = True
            for process in list(self.running):
                _kill(process)


def _kill(process: subprocess.Popen) -> None:
    """Kill the command and everything it started (its process group; in the sandbox, its PID namespace)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
