"""The chapters' exercises: find each stub, its check and its folded solution, and run the solutions.

An exercise is three cells of a chapter:

1. the **stub**: a code cell defining a function whose body raises ``NotImplementedError`` (a top-level ``raise``
   statement of the function, not one inside an ``if``);
2. the **check**: the next code cell, which calls ``helpers.checks.check_exercise`` (it prints ✓ for a right answer,
   "◻ … not written yet" for the stub, and raises on a wrong answer);
3. the **solution**: a Markdown cell holding a folded ````` ````{admonition} Solution ````` block with one
   ```` ```python ```` fence that defines the stub's function(s) (with the same names).

Each stub needs exactly one solution and each solution exactly one stub. :func:`run` executes a copy of the chapter
in which every stub function is replaced by its solution, and reads each check cell's verdict. The copy keeps only
the code the exercises need (:func:`needed_code`): a chapter's figures, timings and training runs are skipped unless
an exercise reads what they compute.

    python -m helpers.course.exercises check [--whole] [PATH ...]   # every solution in place of its stub (authors)
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import re
import symtable
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers.course.notebooks import SETUP_TAG, NotebookError, load, relative
from helpers.paths import CHAPTERS_DIR

# The folded block and its code: ````{admonition} Solution … ```python … ``` … ````
SOLUTION_BLOCK = re.compile(r"\{admonition\}\s*Solution\b(?P<body>.*?)(?=\{admonition\}|\Z)", re.DOTALL)
PYTHON_FENCE = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
CHECK_CALL = "check_exercise("
PASSED, UNWRITTEN = "✓", "not written yet"


class ExerciseError(Exception):
    """A chapter whose exercises cannot be paired with their solutions; the message lists what is wrong."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of a chapter: its stub cell, its check cell and its solution's code."""

    chapter: str  # relative to chapters/, without the suffix: "llama/01_rmsnorm_prenorm"
    number: int  # 1, 2, … in the order of the chapter
    names: tuple[str, ...]  # the functions the stub leaves unwritten
    stub: int  # cell indices
    check: int
    solution: int
    code: str  # the solution's Python code

    @property
    def id(self) -> str:
        return f"{self.chapter}::exercise_{self.number}"


@dataclass(frozen=True)
class Outcome:
    """What an exercise's check cell said when it ran with the solution in place of the stub."""

    passed: bool
    message: str


