"""The course's notebooks: load them with a clear message, stamp and check the Colab cells, execute them.

Every notebook opens with two cells:
1. a Markdown cell holding the "Open in Colab" badge (tag ``colab-badge``);
2. a code cell that, on Colab, clones the course and installs what Colab lacks, and elsewhere does
   nothing (tag ``colab-setup``; the book hides it).

    python -m helpers.course.notebooks validate     # every notebook is valid and carries both cells
    python -m helpers.course.notebooks stamp        # write both cells into every notebook (after a fork)
    python -m helpers.course.notebooks execute PATH # run a notebook in place and keep its outputs (authors)
    python -m helpers.course.notebooks measure --profile gpu --out DIR PATH...  # run copies in a profile (maintainers)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from helpers.course.deps import require
from helpers.paths import CHAPTERS_DIR, LABS_DIR, REPO_ROOT, SOLUTIONS_DIR, course_config
from helpers.profile import ENV_VAR, ProfileError, get_profile

nbformat = require("nbformat", purpose="Reading notebooks")

FIGURES_ENV_VAR = "COURSE_FIGURES_DIR"  # a measuring run's folder: helpers.course.figures saves a lab's figures there
BADGE_TAG = "colab-badge"
SETUP_TAG = "colab-setup"
COLAB_DIR = "/content/fm-from-scratch"

SETUP_TEMPLATE = '''\
# Set-up for Colab: fetch the course and install what Colab lacks. Where the course is installed, it does nothing.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("helpers") is None:
    COURSE_DIR = "{colab_dir}"
    if not os.path.isdir(COURSE_DIR):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}",
                        "https://github.com/{repository}", COURSE_DIR], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", COURSE_DIR], check=True)
    sys.path.insert(0, COURSE_DIR)
    print("Installed the course from", COURSE_DIR)
else:
    print("The course is installed: nothing to set up.")'''


class NotebookError(Exception):
    """A notebook that cannot be read: ``problem`` says what is wrong, ``hint`` what to do about it."""

    def __init__(self, path: Path, problem: str, hint: str = "") -> None:
        self.path, self.problem, self.hint = path, problem, hint
        super().__init__(f"{relative(path)}{problem}" + (f" {hint}" if hint else ""))


def relative(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load(path: str | Path) -> nbformat.NotebookNode:
    """Read and validate a notebook; raise :class:`NotebookError` with one sentence that says what to do."""
    path = Path(path)
    if not path.is_file():
        raise NotebookError(path, ": no such notebook")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            path, f" is not a valid notebook: JSON error at line {exc.lineno}, column {exc.colno} ({exc.msg}).",
            f"Restore it with `git checkout -- {relative(path)}` or re-save it from JupyterLab.",
        ) from None
    if not isinstance(raw, dict) or "cells" not in raw:
        raise NotebookError(path, " is JSON but not a notebook (it has no 'cells').")
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise NotebookError(path, f" does not follow the notebook format: {exc.message}.",
                            "Re-save it from JupyterLab.") from None
    return nb


def colab_url(path: Path) -> str:
    """The Colab address of a notebook; a solution's badge points at the student version in labs/."""
    cfg = course_config()
    rel = Path(relative(path))
    if rel.parts and rel.parts[0] == "solutions":
        rel = Path("labs", *rel.parts[1:])
    return f"https://colab.research.google.com/github/{cfg['repository']}/blob/{cfg['branch']}/{rel.as_posix()}"


def badge_source(path: Path) -> str:
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(path)})"


def setup_source() -> str:
    cfg = course_config()
    return SETUP_TEMPLATE.format(colab_dir=COLAB_DIR, branch=cfg["branch"], repository=cfg["repository"])


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def problems(path: Path, nb: nbformat.NotebookNode) -> list[str]:
    """What is wrong with a loaded notebook's Colab cells (an empty list when nothing is)."""
    found = []
    cells = nb.cells
    if not cells or cells[0].cell_type != "markdown" or cells[0].source.strip() != badge_source(path):
        found.append("its first cell is not the Colab badge")
    if len(cells) < 2 or cells[1].cell_type != "code" or cells[1].source.strip() != setup_source():
        found.append("its second cell is not the Colab set-up cell")
    return found


