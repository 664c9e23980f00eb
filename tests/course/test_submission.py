"""helpers.course.submission: which of a student's cells are graded, what comes from the lab, and what was repaired."""

import copy
import json

import pytest

from helpers.course.submission import SubmissionError, load_lab, read_notebook
from helpers.paths import LABS_DIR, SOLUTIONS_DIR

LAB = "lab0_warmup"


@pytest.fixture(scope="module")
def lab():
    return load_lab(LAB, SOLUTIONS_DIR, LABS_DIR)


def solution():
    return json.loads((SOLUTIONS_DIR / LAB / f"{LAB}.ipynb").read_text())


def index(nb, grade_id):
    return next(i for i, c in enumerate(nb["cells"]) if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def student_cells(program, label):
    return next(s["cells"] for s in program.steps if s["kind"] == "student" and s["label"] == label)


def test_tests_and_set_up_come_from_the_lab_with_their_hidden_tests(lab):
    nb = solution()
    nb["cells"][index(nb, "rms_norm_tests")]["source"] = "pass  # tests removed"
    program = lab.program(nb)
    kinds = [(s["kind"], s.get("label") or s.get("id")) for s in program.steps]
    assert kinds == [("setup", "imports"), ("student", "rms_norm"), ("test", "rms_norm_tests"),
                     ("setup", "post_norm_block"), ("student", "pre_norm_block"), ("test", "pre_norm_block_tests"),
                     ("setup", "stack"), ("student", "gradient_norms"), ("test", "gradient_norms_tests")]
    tests = [s for s in program.steps if s["kind"] == "test"]
    assert all("### BEGIN HIDDEN TESTS" in s["source"] for s in tests)
    assert program.repairs == ["edited test cells rms_norm_tests were restored from the lab before grading"]
    assert program.graded == ["PreNormBlock", "gradient_norms", "rms_norm"] and lab.max_score == 10


def test_an_untouched_solution_needs_no_repair(lab):
    assert lab.program(solution()).repairs == []
    release = json.loads((LABS_DIR / LAB / f"{LAB}.ipynb").read_text())
    program = lab.program(release)
    assert program.repairs == [] and "NotImplementedError" in student_cells(program, "rms_norm")[0]["source"]


def test_duplicated_deleted_and_stripped_cells_are_found_and_reported(lab):
    nb = solution()
    cells = nb["cells"]
    cells.insert(index(nb, "rms_norm") + 1, copy.deepcopy(cells[index(nb, "rms_norm")]))  # pasted twice
    del cells[index(nb, "pre_norm_block_tests")]  # deleted
    cells[index(nb, "gradient_norms_tests")]["metadata"] = {}  # stripped of its metadata
    cells[index(nb, "pre_norm_block")]["metadata"] = {}  # a solution cell stripped of its metadata
    program = lab.program(nb)
    assert [c["label"] for c in student_cells(program, "rms_norm")] == ["rms_norm", "rms_norm (copy 2)"]
    moved = student_cells(program, "pre_norm_block")
    assert len(moved) == 1 and moved[0]["label"].startswith("added cell") and not moved[0]["definitions_only"]
    assert program.repairs == [
        "deleted test cells pre_norm_block_tests were restored from the lab before grading",
        "test cells gradient_norms_tests had lost their grading metadata and were restored from the lab",
        "solution cell rms_norm appeared 2 times: the copies were loaded in order (the last definition counts)",
        "solution cell pre_norm_block had lost its grading metadata: its code (added cell 11) was graded as usual"]


def test_a_deleted_solution_gets_the_labs_empty_version_and_added_cells_load_in_place(lab):
    nb = solution()
    del nb["cells"][index(nb, "gradient_norms")]
    added = {"cell_type": "code", "metadata": {}, "source": "def helper():\n    return 1"}
    nb["cells"].insert(index(nb, "rms_norm"), added)
    program = lab.program(nb)
    assert program.repairs == ["solution cell gradient_norms was missing: the lab's empty version was restored"]
    assert "NotImplementedError" in student_cells(program, "gradient_norms")[0]["source"]
    first = student_cells(program, "rms_norm")
    assert first[0]["definitions_only"] and "def helper" in first[0]["source"]  # before rms_norm, as in the notebook


def test_unreadable_notebooks_get_a_reason(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [')
    with pytest.raises(SubmissionError, match="could not be read: it is not valid JSON \\(JSON error at line 1"):
        read_notebook(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(SubmissionError, match="JSON but not a notebook"):
        read_notebook(bad)
