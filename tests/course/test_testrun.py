"""helpers.course.testrun: the runner's last line of defence, for code that got past helpers.course.restricted anyway.

After each test the runner compares the course's and torch's modules and classes with what they were; whatever a
student's code put there (or a table of the course it changed) fails that test and restarts the runner.
"""

import dataclasses

import pytest
import torch

import helpers.llama.chat
from helpers.course import restricted, testrun


def escaped(source):
    """A function compiled as if from a student's cell (what an escape would smuggle into the course)."""
    namespace = {}
    exec(compile(source, f"{restricted.STUDENT_FILE}escape>", "exec"), namespace)  # noqa: S102
    return namespace["f"]


@pytest.fixture
def before():
    return testrun.fingerprint()


def test_a_student_function_put_into_torch_is_seen(before, monkeypatch):
    monkeypatch.setattr(torch, "allclose", escaped("def f(*args, **kwargs):\n    return True"))
    monkeypatch.setattr(torch.nn.Linear, "forward", escaped("def f(self, x):\n    return x"))
    assert set(testrun.changes(before)) == {"torch.allclose", "torch.nn.modules.linear.Linear.forward"}


def test_a_method_generated_onto_a_course_class_is_seen(before):
    try:
        dataclasses.dataclass(eq=True)(torch.nn.Identity)  # adds __eq__ (and __init__ is kept)
        assert "torch.nn.modules.linear.Identity.__eq__" in testrun.changes(before)
    finally:
        del torch.nn.Identity.__eq__
        del torch.nn.Identity.__dataclass_fields__, torch.nn.Identity.__dataclass_params__
        torch.nn.Identity.__hash__ = object.__hash__
    assert testrun.changes(before) == []


def test_a_changed_course_table_is_seen_and_library_rewrapping_is_not(before, monkeypatch):
    monkeypatch.setitem(helpers.llama.chat.MARGINS["small"], next(iter(helpers.llama.chat.MARGINS["small"])), 123.0)
    original = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda seed: original(seed))  # as transformers does on import
    assert testrun.changes(before) == ["helpers.llama.chat.MARGINS"]


def test_a_runner_describes_errors_in_one_true_line():
    not_loaded = {"rms_norm": "line 3 uses the module os, which graded code may not use"}
    try:
        raise AssertionError("wrapped") from NameError("name 'rms_norm' is not defined", name="rms_norm")
    except AssertionError as exc:
        assert testrun.describe(exc, not_loaded, 1 << 30) == f"rms_norm was not loaded: {not_loaded['rms_norm']}"
    assert testrun.describe(RuntimeError("DefaultCPUAllocator: can't allocate memory: 12 GB"), {}, 4 << 30) == \
        "ran out of memory: a submission may use 4 GB"
    assert testrun.describe(KeyboardInterrupt(), {}, 1) == "KeyboardInterrupt raised by the code (not a time-out)"
    assert testrun.hidden_lines("a\n### BEGIN HIDDEN TESTS\nb\n### END HIDDEN TESTS\nc") == frozenset({2, 3, 4})
