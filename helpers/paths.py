"""Where the course's folders are, wherever the course was installed or cloned (also on Colab)."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
DATA_DIR: Path = REPO_ROOT / "data"
CHAPTERS_DIR: Path = REPO_ROOT / "chapters"
SOLUTIONS_DIR: Path = REPO_ROOT / "solutions"
LABS_DIR: Path = REPO_ROOT / "labs"


def course_config() -> dict[str, Any]:
    """The ``[tool.course]`` table of pyproject.toml (repository and branch the Colab badges point to)."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["course"]


@functools.cache
def data_script(name: str) -> ModuleType:
    """A script of data/ imported as a module, to call its functions: ``data_script("scenes").load(...)``.

    (data/ is a folder of scripts, not a package.) Imported once per process."""
    path = DATA_DIR / f"{name}.py"
    if not path.is_file():
        scripts = ", ".join(sorted(p.stem for p in DATA_DIR.glob("*.py")))
        raise FileNotFoundError(f"there is no data script {path}; the scripts in data/ are: {scripts}")
    spec = importlib.util.spec_from_file_location(f"data_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