def chapter_id(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return path.relative_to(CHAPTERS_DIR).with_suffix("").as_posix()
    except ValueError:
        return path.stem


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:  # IPython magics (%matplotlib): such a cell holds no stub
        return None


def _raises_not_implemented(statement: ast.stmt) -> bool:
    if not isinstance(statement, ast.Raise) or statement.exc is None:
        return False
    exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def stub_functions(source: str) -> list[ast.FunctionDef]:
    """The top-level functions of a code cell whose body raises NotImplementedError (the exercise's stubs)."""
    tree = _parse(source)
    if tree is None:
        return []
    return [node for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(_raises_not_implemented(statement) for statement in node.body)]


def solution_codes(markdown: str) -> list[str | None]:
    """The Python code of every Solution block of a Markdown cell (None for a block without a ```python fence)."""
    codes = []
    for block in SOLUTION_BLOCK.finditer(markdown):
        fences = PYTHON_FENCE.findall(block["body"])
        codes.append(fences[0] if len(fences) == 1 else None)
    return codes


def defined_functions(code: str) -> set[str]:
    tree = _parse(code)
    return set() if tree is None else {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def scan(path: Path) -> tuple[list[Exercise], list[str]]:
    """A chapter's exercises, paired with their solutions, and one sentence per problem found on the way."""
    nb = load(path)
    name = chapter_id(path)
    problems: list[str] = []
    stubs = []  # (cell, names, check cell)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not (functions := stub_functions(cell.source)):
            continue
        names = tuple(f.name for f in functions)
        after = next((j for j in range(i + 1, len(nb.cells)) if nb.cells[j].cell_type == "code"), None)
        if after is None or CHECK_CALL not in nb.cells[after].source:
            problems.append(f"{name}: the stub of {', '.join(names)} (cell {i}) is not followed by a code cell "
                            f"that calls check_exercise.")
            continue
        stubs.append((i, names, after))
    solutions = []  # (cell, code)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for code in solution_codes(cell.source):
            if code is None:
                problems.append(f"{name}: the Solution block in cell {i} has no single ```python fence.")
            else:
                solutions.append((i, code))
    matched: dict[int, list[tuple[int, str]]] = {stub: [] for stub, _, _ in stubs}
    for i, code in solutions:
        defined = defined_functions(code)
        owners = [stub for stub, names, _ in stubs if set(names) <= defined]
        if len(owners) != 1:
            what = "no stub" if not owners else f"{len(owners)} stubs (cells {owners})"
            problems.append(f"{name}: the Solution block in cell {i} (defining {sorted(defined) or 'no function'}) "
                            f"matches {what}; it must define the function(s) of exactly one stub.")
            continue
        matched[owners[0]].append((i, code))
    exercises = []
    for stub, names, check in stubs:
        found = matched[stub]
        if len(found) != 1:
            cells = f"{len(found)} (cells {[i for i, _ in found]})" if found else "no"
            problems.append(f"{name}: the stub of {', '.join(names)} (cell {stub}) has {cells} Solution blocks; "
                            f"it needs exactly one.")
            continue
        exercises.append(Exercise(name, len(exercises) + 1, names, stub, check, found[0][0], found[0][1]))
    return exercises, problems


def find_exercises(path: Path) -> list[Exercise]:
    """A chapter's exercises; :class:`ExerciseError` if a stub and its solution cannot be paired."""
    exercises, problems = scan(path)
    if problems:
        raise ExerciseError(" ".join(problems))
    return exercises


def _first_line(node: ast.stmt) -> int:
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])


def with_solution(source: str, code: str) -> str:
    """A stub cell's source with its stub function(s) replaced by the solution's code (the rest of the cell kept)."""
    lines = source.splitlines()
    functions = stub_functions(source)
    spans = [(_first_line(f) - 1, f.end_lineno) for f in functions]
    for k, (start, end) in reversed(list(enumerate(spans))):
        lines[start:end] = code.rstrip("\n").splitlines() if k == 0 else []
    return "\n".join(lines)


def solved(nb, exercises: list[Exercise]):
    """A copy of a chapter notebook with every stub replaced by its solution, ending at the last check cell."""
    nb = copy.deepcopy(nb)
    for exercise in exercises:
        cell = nb.cells[exercise.stub]
        cell.source = with_solution(cell.source, exercise.code)
    if exercises:
        nb.cells = nb.cells[: max(e.check for e in exercises) + 1]
    return nb


# Methods that change their object (besides torch's in-place ones, whose names end in _).
CHANGING_METHODS = {"append", "extend", "insert", "remove", "pop", "popitem", "clear", "update", "add", "discard",
                    "setdefault", "sort", "reverse", "load_state_dict", "train", "eval", "zero_grad", "backward",
                    "step", "retain_grad", "apply", "to", "cuda", "cpu", "half", "float", "double", "bfloat16",
                    "manual_seed", "seed", "shuffle", "set_state", "write", "close", "register_buffer",
                    "register_parameter", "register_forward_hook", "register_forward_pre_hook", "register_hook"}


