"""Stand-in for ``torchvision.transforms.functional.resize`` and ``to_pil_image`` on the inputs that
``segment_anything``'s ``ResizeLongestSide.apply_image`` gives them: an (H, W, C) uint8 array, then (h, w)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def to_pil_image(pic: np.ndarray, mode: str | None = None) -> Image.Image:
    """An (H, W, C) uint8 array with C in (1, 3, 4), or an (H, W) one, as a PIL image ("L", "RGB" or "RGBA")."""
    if not isinstance(pic, np.ndarray):
        raise TypeError(f"the torchvision stand-in converts numpy arrays only, got {type(pic).__name__}")
    if pic.ndim == 2:
        pic = pic[:, :, None]
    if pic.ndim != 3 or pic.shape[2] not in _MODES:
        raise ValueError(f"expected an (H, W, C) array with C in (1, 3, 4), got shape {tuple(pic.shape)}")
    if pic.dtype != np.uint8:
        raise TypeError(f"the torchvision stand-in converts uint8 arrays only, got {pic.dtype}")
    expected = _MODES[pic.shape[2]]
    if mode is not None and mode != expected:
        raise ValueError(f"mode {mode!r} does not fit an array with {pic.shape[2]} channels ({expected!r})")
    return Image.fromarray(np.ascontiguousarray(pic if pic.shape[2] > 1 else pic[:, :, 0]), mode=expected)


def resize(img: Image.Image, size: Sequence[int], interpolation: object = None, max_size: None = None,
           antialias: bool | None = True) -> Image.Image:
    """Resize a PIL image to ``size`` = (h, w) with bilinear interpolation (torchvision's default; PIL always
    antialiases, as torchvision does for PIL images). The single-int form of ``size`` is not provided."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"the torchvision stand-in resizes PIL images only, got {type(img).__name__}")
    if interpolation is not None and str(getattr(interpolation, "value", interpolation)).lower() != "bilinear":
        raise ValueError(f"the torchvision stand-in resizes with bilinear interpolation only, got {interpolation}")
    if isinstance(size, int) or not isinstance(size, Sequence) or len(size) != 2 or max_size is not None:
        raise ValueError(f"the torchvision stand-in takes size as a sequence (h, w), got {size!r}")
    height, width = (int(s) for s in size)
    return img.resize((width, height), Image.BILINEAR)
