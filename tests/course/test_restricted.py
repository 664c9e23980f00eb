"""helpers.course.restricted: the labs' solutions load untouched; a student's code cannot reach or patch the tests."""

import json
import typing

import pytest
import torch

import helpers.checks
from helpers.course import restricted
from helpers.course.labs import lab_ids
from helpers.course.restricted import Refused, StudentGlobals, load_cell, plan
from helpers.paths import SOLUTIONS_DIR


@pytest.fixture(scope="module", autouse=True)
def audit_hook():
    restricted.install_audit_hook()  # acts only while code compiled from a student's cell is on the stack


def student(lab=None, setup=("torch", "nn"), graded=()):
    lab = {"torch": torch, "nn": torch.nn, **(lab or {})}
    names = set(setup) | set(graded)
    return StudentGlobals(lab, lambda: names), set(graded)


@pytest.mark.parametrize("lab", lab_ids())
def test_every_solution_cell_of_every_lab_loads_as_written(lab):
    nb = json.loads((SOLUTIONS_DIR / lab / f"{lab}.ipynb").read_text())
    cells = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code"]
    assert cells
    for cell in cells:
        statements, report = plan("".join(cell["source"]))
        assert statements and not report.not_loaded and not report.skipped, (cell["metadata"], report)


ATTACKS = [  # (cell, expression that uses it, what the refusal names)
    ("import os", None, "the module os"),
    ("import subprocess", None, "the module subprocess"),
    ("def f():\n    return ().__class__.__bases__[0].__subclasses__()", None, "the attribute __class__"),
    ("def f():\n    return f.__globals__", None, "the attribute __globals__"),
    ("def f():\n    return torch._C", None, "the private attribute _C"),
    ("def f():\n    return eval('1')", None, "`eval`"),
    ("def f():\n    return open('/etc/passwd').read()", None, "`open`"),
    ("def f():\n    global assert_close\n    assert_close = None", None, "`global`"),
    ("class Liar:\n    def __eq__(self, other):\n        return True", None, "the special method __eq__"),
    ("class T(torch.Tensor):\n    @classmethod\n    def __torch_function__(cls, *a, **k):\n        return True", None,
     "the special method __torch_function__"),
    ("def f():\n    return type('X', (), {'__eq__': print})", None, "type(name, bases, namespace)"),
    ("def f():\n    return torch.load", None, "`.load`"),
    ("def f():\n    return torch.empty(1).as_strided((9,), (1,))", None, "`.as_strided`"),
    ("def f(m):\n    m.register_forward_hook(print)", None, "`.register_forward_hook`"),
    ("def f():\n    return torch.sys.modules", "f()", "the module sys"),
    ("def f():\n    return torch.os.system('true')", "f()", "the module os"),
    ("def f():\n    torch.allclose = lambda *a, **k: True", "f()", "may not change torch"),
    ("def f():\n    import helpers.checks as c\n    c.assert_close = print", "f()", "change helpers.checks"),
    ("def f():\n    setattr(torch.nn.Module, 'forward', print)", "f()", "may not change Module"),
    ("def f():\n    return getattr(torch, '__dict__')", "f()", "the attribute __dict__"),
    ("def f():\n    return type(torch.Tensor)", "f()", "metaclasses"),
    ("def f():\n    return torch.nn.modules.module", "f()", "the module torch.nn.modules"),
    ("def f():\n    from helpers.course import grading", None, "the module helpers.course"),
    ("def f():\n    import helpers.course.testrun", None, "the module helpers.course.testrun"),
    ("def f():\n    def g():\n        yield 1\n    return g().gi_frame", None, "`.gi_frame`"),
    ("class T(torch.Tensor):\n    pass", None, "may not subclass Tensor"),
    ("def f():\n    class T(torch.Tensor):\n        pass", "f()", "may not subclass Tensor"),
    ("def f():\n    import dataclasses\n    dataclasses.dataclass(eq=True)(torch.nn.Identity)", None,
     "`.dataclass` other than as a class decorator"),
    ("from dataclasses import dataclass\nlie = dataclass(eq=True)", None, "`dataclass` other than as a class"),
    ("def f():\n    import dataclasses\n    return getattr(dataclasses, 'dataclass')", "f()", "other than as a class"),
    ("def f(g):\n    import functools\n    functools.update_wrapper(torch.nn.Linear, g, ('forward',), ())", None,
     "`.update_wrapper`"),
    ("def f(model):\n    from helpers.llama.training import save_hf\n    save_hf(model, '/proc/self/fd/1')", None,
     "`.save_hf`"),
    ("def f():\n    from helpers.paths import REPO_ROOT\n    (REPO_ROOT / 'x.txt').write_text('x')", "f()", "(open)"),
]