def _python(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager  # magics (%matplotlib) become Python calls

    return TransformerManager().transform_cell(source)


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Starred | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _reads_and_binds(statements: list[ast.stmt]) -> tuple[set[str], set[str]]:
    """The global names some statements read (also inside the functions they define) and the names they may bind."""
    table = symtable.symtable(ast.unparse(ast.Module(body=statements, type_ignores=[])), "<cell>", "exec")
    reads = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    binds = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    scopes = list(table.get_children())
    while scopes:
        scope = scopes.pop()
        reads |= {s.get_name() for s in scope.get_symbols() if s.is_global()}
        binds |= {s.get_name() for s in scope.get_symbols() if s.is_declared_global() and s.is_assigned()}
        scopes.extend(scope.get_children())
    return reads, binds


def _target_names(targets: list[ast.expr]) -> set[str]:
    names: set[str] = set()
    while targets:
        target = targets.pop()
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, ast.Tuple | ast.List):
            targets.extend(target.elts)
        elif isinstance(target, ast.Starred):
            targets.append(target.value)
    return names


def _kills(statement: ast.stmt) -> set[str]:
    """The names a top-level statement always rebinds (their earlier values are not read after it)."""
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in statement.names}
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {statement.name}
    if isinstance(statement, ast.Assign):
        return _target_names(list(statement.targets))
    if isinstance(statement, ast.AnnAssign) and statement.value or isinstance(statement, ast.For):
        return _target_names([statement.target])  # a loop's variable: its value before the loop is not read
    return set()


def _reads(statement: ast.stmt) -> set[str]:
    if isinstance(statement, ast.For):  # the body reads the loop's variable, not what it held before the loop
        body = _reads_and_binds([*statement.body, *statement.orelse])[0] - _kills(statement)
        return _reads_and_binds([ast.Expr(statement.iter)])[0] | body
    return _reads_and_binds([statement])[0]


def _changes(statement: ast.stmt, own_functions: set[str]) -> set[str]:
    """The names whose objects a statement may change in place: stored into (x[i] = …, x.a = …), a changing method
    called (x.append(…), model.load_state_dict(…), w.mul_(…)), or passed to a function of the chapter (train(model))."""
    changed: set[str | None] = set()
    nodes: list[ast.AST] = [statement]
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            nodes.extend(node.decorator_list)  # a body runs when it is called: the call is seen where it happens
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Attribute | ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            changed.add(_root(node.value))
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and (func.attr in CHANGING_METHODS or func.attr.endswith("_")):
                changed.add(_root(func.value))
            if isinstance(func, ast.Name) and func.id in own_functions:
                changed |= {_root(a) for a in [*node.args, *(k.value for k in node.keywords)]}
        nodes.extend(ast.iter_child_nodes(node))
    return {name for name in changed if name}


