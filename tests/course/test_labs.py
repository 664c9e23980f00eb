"""labs/ is exactly what nbgrader generates from solutions/, and each lab is a proper nbgrader assignment."""

import json

import pytest

from helpers.course.labs import differences, lab_ids
from helpers.course.notebooks import load, setup_source
from helpers.course.submission import code_cells, names
from helpers.paths import LABS_DIR, SOLUTIONS_DIR

pytestmark = pytest.mark.slow


def test_committed_labs_equal_nbgrader_generation():
    assert differences() == [], "labs/ differs from nbgrader's output: run `make labs` and commit"


@pytest.mark.parametrize("lab", lab_ids())
def test_lab_has_graded_parts_with_visible_and_hidden_tests(lab):
    source = load(SOLUTIONS_DIR / lab / f"{lab}.ipynb")
    student = load(LABS_DIR / lab / f"{lab}.ipynb")
    tests = [c for c in source.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
    assert len(tests) >= 2, "a lab has at least two graded parts"
    for cell in tests:
        assert cell.metadata.nbgrader["points"] > 0
        assert "### BEGIN HIDDEN TESTS" in cell.source, f"{cell.metadata.nbgrader.grade_id} has no hidden tests"
        visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
        assert any(word in visible for word in ("assert", "check_")), "every part has a visible test"
    released = "\n".join(c.source for c in student.cells)
    assert "BEGIN HIDDEN TESTS" not in released and "### BEGIN SOLUTION" not in released
    assert released.count("raise NotImplementedError(") >= len(tests)
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")


@pytest.mark.parametrize("lab", lab_ids())
def test_no_test_cell_reads_what_only_another_test_cell_defines(lab):
    """Each part is graded on its own: a test that failed before defining a name (or was skipped when the grader
    restarted its runner after a time-out) must not cost the tests after it. Shared fixtures go in a locked cell."""
    defined_outside_tests: set[str] = set()
    defined_by_test: dict[str, str] = {}
    for cell in code_cells(json.loads((SOLUTIONS_DIR / lab / f"{lab}.ipynb").read_text(encoding="utf-8"))):
        read, bound = names(cell.source)
        if cell.kind != "test":
            defined_outside_tests |= set(bound)
            continue
        borrowed = {name: defined_by_test[name] for name in set(read) - set(bound)
                    if name in defined_by_test and name not in defined_outside_tests}
        assert not borrowed, f"{cell.grade_id} reads names that only other test cells define: {borrowed}"
        for name in bound:
            defined_by_test.setdefault(name, cell.grade_id)


@pytest.mark.parametrize("lab", lab_ids())
def test_lab_takes_the_profiles_threads(lab):
    """Every lab sets torch's threads with helpers.profile.set_threads in its first code cell after the Colab set-up,
    so that its saved runs name the thread count they were measured with and a student can change it in one place."""
    cells = [c for c in load(SOLUTIONS_DIR / lab / f"{lab}.ipynb").cells if c.cell_type == "code"]
    assert cells[0].source.strip() == setup_source(), f"{lab}'s first code cell must be the Colab set-up cell"
    assert "\nset_threads()" in cells[1].source, f"{lab}'s first code cell after it must call set_threads()"
    assert not any("torch.set_num_threads(" in c.source for c in cells), f"{lab} sets threads outside set_threads"
