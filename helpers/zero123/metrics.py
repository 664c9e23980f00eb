"""How close a generated view is to the true one: PSNR and SSIM, over the whole image and around the object only,
and how sharp it is.

Images are (B, 3, H, W) tensors in [-1, 1] (the models' range); the metrics see them in [0, 1]. A white background
flatters both metrics (most pixels are white in every view and every baseline gets them right), so each metric also
has a foreground-aware form, computed on the pixels of the object's box: the bounding box of the true view's object,
grown by ``margin`` pixels (the same pixels for every method compared, so that the comparison stays fair).

- PSNR = 10 log₁₀(1 / MSE) in dB, per image, then averaged over images.
- SSIM (Wang et al., 2004): scikit-image's ``structural_similarity`` (7×7 windows, data range 1), its map averaged
  over the image or over the box (leaving out, as scikit-image does, the 3 pixels along the border).
- Sharpness: the energy of an image's high spatial frequencies (above ``cutoff`` cycles per pixel, from its 2-D
  Fourier transform) relative to the true view's: 1 is as sharp as the truth, below 1 blurrier. A regression that
  predicts the average of the possible views scores well in PSNR and low here; a sampler that draws one of them
  scores near 1.
"""

from __future__ import annotations

import numpy as np
import torch

from helpers.course.deps import require
from helpers.zero123.validate import check_channels

BOX_MARGIN = 2  # pixels added around the object's bounding box
SSIM_WINDOW = 7  # scikit-image's default window, pixels
SSIM_BORDER = (SSIM_WINDOW - 1) // 2
HIGH_FREQUENCY = 0.25  # cycles per pixel: the upper half of the frequencies an image can hold (Nyquist is 0.5)


def to_unit(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) float64 in [0, 1] (clipped)."""
    check_channels(images, 3, "images")
    return ((images.detach().cpu().double().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def object_boxes(masks: torch.Tensor | np.ndarray, margin: int = BOX_MARGIN) -> np.ndarray:
    """Foreground masks (B, H, W) → (B, H, W) bool: each object's bounding box grown by ``margin`` pixels (the whole
    image where a mask is empty)."""
    m = np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks).astype(bool)
    if m.ndim != 3:
        raise ValueError(f"masks must have shape (B, H, W), got {m.shape}")
    boxes = np.zeros_like(m)
    for box, mask in zip(boxes, m, strict=True):
        rows, cols = np.nonzero(mask)
        if len(rows) == 0:
            box[:] = True
            continue
        top, left = max(rows.min() - margin, 0), max(cols.min() - margin, 0)
        box[top:rows.max() + margin + 1, left:cols.max() + margin + 1] = True
    return boxes


def _pair(prediction: torch.Tensor, truth: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction and truth must have one shape, got {tuple(prediction.shape)} and "
                         f"{tuple(truth.shape)}")
    return to_unit(prediction), to_unit(truth)


def psnr(prediction: torch.Tensor, truth: torch.Tensor, region: np.ndarray | None = None) -> np.ndarray:
    """PSNR in dB of each image (B,), over the whole image or over ``region`` (B, H, W) bool."""
    p, t = _pair(prediction, truth)
    squared = ((p - t) ** 2).mean(-1)
    weights = np.ones_like(squared) if region is None else region.astype(np.float64)
    mse = (squared * weights).sum((1, 2)) / weights.sum((1, 2))
    return 10 * np.log10(1 / np.maximum(mse, 1e-10))


def ssim(prediction: torch.Tensor, truth: torch.Tensor, region: np.ndarray | None = None) -> np.ndarray:
    """SSIM of each image (B,): the mean of scikit-image's SSIM map over the image or over ``region``."""
    metrics = require("skimage.metrics", package="scikit-image", purpose="SSIM")
    p, t = _pair(prediction, truth)
    inside = np.zeros(p.shape[1:3], dtype=bool)  # scikit-image leaves out the border half a window wide
    inside[SSIM_BORDER:-SSIM_BORDER, SSIM_BORDER:-SSIM_BORDER] = True
    scores = []
    for i in range(len(p)):
        _, full = metrics.structural_similarity(p[i], t[i], data_range=1.0, channel_axis=-1, full=True,
                                                win_size=SSIM_WINDOW)
        keep = inside if region is None else inside & region[i]
        scores.append(full.mean(-1)[keep if keep.any() else inside].mean())
    return np.asarray(scores)


