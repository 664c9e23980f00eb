"""A missing package gets one sentence that says what to do."""

import subprocess
import sys

import pytest

from helpers.course.deps import MissingDependency, check_installed, require
from helpers.paths import REPO_ROOT


def test_require_returns_the_module():
    assert require("json").dumps([1]) == "[1]"


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nbgrader", None)  # as if it were not installed
    with pytest.raises(MissingDependency) as excinfo:
        require("nbgrader", purpose="Grading")
    message = str(excinfo.value)
    assert message.startswith("Grading needs the Python package `nbgrader`, which is not installed")
    assert "make install" in message and "pip install -e '.[dev]'" in message and "Colab" in message


def test_broken_dependency_of_a_dependency_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "nbformat", None)
    for name in [m for m in sys.modules if m == "nbclient" or m.startswith("nbclient.")]:  # imported by another test
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingDependency, match="`nbclient` is installed but cannot be imported because `nbformat`"):
        require("nbclient")


def test_check_installed_imports_nothing():
    check_installed("json", "torch")
    with pytest.raises(MissingDependency, match="`no_such_package_xyz`"):
        check_installed("no_such_package_xyz", purpose="This lab")


@pytest.mark.parametrize(("module", "args"), [("helpers.course.labs", ["check"])])  # grading does not use nbgrader
def test_commands_without_nbgrader_exit_with_one_message(module, args):
    code = (f"import sys; sys.modules['nbgrader'] = None; sys.argv = ['x', *{args!r}]; "
            f"import runpy; runpy.run_module({module!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 1
    assert "needs the Python package `nbgrader`" in result.stderr
    assert "Traceback" not in result.stderr
