"""Every chapter exercise's folded solution passes its check when it runs in place of the stub, a wrong solution
fails it, and every stub has exactly one solution (helpers.course.exercises)."""

from __future__ import annotations

import copy
import functools

import nbformat
import pytest

from helpers.course import exercises
from helpers.course.exercises import Exercise, Outcome, chapter_id, chapters, scan
from helpers.course.notebooks import load
from helpers.paths import CHAPTERS_DIR

CHAPTERS = chapters()
EXERCISES = [exercise for path in CHAPTERS for exercise in scan(path)[0]]
RMSNORM = CHAPTERS_DIR / "llama" / "01_rmsnorm_prenorm.ipynb"


def test_the_chapters_have_exercises():
    assert len(EXERCISES) >= 36
    assert "llama/01_rmsnorm_prenorm::exercise_2" in {e.id for e in EXERCISES}


@pytest.mark.parametrize("path", CHAPTERS, ids=chapter_id)
def test_every_stub_has_exactly_one_solution(path):
    found, problems = scan(path)
    assert not problems, "\n".join(problems)
    assert found, "a chapter ends with exercises: stubs, check_exercise cells and folded solutions"


@functools.cache
def outcomes(chapter: str) -> dict[str, Outcome]:
    """One run per chapter, with all its solutions in place (each exercise's case reads its own outcome)."""
    return exercises.run(CHAPTERS_DIR / f"{chapter}.ipynb", timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_solution_passes_its_check(exercise: Exercise):
    outcome = outcomes(exercise.chapter)[exercise.id]
    assert outcome.passed, f"{exercise.id} ({', '.join(exercise.names)}): {outcome.message}"


@pytest.mark.slow
def test_a_wrong_solution_fails_its_check():
    """RMSNorm without its square root, next to the right solution, in one kernel: only the wrong one fails."""
    nb = load(RMSNORM)
    first = scan(RMSNORM)[0][0]
    broken = first.code.replace("torch.rsqrt(", "torch.reciprocal(")
    assert broken != first.code and first.names == ("rms_norm_no_gain",)
    setup = next(c for c in nb.cells if c.cell_type == "code" and "seed_everything(0)" in c.source)
    stub, check = nb.cells[first.stub], nb.cells[first.check]
    nb.cells = [setup, stub, check, copy.deepcopy(stub), copy.deepcopy(check)]
    wrong = Exercise("rmsnorm", 1, first.names, stub=1, check=2, solution=-1, code=broken)
    right = Exercise("rmsnorm", 2, first.names, stub=3, check=4, solution=-1, code=first.code)
    result = exercises.run_solved(nb, [wrong, right], RMSNORM.parent, timeout=120)
    assert result[right.id].passed, result[right.id].message
    assert not result[wrong.id].passed
    assert "CheckError: input 1 of 3: rms_norm_no_gain" in result[wrong.id].message
    assert "values differ" in result[wrong.id].message


def notebook(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    return nbformat.v4.new_notebook(cells=[make[kind](source) for kind, source in cells])


STUB = ("code", 'def double(x):\n    # x: a number\n    raise NotImplementedError("Return 2x.")')
CHECK = ("code", 'solved = check_exercise(double, lambda x: x + x, [1.0, 2.0], name="double")')
SOLUTION = ("markdown", "````{admonition} Solution\n:class: dropdown\n```python\ndef double(x):\n    return 2 * x\n"
                        "```\n\nAny other way of doubling passes too.\n````")


def scan_cells(tmp_path, *cells):
    path = tmp_path / "chapter.ipynb"
    nbformat.write(notebook(*cells), path)
    return scan(path)


def test_an_exercise_is_a_stub_a_check_and_a_solution(tmp_path):
    (exercise,), problems = scan_cells(tmp_path, ("markdown", "## Exercises"), STUB, CHECK, SOLUTION)
    assert problems == []
    assert (exercise.names, exercise.stub, exercise.check, exercise.solution) == (("double",), 1, 2, 3)
    assert exercise.code == "def double(x):\n    return 2 * x\n"
    assert exercise.id == "chapter::exercise_1"


@pytest.mark.parametrize(("cells", "problem"), [
    ((STUB, CHECK), "the stub of double (cell 0) has no Solution blocks; it needs exactly one"),
    ((STUB, CHECK, SOLUTION, SOLUTION), "the stub of double (cell 0) has 2 (cells [2, 3]) Solution blocks"),
    ((CHECK, SOLUTION), "the Solution block in cell 1 (defining ['double']) matches no stub"),
    ((STUB, ("code", "print(double)"), SOLUTION), "the stub of double (cell 0) is not followed by a code cell "
                                                  "that calls check_exercise"),
    ((STUB, CHECK, ("markdown", "````{admonition} Solution\nWrite `2 * x`.\n````")),
     "the Solution block in cell 2 has no single ```python fence"),
])
def test_a_stub_without_its_one_solution_is_reported(tmp_path, cells, problem):
    _, problems = scan_cells(tmp_path, *cells)
    assert any(problem in p for p in problems), problems
    with pytest.raises(exercises.ExerciseError, match="chapter: "):
        exercises.find_exercises(tmp_path / "chapter.ipynb")


def test_only_a_function_that_raises_not_implemented_is_a_stub():
    source = ("def helper(x):\n    if x:\n        raise NotImplementedError('a later exercise')\n    return x\n\n\n"
              "def todo(x):\n    y = x\n    raise NotImplementedError\n")
    assert [f.name for f in exercises.stub_functions(source)] == ["todo"]
    assert exercises.stub_functions("%matplotlib inline\nimport torch") == []


def test_the_solution_replaces_the_stub_and_keeps_the_rest_of_the_cell():
    source = 'GREETING = "hi"\n\n\ndef greet(name):\n    raise NotImplementedError("Say hi.")\n\n\nprint(1)'
    solution = "def greet(name):\n    return f'{GREETING} {name}'\n"
    assert exercises.with_solution(source, solution) == (
        'GREETING = "hi"\n\n\ndef greet(name):\n    return f\'{GREETING} {name}\'\n\n\nprint(1)')


def executed(text: str = "", error: tuple[str, str] | None = None) -> nbformat.NotebookNode:
    nb = notebook(STUB, CHECK)
    if text:
        nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    if error:
        nb.cells[1].outputs.append(nbformat.v4.new_output("error", ename=error[0], evalue=error[1], traceback=[]))
    return nb


@pytest.mark.parametrize(("nb", "passed", "message"), [
    (executed("✓ double matches the expected answer on 2 inputs\n"), True, "✓ double matches"),
    (executed("◻ double: not written yet. Replace the `raise NotImplementedError` above\n"), False,
     "the check still says 'not written yet'"),
    (executed(error=("CheckError", "input 1 of 2: double(1.0): got 3, expected 2")), False,
     "cell 1 raised CheckError: input 1 of 2"),
    (executed("done\n"), False, "the check printed no ✓"),
])
def test_the_verdict_is_read_from_the_check_cell(nb, passed, message):
    exercise = Exercise("chapter", 1, ("double",), stub=0, check=1, solution=2, code="")
    outcome = exercises.verdict(nb, exercise)
    assert outcome.passed is passed and message in outcome.message


def test_the_minimal_notebook_keeps_what_the_exercise_needs():
    nb = notebook(("code", "%matplotlib inline\nimport torch\nfrom helpers.checks import check_exercise"),
                  ("code", "SCALE = 2\nplot_data = torch.arange(3)\nprint(plot_data)"),  # SCALE is needed
                  ("code", "cache = []\ncache.append(SCALE)"),                        # changes cache: needed
                  ("code", "import time\nstart = time.time()\nslow = sum(range(10))"),  # nothing needed
                  ("code", "def double(x):\n    raise NotImplementedError"),
                  ("code", "check_exercise(double, lambda x: x * SCALE + 0 * len(cache), [1.0], name='double')"))
    exercise = Exercise("chapter", 1, ("double",), stub=4, check=5, solution=-1,
                        code="def double(x):\n    return SCALE * x\n")
    cells = [c.source for c in exercises.minimal(nb, [exercise]).cells]
    assert cells[0].startswith("get_ipython().run_line_magic('matplotlib', 'inline')\nimport torch")
    assert cells[1] == "SCALE = 2"
    assert cells[2] == "cache = []\ncache.append(SCALE)"
    assert cells[3] == ""
    assert cells[4].rstrip() == "def double(x):\n    return SCALE * x"
