"""The package's layout keeps its promises: one subpackage per system plus what they share and the course's machinery,
an import graph without loops, no hidden (function-level) imports of the course's own modules, nothing imports a
lab runner, no data script loaded by file path, every subpackage shipped in the wheel, and old names answered with
their new place."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from helpers._moved import MOVED_MODULES
from helpers.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "helpers"
# whole lab runs: imported by notebooks and scripts, never by another module
RUNNERS = {"helpers.sam.runs", "helpers.zero123.runs"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def course_imports(name: str) -> list[tuple[str, int, bool]]:
    """(imported helpers module, line, at module level?) for every import of the course's own modules in ``name``;
    imports only made for type checkers are left out (they never run)."""
    tree = ast.parse(MODULES[name].read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or _type_checking_only(node, parents):
            continue
        top = parents.get(node) is tree
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # a relative import: climb from the module's package
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        found += [(target, node.lineno, top) for target in targets if target.split(".")[0] == "helpers"]
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in course_imports(name) if target != name} for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of ``graph``, as a path that ends where it started, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_one_subpackage_per_system_and_each_says_where_to_start():
    for package in ("llama", "sam", "zero123", "common", "course"):
        init = PACKAGE / package / "__init__.py"
        assert init.is_file(), f"helpers/{package}/ is a package"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) <= 16, f"helpers/{package}/__init__.py says what lives there, briefly"
    for system in ("llama", "sam", "zero123"):
        assert (PACKAGE / system / "model.py").is_file(), f"helpers/{system}/model.py holds the model"
        assert (REPO_ROOT / "tests" / system).is_dir(), f"tests/{system}/ mirrors helpers/{system}/"


def test_the_import_graph_has_no_loop():
    graph = import_graph()
    assert find_cycle(graph) is None, f"import loop: {' → '.join(find_cycle(graph))}"


def test_the_cycle_finder_finds_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_function_level_imports_of_the_course():
    hidden = [f"{name}:{line} imports {target}" for name in MODULES for target, line, top in course_imports(name)
              if not top]
    assert not hidden, "import the course's modules at the top of the module: " + "; ".join(hidden)


def test_nothing_imports_a_lab_runner():
    users = [f"{name} imports {target}" for name in MODULES for target, _, _ in course_imports(name)
             if target in RUNNERS]
    assert not users, "; ".join(users)


def test_no_data_script_is_loaded_by_path():
    for name, path in MODULES.items():
        text = path.read_text()
        assert "spec_from_file_location" not in text, f"{name} loads a file as a module"
    for script in (REPO_ROOT / "data").rglob("*.py"):
        tree = ast.parse(script.read_text())
        defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
        assert not defined, f"{script.relative_to(REPO_ROOT)} is a thin command line: its code lives in helpers"


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_flat_name_says_where_it_went(old):
    new = MOVED_MODULES[old][0]
    with pytest.raises(ModuleNotFoundError, match=rf"{old} moved to {new} in version 0.2.*import {new}"):
        importlib.import_module(old)
    importlib.import_module(new)


def test_an_old_name_says_where_it_went_in_a_fresh_interpreter_too():
    result = subprocess.run([sys.executable, "-c", "import helpers.sam_fit"], capture_output=True, text=True,
                            cwd=REPO_ROOT)
    assert result.returncode == 1
    assert "helpers.sam_fit moved to helpers.sam.runs" in result.stderr.splitlines()[-1]


@pytest.mark.slow
def test_the_wheel_ships_every_subpackage(tmp_path):
    """Build the wheel, install it (without dependencies) into a clean virtual environment, and import every module
    from there, with this environment's third-party packages on the path but not its editable course."""
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "helpers", source / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("fm_from_scratch-*.whl")
    env_dir = tmp_path / "clean"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # else pip finds the checkout's copy
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=600, env=clean_env)
    names = sorted(MODULES)
    probe = ("import importlib, sys; import helpers; "
             "assert 'clean' in helpers.__file__, helpers.__file__; "
             f"[importlib.import_module(m) for m in {names!r}]; print(helpers.__file__)")
    env = {**clean_env, "PYTHONPATH": sysconfig.get_paths()["purelib"], "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(env_dir) in result.stdout


def test_what_every_notebook_imports_first_stays_light():
    """helpers.profile, helpers.checks and helpers.paths load no system's code (their cost is torch's import)."""
    probe = ("import sys, helpers.profile, helpers.checks, helpers.paths; "
             "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'helpers')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.split() == ["helpers", "helpers._moved", "helpers.checks", "helpers.course",
                                     "helpers.course.deps", "helpers.paths", "helpers.profile"]
