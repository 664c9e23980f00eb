"""Where the modules of the flat layout (version 0.1) went: importing an old name says, in one sentence, where it is.

Kept for one release (0.2); then this file and its hook go.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType

# old module → (new module, what else moved out of it, or "")
MOVED_MODULES: dict[str, tuple[str, str]] = {
    "helpers.render": ("helpers.common.render", ""),
    "helpers.notebooks": ("helpers.course.notebooks", ""),
    "helpers.labs": ("helpers.course.labs", ""),
    "helpers.grading": ("helpers.course.grading", ""),
    "helpers.book": ("helpers.course.book", ""),
    "helpers.deps": ("helpers.course.deps", ""),
    "helpers.gpt2": ("helpers.llama.gpt2", ""),
    "helpers.pretraining": ("helpers.llama.pretraining", "cosine_lr is now in helpers.common.optim"),
    "helpers.training": ("helpers.llama.training", "adamw and autocast are now in helpers.common.optim"),
    "helpers.chat": ("helpers.llama.chat", ""),
    "helpers.preferences": ("helpers.llama.preferences", ""),
    "helpers.smollm2": ("helpers.llama.smollm2", ""),
    "helpers.mae": ("helpers.sam.mae", ""),
    "helpers.sam_training": ("helpers.sam.training", "a session's loss is now helpers.sam.training.session_loss"),
    "helpers.sam_fit": ("helpers.sam.runs", "all_objects and session_loss are now in helpers.sam.training"),
    "helpers.sam_engine": ("helpers.sam.engine", "the box functions and NMS are now in helpers.sam.boxes"),
    "helpers.sam_baseline": ("helpers.sam.baselines", "mask_iou is now helpers.sam.training.mask_iou"),
    "helpers.sam_widget": ("helpers.sam.widget", ""),
}


def moved_module_message(old: str) -> str:
    """The sentence a student sees when importing ``old``."""
    new, note = MOVED_MODULES[old]
    package, _, leaf = new.rpartition(".")
    extra = f" ({note})" if note else ""
    return (f"{old} moved to {new} in version 0.2 of the course{extra}: write `from {package} import {leaf}` "
            f"or `import {new}` instead.")


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Answers an import of a moved module with :func:`moved_module_message` instead of "No module named"."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if fullname in MOVED_MODULES:
            raise ModuleNotFoundError(moved_module_message(fullname), name=fullname)
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())

