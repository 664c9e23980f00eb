"""Make ``audiolm_pytorch`` (2.4.0) and ``vector_quantize_pytorch`` importable offline on Python ≥ 3.11.

``pip install audiolm-pytorch`` fails on Python ≥ 3.11 (its ``fairseq`` dependency does not build), its import pulls
``fairseq`` and ``torchaudio``, and every Semantic/Coarse/Fine transformer constructor asks the model hub for the
``google/t5-v1_1-base`` config (to size text conditioning, even when none is used). The recipe:

1. ``python -m helpers.audiolm install`` (the Makefile runs it; on Colab, run it in a cell) installs
   :data:`NO_DEPS_PACKAGES` with ``--no-deps``; their other dependencies are the course's own (pyproject.toml,
   wandb included).
2. :func:`install` (``import helpers.audiolm`` calls it) registers a ``fairseq`` stand-in where fairseq is not
   installed (it only loads HuBERT / vq-wav2vec checkpoints, which the course never does: no such weights can be had
   offline; any use raises one sentence), and the ``google/t5-v1_1-base`` configuration (d_model = 768, all a
   constructor reads) in ``audiolm_pytorch.t5``'s cache as soon as that module loads, so no constructor goes to the
   hub.

The course's own code (codec, RVQ, semantic tokens, hierarchy, chorales) needs neither ``audiolm_pytorch`` nor
``torchaudio``. ``audiolm_pytorch`` itself imports ``torchaudio`` when it loads: the parts of the course that use it
(the reference checks, ``codec_to_reference``) get it through :func:`require_audiolm_pytorch`, which says in one
sentence what to install when torchaudio is missing (Colab has it; the course's tests use a stand-in of their own,
``tests/shims/_torchaudio``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import subprocess
import sys
from types import ModuleType
from typing import Any

from helpers.course.deps import MissingDependency

NO_DEPS_PACKAGES = ("audiolm-pytorch==2.4.0", "encodec==0.1.1")  # their declared fairseq and torchaudio cannot be had
T5_NAME = "google/t5-v1_1-base"
T5_V1_1_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False)  # the hub's config.json, in short


class Unavailable(ModuleType):
    """A module that stands in for an uninstalled package: importing it works, using any name raises ``reason``."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self.__spec__ = importlib.machinery.ModuleSpec(name, None)
        self._reason = reason

    def __getattr__(self, attr: str) -> Any:
        raise AttributeError(f"`{self.__name__}.{attr}` is not available: {self._reason}")


def _missing(package: str) -> bool:
    if package in sys.modules:
        return False
    try:
        return importlib.util.find_spec(package) is None
    except (ImportError, ValueError):
        return True


class _T5ConfigHook(importlib.abc.MetaPathFinder):
    """When ``audiolm_pytorch.t5`` loads, put the T5 config in its cache (``T5_CONFIGS``) so nothing asks the hub."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "audiolm_pytorch.t5":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_register(module: ModuleType) -> None:
            exec_module(module)
            register_t5_config(module)

        spec.loader.exec_module = exec_and_register
        return spec


def register_t5_config(t5_module: ModuleType) -> None:
    """Put ``google/t5-v1_1-base``'s configuration into ``audiolm_pytorch.t5.T5_CONFIGS`` (no hub needed)."""
    from transformers import T5Config

    t5_module.T5_CONFIGS.setdefault(T5_NAME, {}).setdefault("config", T5Config(**T5_V1_1_BASE))


def install() -> list[str]:
    """Register the fairseq stand-in where fairseq is missing and the T5 config hook; return the stand-ins' names.

    Idempotent; a no-op for every package that is installed."""
    registered = []
    if _missing("fairseq"):
        sys.modules["fairseq"] = Unavailable("fairseq", "fairseq does not install on Python ≥ 3.11; it only loads "
                                             "HuBERT / vq-wav2vec checkpoints, which the course does not use")
        registered.append("fairseq")
    t5 = sys.modules.get("audiolm_pytorch.t5")
    if t5 is not None:
        register_t5_config(t5)
    elif not any(isinstance(finder, _T5ConfigHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _T5ConfigHook())
    return registered


def install_packages() -> None:
    """``pip install --no-deps`` the reference packages whose declared dependencies cannot be installed."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *NO_DEPS_PACKAGES], check=True)



def require_audiolm_pytorch() -> ModuleType:
    """``audiolm_pytorch``, imported after :func:`install`; a missing piece raises :class:`MissingDependency` with
    one sentence naming what to install."""
    install()
    if _missing("audiolm_pytorch"):
        raise MissingDependency("audiolm_pytorch is not installed: run `python -m helpers.audiolm install` (it "
                                "installs audiolm-pytorch 2.4.0 and encodec without their unbuildable dependencies).")
    if _missing("torchaudio"):
        raise MissingDependency("audiolm_pytorch imports torchaudio, which is not installed: `pip install torchaudio` "
                                "(the build that matches your torch; Colab has it).")
    return importlib.import_module("audiolm_pytorch")