def needed_code(nb, targets: set[int]) -> dict[int, str]:
    """The code that the cells ``targets`` need, cell by cell (a cell that needs none is left out).

    Going backwards from the last target, a top-level statement is kept when it binds a name that later kept code
    reads, or may change that name's object in place (see :func:`_changes`). Targets are kept whole, and so are the
    set-up cells (the Colab cell and the chapter's first code cell, which imports, seeds and sets the threads) and
    any cell that cannot be parsed. What only draws, prints, times or checks something nothing later reads is left
    out."""
    sources = {i: _python(c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code" and i <= max(targets)}
    parsed = {i: _parse(source) for i, source in sources.items()}
    statements = [s for tree in parsed.values() if tree for s in tree.body]
    modules = {n for s in statements if isinstance(s, ast.Import | ast.ImportFrom) for n in _kills(s)}
    own_functions = {s.name for s in statements if isinstance(s, ast.FunctionDef)}
    chapter_code = [i for i in sources if SETUP_TAG not in nb.cells[i].get("metadata", {}).get("tags", [])]
    setup = {i for i in sources if i <= min(chapter_code, default=-1)}  # Colab's cell, then imports and seeds
    needed: set[str] = set()
    kept: dict[int, str] = {}
    for i in sorted(sources, reverse=True):
        tree = parsed[i]
        if tree is None:
            kept[i] = nb.cells[i].source
            continue
        whole = i in targets or i in setup
        lines = sources[i].splitlines()
        keep = []
        for statement in reversed(tree.body):
            binds = _reads_and_binds([statement])[1] | (_changes(statement, own_functions) - modules)
            if whole or binds & needed:
                keep.append(statement)
                needed = (needed - _kills(statement)) | _reads(statement)
        if keep:
            kept[i] = sources[i] if whole else "\n".join("\n".join(lines[_first_line(s) - 1:s.end_lineno])
                                                         for s in reversed(keep))
    return kept


def minimal(nb, exercises: list[Exercise]):
    """A solved copy of a chapter (see :func:`solved`) keeping only the code its exercises need."""
    nb = solved(nb, exercises)
    kept = needed_code(nb, {e.stub for e in exercises} | {e.check for e in exercises})
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = kept.get(i, "")  # every cell keeps its index: each exercise's cells are where they were
    return nb


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return str(output.get("data", {}).get("text/plain", ""))


def _first_error(cells, start: int, stop: int) -> str | None:
    for i in range(start, stop):
        for output in cells[i].get("outputs", []):
            if output.get("output_type") == "error":
                return f"cell {i} raised {output.get('ename')}: {output.get('evalue')}"
    return None


def verdict(nb, exercise: Exercise) -> Outcome:
    """Read an executed (solved) notebook's check cell: passed when it printed ✓, raised nothing, and no stub
    was left unwritten."""
    error = _first_error(nb.cells, exercise.stub, exercise.check + 1)
    if error:
        earlier = _first_error(nb.cells, 0, exercise.stub)
        return Outcome(False, error + (f" (and before the exercise, {earlier})" if earlier else ""))
    text = "".join(_text(o) for o in nb.cells[exercise.check].get("outputs", []))
    if UNWRITTEN in text:
        return Outcome(False, f"the check still says {UNWRITTEN!r}: {text.strip()}")
    if PASSED not in text:
        return Outcome(False, f"the check printed no {PASSED}: {text.strip()!r}")
    return Outcome(True, text.strip())


def run_solved(nb, exercises: list[Exercise], folder: Path, timeout: int = 600, whole: bool = False
               ) -> dict[str, Outcome]:
    """Execute ``nb`` in ``folder`` with every solution in place of its stub, keeping only the code the exercises
    need (:func:`minimal`; all of it up to the last check with ``whole``); each exercise's outcome by id."""
    from nbclient import NotebookClient

    nb = solved(nb, exercises) if whole else minimal(nb, exercises)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, record_timing=False,
                            resources={"metadata": {"path": str(folder)}})
    stopped = ""
    try:
        client.execute(env=env)
    except Exception as exc:  # a cell ran past the timeout or the kernel died: what ran still has its verdict
        stopped = f" (the run stopped: {type(exc).__name__}: {str(exc).strip()[:300]})"
    outcomes = {exercise.id: verdict(nb, exercise) for exercise in exercises}
    return {key: o if o.passed else Outcome(False, o.message + stopped) for key, o in outcomes.items()}


def run(path: Path, timeout: int = 600, whole: bool = False) -> dict[str, Outcome]:
    """Run a chapter once with all its solutions in place of the stubs; each exercise's outcome by id."""
    path = Path(path)
    return run_solved(load(path), find_exercises(path), path.parent, timeout, whole)


def chapters() -> list[Path]:
    return sorted(p for p in CHAPTERS_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course.exercises", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="run every solution in place of its stub and report each check")
    p.add_argument("--whole", action="store_true", help="run all the chapter's code, not only what the exercises need")
    p.add_argument("paths", nargs="*", type=Path, help="chapters (default: every chapter)")
    args = parser.parse_args(argv)
    failed = False
    for path in args.paths or chapters():
        try:
            outcomes = run(path, whole=args.whole)
        except (NotebookError, ExerciseError) as exc:
            print(exc, file=sys.stderr)
            return 1
        for exercise_id, outcome in outcomes.items():
            failed = failed or not outcome.passed
            print(f"✓ {exercise_id}" if outcome.passed else f"✗ {exercise_id}: {outcome.message}")
        if not outcomes:
            print(f"  {relative(path)}: no exercises")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
