"""The course's data caches: named arrays in one .npz file, written so that a reader never sees half a file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save(path: Path, arrays: dict[str, np.ndarray], *, compressed: bool = True) -> Path:
    """Write ``arrays`` to ``path`` (.npz) through a file of this process's own, renamed into place at the end: a
    process that reads ``path`` meanwhile, or writes it too, sees the whole file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    (np.savez_compressed if compressed else np.savez)(partial, **arrays)
    os.replace(partial, path)
    return path


def load(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file written by :func:`save`, read into memory (no pickled objects)."""
    with np.load(path, allow_pickle=False) as f:
        return {key: f[key] for key in f.files}
