"""Where the course's folders are, wherever the course was installed or cloned (also on Colab)."""

from __future__ import annotations

import sys
from pathlib import Path
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


def __getattr__(name: str) -> object:
    if name == "data_script":  # removed in version 0.2; this message goes with the next release
        raise ImportError("helpers.paths.data_script is gone in version 0.2 of the course: the data's code is in "
                          "helpers now, e.g. `from helpers.sam import scenes` or "
                          "`from helpers.llama import shakespeare`.",
                          name="helpers.paths")
    raise AttributeError(f"module 'helpers.paths' has no attribute {name!r}")
