"""Make ``audiolm_pytorch`` (2.4.0) and ``vector_quantize_pytorch`` importable offline on Python ≥ 3.11.

``pip install audiolm-pytorch`` fails on Python ≥ 3.11 (its ``fairseq`` dependency does not build), its import pulls
``fairseq``, ``torchaudio`` and ``wandb``, and every Semantic/Coarse/Fine transformer constructor asks the model hub
for the ``google/t5-v1_1-base`` config (to size text conditioning, even when none is used). The recipe:

1. ``python -m helpers.audiolm install`` (the Makefile runs it; on Colab a notebook cell does) installs
   :data:`NO_DEPS_PACKAGES` with ``--no-deps``; their pure-Python dependencies are the course's own (pyproject.toml).
2. :func:`install` (``import helpers.audiolm`` calls it) registers, only for packages that are *not* installed:

   - ``fairseq``: used only to load HuBERT / vq-wav2vec checkpoints, which the course never does (no such
     weights can be had offline): any use raises one sentence.
   - ``wandb``: imported by ``audiolm_pytorch.trainer`` at load, used only with ``use_wandb_tracking=True``.
   - ``torchaudio``: the course's code never imports it. ``audiolm_pytorch`` imports it at load and calls
     ``torchaudio.transforms.MelSpectrogram`` in ``SoundStream``'s multi-scale spectral loss (the one call the
     course's reference checks reach): the stand-in computes it with :func:`helpers.audiolm.mel.mel_spectrogram`
     (torchaudio's defaults: periodic Hann window, centred reflect-padded STFT, power 2, HTK mel scale, no filter
     norm; tested against transformers' torchaudio-compatible filter bank). ``resample`` (used only when audio comes
     at another sample rate), ``load``, ``save`` and every other name raise one sentence instead.

   and it registers the ``google/t5-v1_1-base`` configuration (d_model = 768, all a constructor reads) in
   ``audiolm_pytorch.t5``'s cache as soon as that module loads, so no constructor goes to the hub.

Where torchaudio *is* installed (Colab), the real one is used; transformers then sees the stand-in as an installed
``torchaudio`` without a version, which matters only to its audio feature extractors.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import subprocess
import sys
from types import ModuleType
from typing import Any

import torch

from helpers.audiolm.mel import mel_filterbank, mel_spectrogram

NO_DEPS_PACKAGES = ("audiolm-pytorch==2.4.0", "encodec==0.1.1")  # their declared fairseq/torchaudio/wandb cannot be had
T5_NAME = "google/t5-v1_1-base"
T5_V1_1_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False)  # the hub's config.json, in short


class Unavailable(ModuleType):
    """A module that stands in for an uninstalled package: importing it works, using any name raises ``reason``."""

    def __init__(self, name: str, reason: str, **names: Any) -> None:
        super().__init__(name)
        self.__spec__ = importlib.machinery.ModuleSpec(name, None)
        self.__dict__.update(names)
        self._reason = reason

    def __getattr__(self, attr: str) -> Any:
        raise AttributeError(f"`{self.__name__}.{attr}` is not available: {self._reason}")

    def unavailable(self, attr: str) -> Any:
        """A function named ``attr`` that raises ``reason`` when called (for names imported with ``from … import``)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"`{self.__name__}.{attr}` is not available: {self._reason}")

        call.__name__ = attr
        return call


def _missing(package: str) -> bool:
    if package in sys.modules:
        return False
    try:
        return importlib.util.find_spec(package) is None
    except (ImportError, ValueError):
        return True


class MelSpectrogram(torch.nn.Module):
    """``torchaudio.transforms.MelSpectrogram`` for the arguments ``audiolm_pytorch`` passes (its defaults otherwise).

    (..., samples) → (..., n_mels, frames) with frames = samples // hop_length + 1.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, win_length: int | None = None,
                 hop_length: int | None = None, f_min: float = 0.0, f_max: float | None = None, pad: int = 0,
                 n_mels: int = 128, power: float = 2.0, normalized: bool = False, center: bool = True,
                 pad_mode: str = "reflect", onesided: bool = True, norm: str | None = None,
                 mel_scale: str = "htk") -> None:
        super().__init__()
        if (pad, power, center, pad_mode, onesided, norm, mel_scale) != (0, 2.0, True, "reflect", True, None, "htk"):
            raise NotImplementedError("the torchaudio stand-in computes the power-2 HTK mel spectrogram of a "
                                      "centred, reflect-padded STFT only; install torchaudio for other settings")
        self.n_fft, self.win_length = n_fft, win_length or n_fft
        self.hop_length, self.normalized = hop_length or self.win_length // 2, normalized
        self.register_buffer("window", torch.hann_window(self.win_length))
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return mel_spectrogram(waveform, self.fb, self.window, self.n_fft, self.hop_length, self.normalized)


def _torchaudio_standin() -> dict[str, ModuleType]:
    reason = ("torchaudio is not installed, and the course's stand-in provides only "
              "`transforms.MelSpectrogram`; pass audio at the model's sample rate, or install torchaudio")
    transforms = Unavailable("torchaudio.transforms", reason, MelSpectrogram=MelSpectrogram)
    functional = Unavailable("torchaudio.functional", reason)
    functional.resample = functional.unavailable("resample")
    root = Unavailable("torchaudio", reason, transforms=transforms, functional=functional)
    root.load, root.save = root.unavailable("load"), root.unavailable("save")
    return {"torchaudio": root, "torchaudio.transforms": transforms, "torchaudio.functional": functional}


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
    """Register the stand-ins for the packages that are missing and the T5 config hook; return the stand-ins' names.

    Idempotent; a no-op for every package that is installed."""
    registered = []
    if _missing("fairseq"):
        sys.modules["fairseq"] = Unavailable("fairseq", "fairseq does not install on Python ≥ 3.11; it only loads "
                                             "HuBERT / vq-wav2vec checkpoints, which the course does not use")
        registered.append("fairseq")
    if _missing("wandb"):
        sys.modules["wandb"] = Unavailable("wandb", "wandb is not installed (audiolm_pytorch's trainers use it only "
                                           "with use_wandb_tracking=True)")
        registered.append("wandb")
    if _missing("torchaudio"):
        sys.modules.update(_torchaudio_standin())
        registered.append("torchaudio")
    t5 = sys.modules.get("audiolm_pytorch.t5")
    if t5 is not None:
        register_t5_config(t5)
    elif not any(isinstance(finder, _T5ConfigHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _T5ConfigHook())
    return registered


def install_packages() -> None:
    """``pip install --no-deps`` the reference packages whose declared dependencies cannot be installed."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *NO_DEPS_PACKAGES], check=True)

