"""A test-only stand-in for the parts of torchaudio that ``audiolm_pytorch`` touches when it loads and in the course's
reference checks.

No build of torchaudio matches the course's CPU torch (2.13.0) on the registry (its wheels stop at 2.11 and are CUDA
builds that fail to load next to the CPU torch), yet ``audiolm_pytorch`` writes ``import torchaudio`` and
``from torchaudio.functional import resample`` at the top of several modules, and ``SoundStream``'s multi-scale
spectral loss calls ``torchaudio.transforms.MelSpectrogram``.

:func:`install` registers three modules under torchaudio's names in ``sys.modules``, where no torchaudio is installed:

- ``torchaudio``: ``load`` and ``save`` raise one sentence (the course never reads or writes audio files with it);
- ``torchaudio.transforms``: ``MelSpectrogram`` for the arguments SoundStream passes, computed from ``torch.stft`` and
  transformers' torchaudio-compatible filter bank (not from the course's own mel code, so that the tests comparing
  the course's losses with SoundStream's compare two independent computations);
- ``torchaudio.functional``: ``resample`` raises one sentence (used only for audio at another sample rate).

The modules load lazily (on first use). Unlike the torchvision stand-in this one must register the package itself
(``import torchaudio`` is written out); transformers then finds a ``torchaudio`` without a version and treats it as
absent, which is what it is. Nothing here is part of the course's package: ``tests/conftest.py`` and
``tests/shims/sitecustomize.py`` call :func:`install`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
MODULES = {
    "torchaudio": HERE / "root.py",
    "torchaudio.transforms": HERE / "transforms.py",
    "torchaudio.functional": HERE / "functional.py",
}


def load(name: str, *, lazy: bool = False) -> ModuleType:
    """The stand-in for ``name`` (a key of :data:`MODULES`) as a fresh module object, not registered."""
    spec = importlib.util.spec_from_file_location(name, MODULES[name],
                                                  submodule_search_locations=[] if "." not in name else None)
    assert spec is not None and spec.loader is not None
    if lazy:
        spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def installed() -> bool:
    """Whether a real torchaudio is installed (the stand-ins registered here do not count)."""
    module = sys.modules.get("torchaudio")
    if module is not None:
        return getattr(module.__spec__, "origin", None) != str(MODULES["torchaudio"])
    return importlib.util.find_spec("torchaudio") is not None


def install() -> bool:
    """Register the stand-ins where no torchaudio is installed; return whether they are (now) in use."""
    if installed():
        return False
    for name in MODULES:
        if name not in sys.modules:
            sys.modules[name] = load(name, lazy=True)
    return True
