"""Generate the student versions of the labs (labs/) from their single source (solutions/) with nbgrader.

    python -m helpers.course.labs generate   # rewrite labs/ (what `make labs` runs)
    python -m helpers.course.labs check      # exit 1 if the committed labs/ differ from what nbgrader generates
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from helpers.course.deps import MissingDependency, require
from helpers.paths import LABS_DIR, REPO_ROOT, SOLUTIONS_DIR


def nbgrader_command() -> list[str]:
    """nbgrader from the same environment as this Python."""
    return [sys.executable, "-m", "nbgrader"]


def nbgrader_env() -> dict[str, str]:
    """nbgrader runs `alembic` from PATH when it creates its gradebook: put this environment's bin/ first."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def lab_ids() -> list[str]:
    """Every lab: one folder per lab in solutions/."""
    return sorted(p.name for p in SOLUTIONS_DIR.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def make_course_dir(root: Path) -> Path:
    """A throw-away nbgrader course folder holding a copy of solutions/ and the course's nbgrader_config.py."""
    shutil.copytree(SOLUTIONS_DIR, root / "solutions", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(REPO_ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    return root


def run_nbgrader(args: list[str], course_dir: Path, timeout: float | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run nbgrader in ``course_dir``; ``env`` adds variables (e.g. COURSE_PROFILE) to the environment."""
    return subprocess.run([*nbgrader_command(), *args], cwd=course_dir, env={**nbgrader_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def release(course_dir: Path, lab: str) -> Path:
    """Run nbgrader generate_assignment for one lab in ``course_dir``; return the released folder."""
    result = run_nbgrader(["generate_assignment", lab, "--force"], course_dir)
    out = course_dir / "labs" / lab
    if result.returncode != 0 or not out.is_dir():
        raise RuntimeError(f"nbgrader could not generate {lab}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return out


def generate(dest: Path = LABS_DIR, labs: list[str] | None = None) -> list[str]:
    """Write the student version of every lab into ``dest``; return the lab ids."""
    labs = labs or lab_ids()
    with tempfile.TemporaryDirectory() as tmp:
        course_dir = make_course_dir(Path(tmp))
        for lab in labs:
            released = release(course_dir, lab)
            shutil.rmtree(dest / lab, ignore_errors=True)
            shutil.copytree(released, dest / lab)
    return labs


def differences(committed: Path = LABS_DIR) -> list[str]:
    """Files that differ between the committed labs/ and a fresh generation."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "labs"
        generate(fresh)

        def walk(cmp: filecmp.dircmp, prefix: str) -> None:
            found.extend(f"{prefix}{name}: only in the committed labs/" for name in cmp.left_only)
            found.extend(f"{prefix}{name}: missing from the committed labs/" for name in cmp.right_only)
            found.extend(f"{prefix}{name}: differs" for name in cmp.diff_files)
            for name, sub in cmp.subdirs.items():
                walk(sub, f"{prefix}{name}/")

        cmp = filecmp.dircmp(committed, fresh, ignore=["__pycache__", ".ipynb_checkpoints"])
        walk(cmp, "labs/")
        # dircmp compares by size and time first; compare every common file's bytes to be sure.
        for path in fresh.rglob("*"):
            twin = committed / path.relative_to(fresh)
            if path.is_file() and twin.is_file() and path.read_bytes() != twin.read_bytes():
                line = f"labs/{path.relative_to(fresh)}: differs"
                if line not in found:
                    found.append(line)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.labs", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["generate", "check"])
    args = parser.parse_args(argv)
    try:
        require("nbgrader", purpose="Generating labs/")
    except MissingDependency as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.command == "generate":
        for lab in generate():
            print(f"generated labs/{lab} from solutions/{lab}")
        return 0
    diffs = differences()
    for line in diffs:
        print(line, file=sys.stderr)
    if diffs:
        print("labs/ is not what nbgrader generates from solutions/: run `make labs` and commit.", file=sys.stderr)
        return 1
    print("labs/ equals what nbgrader generates from solutions/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
