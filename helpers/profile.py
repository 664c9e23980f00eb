"""Run profiles, device choice and seeding: one code path, three sizes of run.

- ``smoke``: seconds, on a CPU; what CI runs.
- ``cpu``: minutes, on a laptop.
- ``gpu``: the real result, on Colab or a data-centre GPU.

The profile comes from the ``COURSE_PROFILE`` environment variable, else from the hardware.
"""

from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np
import torch

PROFILES: tuple[str, ...] = ("smoke", "cpu", "gpu")
ENV_VAR = "COURSE_PROFILE"

T = TypeVar("T")


class ProfileError(ValueError):
    """A profile name that is not one of PROFILES, or a profile the hardware cannot run."""


def get_profile(name: str | None = None) -> str:
    """Return the run profile: ``name`` if given, else $COURSE_PROFILE, else ``gpu`` with CUDA and ``cpu`` without."""
    chosen = name if name is not None else os.environ.get(ENV_VAR, "").strip()
    if not chosen:
        return "gpu" if torch.cuda.is_available() else "cpu"
    normalised = chosen.strip().lower()
    if normalised not in PROFILES:
        source = "the profile" if name is not None else f"{ENV_VAR}"
        raise ProfileError(
            f"{source}={chosen!r} is not a run profile. Use one of {', '.join(PROFILES)} "
            f"(e.g. `{ENV_VAR}=smoke`), or unset {ENV_VAR} to choose by hardware."
        )
    return normalised


def choose(*, smoke: T, cpu: T, gpu: T, profile: str | None = None) -> T:
    """Pick the value for the current profile, e.g. ``steps = choose(smoke=20, cpu=500, gpu=5000)``."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[get_profile(profile)]


def get_device(profile: str | None = None) -> torch.device:
    """``cuda`` in the gpu profile when a GPU is present, else ``cpu`` (smoke always runs on the CPU)."""
    if get_profile(profile) == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch.Generator seeded the same way."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def describe(profile: str | None = None) -> str:
    """One line that says which profile and device a notebook runs with."""
    name = get_profile(profile)
    return f"profile: {name} | device: {get_device(name).type}"
