"""Missing packages get one sentence that says what to do, not a traceback from deep inside an import."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

INSTALL_HINT = (
    "Install the course with `make install` (it creates .venv), or `pip install -e '.[dev]'` in your own "
    "environment; on Colab, run the notebook's first cell."
)


class MissingDependency(ImportError):
    """A package the course needs is not installed."""


def _message(package: str, purpose: str, cause: str = "") -> str:
    needs = f"{purpose} needs" if purpose else "The course needs"
    detail = f" ({cause})" if cause else ""
    return f"{needs} the Python package `{package}`, which is not installed{detail}. {INSTALL_HINT}"


def require(module: str, *, package: str | None = None, purpose: str = "") -> ModuleType:
    """Import ``module``; if it (not one of its own imports) is missing, raise :class:`MissingDependency`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing and missing != module.split(".")[0]:
            raise MissingDependency(
                f"`{module}` is installed but cannot be imported because `{missing}` is missing or broken "
                f"({exc}). {INSTALL_HINT}"
            ) from None
        raise MissingDependency(_message(package or module.split(".")[0], purpose, str(exc))) from None


def check_installed(*modules: str, purpose: str = "") -> None:
    """Raise :class:`MissingDependency` naming the first of ``modules`` that is not installed (nothing is imported)."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingDependency(_message(module, purpose))
