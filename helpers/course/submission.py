"""What of a submitted notebook gets graded: the student's cells matched to the lab's, and what was repaired.

Only the student's *code* comes from their notebook: their solution cells (found by nbgrader's ``grade_id``) and
the cells they added (definitions only). Everything else comes from the lab's source in ``solutions/``: the
set-up cells the tests need and the test cells with their hidden tests. So an edited, deleted, duplicated or
stripped test cell costs nothing, and the reason says which it was; a deleted solution cell gets the lab's empty
version back; a duplicated one loads in order, as a notebook run would.
"""

from __future__ import annotations

import ast
import json
import symtable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.course.restricted import strip_magics

MAX_NOTEBOOK_BYTES = 64 << 20
MAX_ANALYSED_CHARS = 200_000  # a cell longer than this is not analysed for the names it uses


class SubmissionError(Exception):
    """A submission that cannot be graded at all; the message is the reason."""


@dataclass(frozen=True)
class Test:
    id: str
    points: float
    source: str


@dataclass
class Cell:
    """A code cell of a notebook, as grading sees it."""

    source: str
    grade_id: str | None = None
    kind: str = "setup"  # "setup", "solution" or "test"
    points: float = 0.0
    number: int = 0  # its place in the notebook (1 = the first cell)


@dataclass
class Program:
    """What the runner executes for one submission, and what was repaired on the way."""

    steps: list[dict[str, Any]]
    tests: list[Test]
    graded: list[str]
    repairs: list[str] = field(default_factory=list)


def _text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else source if isinstance(source, str) else ""