@pytest.mark.parametrize(("cell", "call", "refusal"), ATTACKS)
def test_an_attack_is_refused_and_changes_nothing(cell, call, refusal):
    namespace, graded = student()
    report = load_cell(cell, "attack", namespace, graded)
    if call is None:
        assert any(refusal in why for why in report.not_loaded.values()), report
    else:
        with pytest.raises(Refused, match=refusal.replace("(", r"\(").replace(")", r"\)")):
            eval(call, {}, namespace)  # noqa: S307 - the call the tests would make
    assert torch.allclose.__module__ is None or torch.allclose(torch.ones(1), torch.ones(1))
    assert helpers.checks.assert_close.__module__ == "helpers.checks"
    assert torch.nn.Module.forward.__name__ == "_forward_unimplemented"


def test_a_student_sees_the_labs_names_but_not_the_tests_variables():
    namespace, graded = student(lab={"secret_expected": 42, "mask_loss": "course"}, graded=("mask_loss", "loss"))
    report = load_cell("def mask_loss():\n    return 'student'\n\ndef loss():\n    return mask_loss()\n\n"
                       "def peek():\n    return secret_expected", "part", namespace, graded)
    assert report.defined == {"mask_loss", "loss", "peek"}
    assert namespace.lab["loss"]() == "student"  # graded names are exported to the tests' namespace
    namespace.lab["mask_loss"] = lambda: "course"  # a test swaps in the course's version of a part (Lab 3)
    assert namespace.lab["loss"]() == "course"
    with pytest.raises(NameError, match="secret_expected"):
        namespace["peek"]()


def test_only_imports_definitions_and_assignments_are_loaded():
    namespace, graded = student(graded=("f",))
    report = load_cell("import math\nSCALE = 2\nprint('hello')\nfor i in range(3):\n    pass\n"
                       "def f(x):\n    return SCALE * math.sqrt(x)\n%time f(4)\n", "part", namespace, graded)
    assert namespace.lab["f"](4) == 4.0
    assert len(report.skipped) == 3 and "line 3 (`print('hello')`) was not run" in report.skipped[0]
    added = load_cell("SCALE = 3\nSTEPS = train(100)\ndef g():\n    return 1", "added", namespace, graded,
                      definitions_only=True)
    assert namespace["SCALE"] == 3 and "g" in added.defined  # an added cell brings definitions and constants ...
    assert "STEPS" not in namespace and "line 2 (`STEPS = train(100)`) was not run" in added.skipped[0]  # ... only


def test_a_student_may_import_an_allowed_module_the_first_time():
    namespace, graded = student()
    load_cell("def f():\n    import statistics\n    from helpers.paths import REPO_ROOT\n"
              "    return statistics.mean([1, 2, 3]), REPO_ROOT.name", "part", namespace, graded)
    assert namespace["f"]()[0] == 2


def _forward_reference():
    """Library code that builds a forward reference the first time it runs (torch's profiler does so on the first
    Optimizer.zero_grad()): typing compiles the string then, for each new one."""
    _forward_reference.calls = getattr(_forward_reference, "calls", 0) + 1
    return typing.ForwardRef(f"NotSeenBefore{_forward_reference.calls}")


def test_a_library_call_that_compiles_a_forward_reference_is_not_refused_but_evaluating_one_is():
    namespace, graded = student({"make_reference": _forward_reference, "type_hints": typing.get_type_hints},
                                setup=("torch", "nn", "make_reference", "type_hints"))
    load_cell("def f():\n    return make_reference()\n\n\ndef g(x: \"print('ran') or int\"):\n    return x\n\n\n"
              "def h():\n    return type_hints(g)", "part", namespace, graded)
    assert "NotSeenBefore" in repr(namespace["f"]())
    with pytest.raises(Refused, match=r"graded code may not do this \(exec\)"):
        namespace["h"]()


def test_generated_classes_and_syntax_errors():
    namespace, graded = student()
    load_cell("import dataclasses\nfrom collections import namedtuple\n@dataclasses.dataclass\nclass P:\n"
              "    x: int = 1\nPair = namedtuple('Pair', 'a b')", "ok", namespace, graded)
    assert namespace["P"](2).x == 2 and namespace["Pair"](1, 2).b == 2
    report = load_cell("def f(:\n    pass", "broken", namespace, graded)
    assert report.skipped == ["the cell has a syntax error on line 1: invalid syntax"]
