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
THREADS_VAR = "COURSE_THREADS"
# CPU threads of a lab's run: smoke runs side by side (CI, grading), cpu uses the two cores of a Colab runtime or of
# this course's test machine (training 1.3–1.8 times faster than on one), gpu leaves the arithmetic to the GPU (and
# takes no more threads than there are cores: more would wait for each other)
THREADS = {"smoke": 1, "cpu": 2, "gpu": 4}

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


def set_threads(profile: str | None = None) -> int:
    """Give torch the profile's number of CPU threads (:data:`THREADS`), or $COURSE_THREADS where set (1 on a
    machine shared with other jobs, where threads wait for each other); return it. With the same number of threads a
    run repeats bit for bit; with another, its numbers differ in the last digits."""
    chosen = os.environ.get(THREADS_VAR, "").strip()
    if not chosen:
        name = get_profile(profile)
        count = THREADS[name]
        if name == "gpu":  # never more threads than cores (macOS has no sched_getaffinity)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            count = min(count, cores)
    elif chosen.isdigit() and int(chosen) > 0:
        count = int(chosen)
    else:
        raise ProfileError(f"{THREADS_VAR}={chosen!r} is not a number of threads: use a whole number from 1 up, "
                           f"e.g. `{THREADS_VAR}=1`, or unset it to use the profile's ({THREADS})")
    torch.set_num_threads(count)
    return count


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