def normalised(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def code_cells(nb: dict[str, Any]) -> list[Cell]:
    """The code cells of a notebook read as JSON, with their nbgrader grade_id (tolerant of odd metadata)."""
    cells = []
    for number, raw in enumerate(nb.get("cells", []), start=1):
        if not isinstance(raw, dict) or raw.get("cell_type") != "code":
            continue
        metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        nbgrader = metadata.get("nbgrader") if isinstance(metadata.get("nbgrader"), dict) else {}
        grade_id = nbgrader.get("grade_id") if isinstance(nbgrader.get("grade_id"), str) else None
        kind = "test" if nbgrader.get("grade") else "solution" if nbgrader.get("solution") else "setup"
        points = nbgrader.get("points", 0) if isinstance(nbgrader.get("points", 0), (int, float)) else 0
        cells.append(Cell(_text(raw.get("source", "")), grade_id, kind, float(points), number))
    return cells


def read_notebook(path: Path) -> dict[str, Any]:
    """A submitted notebook as JSON; :class:`SubmissionError` if it cannot be read as one."""
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(f"the notebook could not be read: it is {size / 2**20:.0f} MB (the limit is "
                              f"{MAX_NOTEBOOK_BYTES >> 20} MB; clear its outputs and submit it again)")
    try:
        nb = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"the notebook could not be read: it is not valid JSON (JSON error at line "
                              f"{exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise SubmissionError("the notebook could not be read: it is JSON but not a notebook (it has no cells)")
    return nb


def names(source: str) -> tuple[set[str], set[str]]:
    """(free, bound): the global names a cell reads before binding them, and the names it binds."""
    free: set[str] = set()
    bound: set[str] = set()
    if len(source) > MAX_ANALYSED_CHARS:
        return free, bound
    try:
        for stmt in ast.parse(strip_magics(source)).body:
            table = symtable.symtable(ast.unparse(stmt), "<cell>", "exec")
            free |= (_referenced(table) | _nested_globals(table)) - bound
            bound |= {s.get_name() for s in table.get_symbols()
                      if s.is_assigned() or s.is_imported() or s.is_namespace()}
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # the runner reports it; nothing to slice on
        pass
    return free, bound


def _referenced(table: symtable.SymbolTable) -> set[str]:
    return {s.get_name() for s in table.get_symbols() if s.is_referenced()}


def _nested_globals(table: symtable.SymbolTable) -> set[str]:
    found = set()
    for child in table.get_children():
        found |= {s.get_name() for s in child.get_symbols() if s.is_global() and s.is_referenced()}
        found |= _nested_globals(child)
    return found


class Lab:
    """A lab's source notebook (with solutions and hidden tests) and its released student version."""

    def __init__(self, lab_id: str, source: dict[str, Any], release: dict[str, Any]) -> None:
        self.id, self.source = lab_id, source
        cells = code_cells(source)
        last_test = max((i for i, c in enumerate(cells) if c.kind == "test"), default=-1)
        self.cells = cells[: last_test + 1]  # nothing after the last test is needed to grade
        self.tests = [Test(c.grade_id, c.points, c.source) for c in self.cells if c.kind == "test"]
        self.solutions = {c.grade_id: names(c.source)[1] for c in self.cells if c.kind == "solution"}
        self.graded = sorted(set().union(*self.solutions.values()))
        released = code_cells(release)
        self.stubs = {c.grade_id: c.source for c in released if c.kind == "solution"}
        self.release_tests = {c.grade_id: normalised(c.source) for c in released if c.kind == "test"}
        self.source_tests = {c.grade_id: normalised(c.source) for c in self.cells if c.kind == "test"}
        # cells of the lab (an unanswered solution cell too) that a student may keep without their metadata
        self.lab_texts = {normalised(c.source) for c in released}
        self.lab_texts |= {normalised(c.source) for c in cells if c.kind != "solution"}

    @property
    def max_score(self) -> float:
        return sum(t.points for t in self.tests)

    def setup_cells(self, extra_free: set[str]) -> set[int]:
        """Indices of the set-up cells the tests and the solutions need (by the names they read), and the imports."""
        info = {i: names(c.source) for i, c in enumerate(self.cells)}
        needed = set(extra_free).union(*(info[i][0] for i, c in enumerate(self.cells) if c.kind != "setup"))
        chosen = {i for i, c in enumerate(self.cells) if c.kind == "setup" and c.grade_id == "imports"}
        needed |= set().union(*(info[i][0] for i in chosen))
        grew = True
        while grew:
            grew = False
            for i, c in enumerate(self.cells):
                if c.kind == "setup" and i not in chosen and info[i][1] & needed:
                    chosen.add(i)
                    needed |= info[i][0]
                    grew = True
        return chosen

    def program(self, nb: dict[str, Any]) -> Program:
        """The runner's program for one submitted notebook, and the repairs it needed."""
        student = code_cells(nb)
        repairs = self._test_repairs(student)
        by_grade_id: dict[str, list[dict]] = {g: [] for g in self.solutions}
        owner = self._owners()
        pending: list[dict] = []
        counts = {g: 0 for g in self.solutions}
        for cell in student:
            if cell.grade_id in self.solutions:
                count = counts[cell.grade_id] = counts[cell.grade_id] + 1
                label = cell.grade_id if count == 1 else f"{cell.grade_id} (copy {count})"
                by_grade_id[cell.grade_id] += pending + [{"label": label, "source": cell.source}]
                pending = []
            elif cell.grade_id in owner:
                if owner[cell.grade_id]:
                    by_grade_id[owner[cell.grade_id]] += pending
                    pending = []
            elif normalised(cell.source) not in self.lab_texts:  # added or edited
                pending.append({"label": f"added cell {cell.number}", "source": cell.source, "definitions_only": True,
                                "binds": names(cell.source)[1]})
        if pending and self.solutions:
            by_grade_id[list(self.solutions)[-1]] += pending
        repairs += self._solution_repairs(counts, by_grade_id)
        free = set().union(*(names(c["source"])[0] for cells in by_grade_id.values() for c in cells))
        chosen = self.setup_cells(free)
        steps: list[dict[str, Any]] = []
        for i, cell in enumerate(self.cells):
            if cell.kind == "solution":
                cells = [{k: v for k, v in c.items() if k != "binds"} for c in by_grade_id[cell.grade_id]]
                steps.append({"kind": "student", "label": cell.grade_id, "cells": cells})
            elif cell.kind == "test":
                steps.append({"kind": "test", "id": cell.grade_id, "source": cell.source})
            elif i in chosen:
                steps.append({"kind": "setup", "label": cell.grade_id or f"cell {i + 1}", "source": cell.source})
        return Program(steps, self.tests, self.graded, repairs)

    def _owners(self) -> dict[str, str | None]:
        """grade_id of every lab cell -> the solution whose step loads just before it (None: before any)."""
        owner, current = {}, None
        for cell in self.cells:
            if cell.kind == "solution":
                current = cell.grade_id
            if cell.grade_id and cell.kind != "solution":
                owner[cell.grade_id] = current
        return owner

    def _solution_repairs(self, counts: dict[str, int], by_grade_id: dict[str, list[dict]]) -> list[str]:
        repairs = []
        for grade_id, count in counts.items():
            if count > 1:
                repairs.append(f"solution cell {grade_id} appeared {count} times: the copies were loaded in order "
                               f"(the last definition counts)")
            elif count == 0:
                wanted = self.solutions[grade_id]
                found = [c for cells in by_grade_id.values() for c in cells if c.get("binds", set()) & wanted]
                if found:
                    for c in found:
                        c["definitions_only"] = False
                    repairs.append(f"solution cell {grade_id} had lost its grading metadata: its code "
                                   f"({found[0]['label']}) was graded as usual")
                else:
                    by_grade_id[grade_id].append({"label": grade_id, "source": self.stubs.get(grade_id, "")})
                    repairs.append(f"solution cell {grade_id} was missing: the lab's empty version was restored")
        return repairs

    def _test_repairs(self, student: list[Cell]) -> list[str]:
        seen: dict[str, list[str]] = {t.id: [] for t in self.tests}
        stripped = set()
        for cell in student:
            if cell.grade_id in seen:
                seen[cell.grade_id].append(normalised(cell.source))
            elif cell.grade_id is None:
                stripped |= {g for g in seen if normalised(cell.source) in (self.release_tests.get(g),
                                                                           self.source_tests[g])}
        edited = [g for g, texts in seen.items() if texts and all(
            t not in (self.release_tests.get(g), self.source_tests[g]) for t in texts)]
        lost = [g for g, texts in seen.items() if not texts and g in stripped]
        deleted = [g for g, texts in seen.items() if not texts and g not in stripped]
        twice = [g for g, texts in seen.items() if len(texts) > 1]
        repairs = []
        for what, ids in [("edited test cells {} were restored from the lab before grading", edited),
                          ("deleted test cells {} were restored from the lab before grading", deleted),
                          ("test cells {} had lost their grading metadata and were restored from the lab", lost),
                          ("test cells {} appeared more than once: the lab's copy ran once", twice)]:
            if ids:
                repairs.append(what.format(", ".join(ids)))
        return repairs


def load_lab(lab_id: str, solutions: Path, labs: Path) -> Lab:
    """The lab ``lab_id`` from its source (``solutions/``) and its release (``labs/``)."""
    def read(folder: Path) -> dict[str, Any]:
        return json.loads((folder / lab_id / f"{lab_id}.ipynb").read_text(encoding="utf-8"))
    return Lab(lab_id, read(solutions), read(labs))