def high_frequency_energy(images: torch.Tensor, cutoff: float = HIGH_FREQUENCY) -> np.ndarray:
    """Each image's (B,) mean squared Fourier amplitude at spatial frequencies above ``cutoff`` cycles per pixel
    (grey levels in [0, 1])."""
    grey = to_unit(images).mean(-1)
    spectrum = np.abs(np.fft.fft2(grey - grey.mean((1, 2), keepdims=True))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(grey.shape[1]), np.fft.fftfreq(grey.shape[2]), indexing="ij")
    return spectrum[:, np.hypot(fy, fx) > cutoff].sum(-1) / grey[0].size


def sharpness(prediction: torch.Tensor, truth: torch.Tensor, cutoff: float = HIGH_FREQUENCY) -> float:
    """Σ high-frequency energy of the predictions / Σ that of the true views: 1 as sharp as the truth, < 1 blurrier."""
    _pair(prediction, truth)
    return float(high_frequency_energy(prediction, cutoff).sum() / high_frequency_energy(truth, cutoff).sum())


def colour_errors(prediction: torch.Tensor, truth: torch.Tensor, masks: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Where a method's colours go wrong, in [0, 1] units (masks: the true views' foreground, (B, H, W)):

    - ``background tint``: the root mean square, over images and channels, of each image's mean error on the true
      view's background pixels (a tinted or grey background scores its offset; 0 when the background is right);
    - ``chroma`` and ``true chroma``: the mean distance of a pixel's channels from their grey mean, on the true
      view's object pixels, for the predictions and for the truth (a washed-out view scores below the truth's).
    """
    p, t = _pair(prediction, truth)
    foreground = np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks).astype(bool)
    if foreground.shape != p.shape[:3]:
        raise ValueError(f"masks must have shape {p.shape[:3]}, got {foreground.shape}")
    background = (~foreground)[..., None].astype(np.float64)
    tint = ((p - t) * background).sum((1, 2)) / np.maximum(background.sum((1, 2)), 1)  # (B, 3)

    def chroma(images: np.ndarray) -> float:
        spread = np.abs(images - images.mean(-1, keepdims=True)).mean(-1)
        return float(spread[foreground].mean()) if foreground.any() else 0.0

    return {"background tint": float(np.sqrt((tint**2).mean())), "chroma": chroma(p), "true chroma": chroma(t)}


IMAGE_METRICS = ("PSNR", "SSIM", "PSNR (object)", "SSIM (object)")  # one number per image


def per_image(prediction: torch.Tensor, truth: torch.Tensor, masks: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """PSNR and SSIM of each generated view (B,), over the whole image and over the object's box (masks: the true
    views' foreground, (B, H, W))."""
    boxes = object_boxes(masks)
    return {"PSNR": psnr(prediction, truth), "SSIM": ssim(prediction, truth),
            "PSNR (object)": psnr(prediction, truth, boxes), "SSIM (object)": ssim(prediction, truth, boxes)}


def scores(prediction: torch.Tensor, truth: torch.Tensor, masks: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Mean PSNR and SSIM over the whole images and over the objects' boxes, and the sharpness, of a batch of
    generated views against the true ones (masks: the true views' foreground, (B, H, W))."""
    means = {name: float(values.mean()) for name, values in per_image(prediction, truth, masks).items()}
    return {**means, "sharpness": sharpness(prediction, truth)}
