"""Every exercise of the AudioLM chapters is solvable: each folded solution, put in place of its stub, passes its
check when the chapter runs top to bottom."""

import re

import nbformat
import pytest
from nbclient import NotebookClient

from helpers.paths import CHAPTERS_DIR

pytestmark = pytest.mark.slow
CHAPTERS = sorted((CHAPTERS_DIR / "audiolm").glob("*.ipynb"))
SOLUTION = re.compile(r"````\{admonition\} Solution.*?```python\n(.*?)```", re.S)
DEFINES = re.compile(r"^def (\w+)\(", re.M)


def with_solutions(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, list[str]]:
    """The notebook with each stub replaced by the solution that defines the same function; the names solved."""
    solutions = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for code in SOLUTION.findall(cell.source):
                for name in DEFINES.findall(code):
                    solutions[name] = code
    solved = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "raise NotImplementedError" in cell.source:
            name = DEFINES.search(cell.source).group(1)
            assert name in solutions, f"the stub {name} has no folded solution"
            cell.source = solutions[name]
            solved.append(name)
    return nb, solved


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_solution_passes_its_check(path):
    nb, solved = with_solutions(nbformat.read(path, as_version=4))
    assert solved, f"{path.name} has exercises"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    for name in solved:
        assert f"✓ {name} matches" in printed, f"{path.name}: the solution of {name} does not pass its check"
    assert "not written yet" not in printed