def course_notebooks() -> list[Path]:
    """Every notebook of the course: chapters, solutions and labs."""
    return sorted(p for d in (CHAPTERS_DIR, SOLUTIONS_DIR, LABS_DIR) for p in d.rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def validate(paths: Iterable[Path]) -> list[str]:
    """One message per notebook that cannot be read or lacks its Colab cells."""
    messages = []
    for path in paths:
        try:
            nb = load(path)
        except NotebookError as exc:
            messages.append(str(exc))
            continue
        for problem in problems(path, nb):
            messages.append(f"{relative(path)}: {problem}; run `make notebooks` to stamp it.")
    return messages


def stamp(path: Path) -> bool:
    """Write (or refresh) the badge and set-up cells; return True when the file changed."""
    nb = load(path)
    before = nbformat.writes(nb)
    cells = [c for c in nb.cells if not ({BADGE_TAG, SETUP_TAG} & set(_tags(c)))]
    badge = nbformat.v4.new_markdown_cell(badge_source(path), metadata={"tags": [BADGE_TAG]})
    old_setup = [c for c in nb.cells if SETUP_TAG in _tags(c)]
    setup = nbformat.v4.new_code_cell(setup_source(), metadata={"tags": [SETUP_TAG, "remove-cell"]})
    if old_setup and old_setup[0].source == setup.source:
        setup = old_setup[0]  # keep its outputs
    nb.cells = [badge, setup, *cells]
    for cell in nb.cells:  # nbformat adds random ids; keep them stable per position and content
        cell.pop("id", None)
    nb.nbformat_minor = 4
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after + "\n", encoding="utf-8")
        return True
    return False


def write(path: Path, nb: nbformat.NotebookNode) -> None:
    """Save a notebook as the course keeps them (nbformat's JSON and a final newline)."""
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def execute(path: Path, timeout: int = 600) -> None:
    """Run a notebook top to bottom in its own folder with the current Python, and save its outputs."""
    from nbclient import NotebookClient

    nb = load(path)
    os.environ.pop("MPLBACKEND", None)  # a non-interactive backend in the kernel would save no figures
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in nb.cells:  # timestamps would change the file on every run
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)  # widget state makes the book load widget scripts from a CDN
    write(path, nb)


def measure(path: Path, out_dir: Path, profile: str, timeout: int = 3600) -> tuple[Path, list[int]]:
    """Run a copy of a notebook in a run profile, to read its figures (e.g. the gpu profile's, on a GPU machine).

    The notebook itself is not touched. The copy, ``out_dir/<name>_<profile>.ipynb``, is written after every cell
    (a run that is cut short keeps what it did), with each cell's wall time in ``metadata.measure.seconds``; a cell
    that raises is recorded and the run goes on. The figures the lab records (:mod:`helpers.course.figures`) are saved
    beside the copy as ``<name>_<profile>.json``, with the run's minutes. Returns the copy's path and the indices of
    the cells that raised."""
    from nbclient import NotebookClient

    nb = load(path)
    profile = get_profile(profile)
    out = Path(out_dir) / f"{Path(path).stem}_{profile}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, ENV_VAR: profile, FIGURES_ENV_VAR: str(out.parent.resolve())}  # the kernel's environment
    env.pop("MPLBACKEND", None)  # a non-interactive backend in the kernel would keep the figures out
    started = [time.perf_counter()]

    def after_cell(cell: nbformat.NotebookNode, **_: object) -> None:
        now = time.perf_counter()
        cell.metadata["measure"] = {"seconds": round(now - started[0], 2)}
        started[0] = now
        write(out, nb)

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, record_timing=False,
                            resources={"metadata": {"path": str(Path(path).parent)}}, on_cell_executed=after_cell)
    run_start = time.perf_counter()
    client.execute(env=env)
    write(out, nb)
    figures = out.with_suffix(".json")  # what the lab recorded (helpers.course.figures.record_figures), if anything
    if figures.is_file():
        data = json.loads(figures.read_text())
        data["minutes"] = round((time.perf_counter() - run_start) / 60, 1)
        figures.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    raised = [i for i, cell in enumerate(nb.cells)
              if any(o.get("output_type") == "error" for o in cell.get("outputs", []))]
    return out, raised


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.notebooks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("validate", "stamp"):
        p = sub.add_parser(name)
        p.add_argument("paths", nargs="*", type=Path, help="notebooks (default: every notebook of the course)")
    p = sub.add_parser("execute")
    p.add_argument("paths", nargs="+", type=Path)
    p = sub.add_parser("measure", help="run copies of notebooks in a profile; each copy is saved after every cell")
    p.add_argument("--profile", required=True, help="smoke, cpu or gpu")
    p.add_argument("--out", required=True, type=Path, help="the folder for the executed copies")
    p.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "measure":
        failed = False
        for path in args.paths:
            try:
                out, raised = measure(path, args.out, args.profile)
            except (NotebookError, ProfileError) as exc:
                print(exc, file=sys.stderr)
                return 1
            failed = failed or bool(raised)
            print(f"measured {relative(path)} → {out}" + (f"; cells that raised: {raised}" if raised else ""))
        return 1 if failed else 0
    paths = args.paths or course_notebooks()

    if args.command == "validate":
        messages = validate(paths)
        for message in messages:
            print(message, file=sys.stderr)
        if messages:
            return 1
        print(f"{len(paths)} notebooks are valid and carry their Colab cells.")
        return 0
    try:
        for path in paths:
            if args.command == "stamp":
                print(("stamped   " if stamp(path) else "unchanged ") + relative(path))
            else:
                execute(path)
                print("executed " + relative(path))
    except NotebookError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
