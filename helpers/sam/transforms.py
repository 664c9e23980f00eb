"""Pre- and post-processing: resize the long side to S, normalise, pad; masks back to the original size
(``segment_anything``'s ``ResizeLongestSide`` and ``Sam.preprocess`` / ``postprocess_masks``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """The (h, w) an image of (height, width) gets when its long side is resized to ``long_side`` (rounded)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """An (H, W, 3) uint8 image resized bilinearly (PIL) so that its long side is ``long_side``, as
    ``segment_anything``'s ``ResizeLongestSide.apply_image`` does."""
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8):
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {getattr(image, 'shape', type(image))} "
                         f"{getattr(image, 'dtype', '')}")
    h, w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def transform_coords(coords: np.ndarray | torch.Tensor, original_size: Sequence[int],
                     long_side: int) -> np.ndarray | torch.Tensor:
    """Point coordinates (..., 2) as (x, y) in the original image → the resized image's frame."""
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, long_side)
    coords = coords.to(torch.float).clone() if isinstance(coords, torch.Tensor) else np.array(coords, dtype=float)
    coords[..., 0] = coords[..., 0] * (new_w / old_w)
    coords[..., 1] = coords[..., 1] * (new_h / old_h)
    return coords


def transform_boxes(boxes: np.ndarray | torch.Tensor, original_size: Sequence[int],
                    long_side: int) -> np.ndarray | torch.Tensor:
    """Boxes (B, 4) as (x1, y1, x2, y2) in the original image → the resized image's frame."""
    return transform_coords(boxes.reshape(-1, 2, 2), original_size, long_side).reshape(-1, 4)


def prepare_image(image: np.ndarray, img_size: int) -> torch.Tensor:
    """An (H, W, 3) uint8 RGB image → the (3, h, w) float tensor that :meth:`Sam.forward` takes as ``"image"``
    (long side resized to ``img_size``; pixel values still 0–255)."""
    return torch.from_numpy(resize_longest_side(image, img_size)).permute(2, 0, 1).float()


def sam_preprocess(image: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
                   img_size: int) -> torch.Tensor:
    """(…, 3, h, w) with h, w ≤ S → normalised per channel, zero-padded at the bottom and right to (…, 3, S, S)."""
    x = (image - pixel_mean) / pixel_std
    h, w = x.shape[-2:]
    return F.pad(x, (0, img_size - w, 0, img_size - h))


def postprocess_masks(masks: torch.Tensor, input_size: Sequence[int], original_size: Sequence[int],
                      img_size: int) -> torch.Tensor:
    """Mask logits (B, M, 4e, 4e) → upscale to S × S, crop the padding to ``input_size`` (the resized image's
    (h, w)), upscale to ``original_size`` (H, W): (B, M, H, W). Bilinear throughout."""
    masks = F.interpolate(masks, (img_size, img_size), mode="bilinear", align_corners=False)
    masks = masks[..., : int(input_size[0]), : int(input_size[1])]
    return F.interpolate(masks, tuple(int(s) for s in original_size), mode="bilinear", align_corners=False)
