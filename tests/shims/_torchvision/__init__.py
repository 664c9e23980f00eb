"""A test-only stand-in for the four torchvision functions that ``segment_anything`` imports.

No CPU build of torchvision installs in the course's test environment, yet ``segment_anything`` imports
``torchvision.transforms.functional`` (``resize``, ``to_pil_image``: ``ResizeLongestSide``) and
``torchvision.ops.boxes`` (``batched_nms``, ``box_area``: the automatic mask generator) when it loads.

:func:`install` registers the two stand-in modules in ``sys.modules`` under those names, and only those:
``torchvision`` itself stays unimportable, so ``importlib.util.find_spec("torchvision")`` still answers None.
That matters: transformers decides that torchvision is available from ``find_spec`` alone and would then
import parts of it (``torchvision.transforms.InterpolationMode`` …) that no stand-in provides, breaking even
``from transformers import LlamaForCausalLM``. ``segment_anything`` only writes ``from torchvision.x.y import f``,
which Python answers from ``sys.modules`` without importing the parent package.

The modules load lazily (on first use), so a Python that never touches them pays nothing. Nothing here
is part of the course's package: ``tests/conftest.py`` and ``tests/shims/sitecustomize.py`` call
:func:`install`, and only where no torchvision is installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
MODULES = {
    "torchvision.transforms.functional": HERE / "transforms" / "functional.py",
    "torchvision.ops.boxes": HERE / "ops" / "boxes.py",
}


def load(name: str, *, lazy: bool = False) -> ModuleType:
    """The stand-in for ``name`` (a key of :data:`MODULES`) as a fresh module object, not registered."""
    spec = importlib.util.spec_from_file_location(name, MODULES[name])
    assert spec is not None and spec.loader is not None
    if lazy:
        spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install() -> bool:
    """Register the stand-ins where no torchvision is installed; return whether they are (now) in use."""
    if importlib.util.find_spec("torchvision") is not None:
        return False
    for name in MODULES:
        if name not in sys.modules:
            sys.modules[name] = load(name, lazy=True)
    return True
