"""The figures a lab quotes from its measured runs: recorded by the run itself, kept beside the lab, and written into
the lab's text by a command, so that prose and numbers cannot drift apart.

1. The lab's last code cell records what it measured: ``record_figures("lab3_sam", rows)``. Each row is one line of the
   lab's table (column → value). Outside a measuring run this does nothing.
2. ``python -m helpers.course.notebooks measure --profile cpu --out runs PATH`` runs the lab and leaves
   ``runs/<lab>_<profile>.json`` (the rows, the machine, the whole lab's minutes).
3. Copy that file to ``solutions/<lab>/measured/`` and run ``python -m helpers.course.figures render <lab>``: the table
   between the markers ``<!-- measured-figures -->`` and ``<!-- /measured-figures -->`` in the lab's Markdown is
   rewritten from the saved runs, one block of rows per profile; a profile with no saved run says so.
4. ``python -m helpers.course.figures check`` (run by the tests) fails when a lab's table differs from its rendering.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from helpers.course.notebooks import FIGURES_ENV_VAR, load, write
from helpers.paths import SOLUTIONS_DIR
from helpers.profile import PROFILES, get_device, get_profile

BEGIN, END = "<!-- measured-figures -->", "<!-- /measured-figures -->"
MEASURED = "measured"  # solutions/<lab>/measured/<lab>_<profile>.json


def machine() -> str:
    """The device a run measured on, in words: the GPU's name, or the CPU with its thread count."""
    device = get_device()
    if device.type == "cuda":
        return f"1 × {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    load = f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else ""
    return f"CPU ({platform.machine()}, {threads} thread{'s' * (threads > 1)}{load})"


def record_figures(lab: str, rows: Sequence[Mapping[str, Any]], profile: str | None = None) -> Path | None:
    """Save a measuring run's rows (one per line of the lab's table) to ``$COURSE_FIGURES_DIR/<lab>_<profile>.json``;
    return the path, or None outside a measuring run (the variable unset)."""
    folder = os.environ.get(FIGURES_ENV_VAR)
    if not folder:
        return None
    if not rows or any(not isinstance(row, Mapping) or not row for row in rows):
        raise ValueError("rows: expected a non-empty list of non-empty dicts (column → value), one per table line")
    profile = get_profile(profile)
    path = Path(folder) / f"{lab}_{profile}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"lab": lab, "profile": profile, "machine": machine(),
                                "rows": [dict(row) for row in rows]}, indent=1, ensure_ascii=False) + "\n")
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def render(lab: str, folder: Path | None = None) -> str:
    """The Markdown table of ``lab``'s saved runs (every profile that has one), then one line per profile on where
    and how long it ran; a profile without a saved run is listed as not measured."""
    folder = Path(folder) if folder is not None else SOLUTIONS_DIR / lab / MEASURED
    runs = {p: json.loads((folder / f"{lab}_{p}.json").read_text()) for p in PROFILES[1:]
            if (folder / f"{lab}_{p}.json").is_file()}
    if not runs:
        raise FileNotFoundError(f"no saved run of {lab} in {folder}: measure it with `python -m "
                                f"helpers.course.notebooks measure` and copy the JSON file there")
    columns = list(dict.fromkeys(key for run in runs.values() for row in run["rows"] for key in row))
    lines = ["| profile | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for profile, run in runs.items():
        lines += [f"| {profile} | " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in run["rows"]]
    lines.append("")
    for profile in PROFILES[1:]:
        if profile in runs:
            run = runs[profile]
            minutes = f", the whole lab in {run['minutes']:.1f} minutes" if "minutes" in run else ""
            lines.append(f"- `{profile}`: measured on {run['machine']}{minutes} "
                         f"(saved run: `measured/{lab}_{profile}.json`).")
        else:
            lines.append(f"- `{profile}`: not measured yet (no saved run).")
    return "\n".join(lines)


def _marked_cell(nb: Any, lab: str) -> Any:
    cells = [c for c in nb.cells if c.cell_type == "markdown" and BEGIN in c.source]
    if len(cells) != 1 or END not in cells[0].source:
        raise ValueError(f"{lab}: expected one Markdown cell holding {BEGIN} … {END}, found {len(cells)}")
    return cells[0]


def _with_table(source: str, table: str) -> str:
    head, rest = source.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}"


def labs_with_figures() -> list[str]:
    """The labs whose solution has a measured-figures block."""
    return sorted(p.parent.name for p in SOLUTIONS_DIR.glob("*/*.ipynb") if BEGIN in p.read_text(encoding="utf-8"))


def differs(lab: str) -> bool:
    """Whether the lab's table differs from the rendering of its saved runs."""
    nb = load(SOLUTIONS_DIR / lab / f"{lab}.ipynb")
    source = _marked_cell(nb, lab).source
    return source != _with_table(source, render(lab))


def update(lab: str) -> bool:
    """Rewrite the lab's table from its saved runs; True when the notebook changed."""
    path = SOLUTIONS_DIR / lab / f"{lab}.ipynb"
    nb = load(path)
    cell = _marked_cell(nb, lab)
    new = _with_table(cell.source, render(lab))
    if new == cell.source:
        return False
    cell.source = new
    write(path, nb)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.figures", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("render", help="rewrite labs' tables from their saved runs").add_argument("labs", nargs="*")
    sub.add_parser("check", help="fail when a lab's table differs from its saved runs")
    args = parser.parse_args(argv)
    if args.command == "render":
        for lab in args.labs or labs_with_figures():
            print(f"{lab}: {'rewritten' if update(lab) else 'already up to date'}")
        return 0
    stale = [lab for lab in labs_with_figures() if differs(lab)]
    for lab in stale:
        print(f"{lab}: its table differs from its saved runs: run `python -m helpers.course.figures render {lab}` "
              f"(then `make labs`)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
