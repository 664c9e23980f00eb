"""A classical segmentation from the same click as SAM's: the baseline the trained model must beat (Lab 3).

Two methods, both from scikit-image, both given exactly what SAM gets: the image and one click (x, y) on the object.

Both work on colour features: the image smoothed (Gaussian, σ = ``sigma`` px) and converted to CIELAB, where the
Euclidean distance roughly follows perceived colour difference (ΔE), with the lightness L* scaled by ``lightness``
(0.5 by default: shading changes an object's lightness far more than its hue; chosen on training scenes).

- ``"flood"``: flood-fill from the click over the pixels whose colour lies within ``tolerance`` of the click's colour
  (:func:`skimage.segmentation.flood` on the map of distances to it); holes are filled (highlights, patterns).
- ``"watershed"``: the relief is the colour gradient's magnitude (Sobel per channel, Euclidean norm over the three);
  one marker at the click, a background marker on every pixel farther than ``radius`` × the image's long side from
  the click (and on the image border); :func:`skimage.segmentation.watershed` floods the relief from the markers and
  the click's basin is the mask.

An honest baseline has its parameters tuned (:func:`tune`, a grid search) on training scenes only, then is scored
(:func:`baseline_miou`) on the held-out scenes with the same clicks as the model. :func:`object_clicks` makes one
click per object from instance maps, drawn uniformly from the object (``"uniform"``, as
:func:`helpers.sam.training.sample_points`) or at its pixel farthest from the boundary (``"farthest"``). Tuned on 60
training scenes of the cpu profile, both reach about 0.35–0.37 mIoU on its held-out scenes at 128 px (scenes version
2: textured objects and ground, shadows); on the earlier flat-coloured scenes they reached 0.70–0.76.

Shapes: K clicks, each on one image (H, W, 3) uint8 RGB with its target mask (H, W) bool; points are (x, y)
pixel coordinates (column, row), as everywhere in the course.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage import color, filters, segmentation

from helpers.sam.training import all_objects, farthest_points, mask_iou, sample_points

METHODS = ("flood", "watershed")
DEFAULTS: dict[str, dict[str, float]] = {  # used where a parameter is not given; tune() finds better ones
    "flood": {"tolerance": 18.0, "sigma": 0.5, "lightness": 0.5},
    "watershed": {"radius": 0.25, "sigma": 0.5, "lightness": 0.5},
}


# ----------------------------------------------------------------------------------------------------------------
# Checks


def _check_image(image: Any, name: str = "image") -> np.ndarray:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8):
        raise ValueError(f"{name}: expected an (H, W, 3) uint8 RGB array, got "
                         f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}".rstrip())
    return image


def _check_point(point_xy: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    """The click as integer pixel indices (row, column), after checking that it lies in the image."""
    point = np.asarray(point_xy, dtype=float)
    if point.shape != (2,) or not np.isfinite(point).all():
        raise ValueError(f"point_xy: expected one (x, y) pair of finite numbers, got {point_xy!r}")
    H, W = shape[:2]
    x, y = int(np.floor(point[0])), int(np.floor(point[1]))
    if not (0 <= x < W and 0 <= y < H):
        raise ValueError(f"point_xy {tuple(point.tolist())} lies outside the {W} × {H} image "
                         f"(x must be in [0, {W}), y in [0, {H}))")
    return y, x


def _check_params(method: str, params: Mapping[str, Any]) -> dict[str, float]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    params = {k: v for k, v in params.items() if k != "miou"}  # so that tune()'s answer can be passed on as it is
    unknown = set(params) - set(DEFAULTS[method])
    if unknown:
        raise ValueError(f"{method}: unknown parameter(s) {sorted(unknown)}; it takes {sorted(DEFAULTS[method])}")
    return {**DEFAULTS[method], **params}


# ----------------------------------------------------------------------------------------------------------------
# The two methods


def smoothed_lab(image: np.ndarray, sigma: float, lightness: float = 1.0) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image, Gaussian-smoothed (σ = ``sigma`` px; 0: none), in CIELAB (L*, a*, b*) with L*
    multiplied by ``lightness``: (H, W, 3) float."""
    _check_image(image)
    if sigma < 0 or lightness < 0:
        raise ValueError(f"sigma and lightness must be ≥ 0, got {sigma} and {lightness}")
    rgb = image.astype(np.float64) / 255.0
    if sigma > 0:
        rgb = filters.gaussian(rgb, sigma=sigma, channel_axis=-1, preserve_range=True)
    lab = color.rgb2lab(rgb)
    lab[..., 0] *= lightness
    return lab


def _flood_lab(lab: np.ndarray, seed: tuple[int, int], tolerance: float) -> np.ndarray:
    distance = np.linalg.norm(lab - lab[seed], axis=-1)  # ΔE to the click's colour; 0 at the click
    return ndimage.binary_fill_holes(segmentation.flood(distance, seed, tolerance=tolerance))


def flood_fill_mask(image: np.ndarray, point_xy: tuple[float, float], tolerance: float,
                    sigma: float = DEFAULTS["flood"]["sigma"],
                    lightness: float = DEFAULTS["flood"]["lightness"]) -> np.ndarray:
    """The pixels connected to the click whose colour features (:func:`smoothed_lab`) lie within ``tolerance`` of
    the click's, holes filled: (H, W) bool. image: (H, W, 3) uint8 RGB; point_xy: (x, y) pixels."""
    _check_image(image)
    seed = _check_point(point_xy, image.shape)
    if tolerance < 0:
        raise ValueError(f"tolerance must be ≥ 0, got {tolerance}")
    return _flood_lab(smoothed_lab(image, sigma, lightness), seed, tolerance)


def _relief(lab: np.ndarray) -> np.ndarray:
    """The colour gradient's magnitude: Sobel per channel, Euclidean norm over the three; (H, W)."""
    return np.sqrt(sum(filters.sobel(lab[..., c]) ** 2 for c in range(3)))


def _watershed_relief(relief: np.ndarray, seed: tuple[int, int], radius: float) -> np.ndarray:
    H, W = relief.shape
    reach = radius * max(H, W)
    # Every pixel farther than `reach` from the click is a background marker, so the flooding of the click's basin
    # happens inside the disc of that radius: work on the disc's bounding box (and one more pixel), same result.
    top, left = max(0, int(seed[0] - reach) - 1), max(0, int(seed[1] - reach) - 1)
    bottom, right = min(H, int(seed[0] + reach) + 2), min(W, int(seed[1] + reach) + 2)
    crop = relief[top:bottom, left:right].copy()
    rows, cols = np.ogrid[top:bottom, left:right]
    markers = np.where(np.hypot(rows - seed[0], cols - seed[1]) > reach, 2, 0).astype(np.int32)
    markers[rows[:, 0] == 0, :] = 2  # the image's border
    markers[rows[:, 0] == H - 1, :] = 2
    markers[:, cols[0] == 0] = 2
    markers[:, cols[0] == W - 1] = 2
    markers[seed[0] - top, seed[1] - left] = 1  # the click wins where it lies on the border
    crop[markers > 0] = 0  # markers are sources: a click on an edge pixel floods its object from the start
    mask = np.zeros((H, W), dtype=bool)
    mask[top:bottom, left:right] = segmentation.watershed(crop, markers, connectivity=2) == 1
    return mask


def _watershed_lab(lab: np.ndarray, seed: tuple[int, int], radius: float) -> np.ndarray:
    return _watershed_relief(_relief(lab), seed, radius)


def watershed_mask(image: np.ndarray, point_xy: tuple[float, float], radius: float = DEFAULTS["watershed"]["radius"],
                   sigma: float = DEFAULTS["watershed"]["sigma"],
                   lightness: float = DEFAULTS["watershed"]["lightness"]) -> np.ndarray:
    """The click's basin of a marker-based watershed on the colour features' gradient magnitude: (H, W) bool.
    Markers: the click (object); the image border and every pixel farther than ``radius`` × max(H, W) from the
    click (background). image: (H, W, 3) uint8 RGB; point_xy: (x, y) pixels."""
    _check_image(image)
    seed = _check_point(point_xy, image.shape)
    if radius <= 0:
        raise ValueError(f"radius must be > 0 (a fraction of the image's long side), got {radius}")
    return _watershed_lab(smoothed_lab(image, sigma, lightness), seed, radius)


def baseline_mask(image: np.ndarray, point_xy: tuple[float, float], method: str = "flood",
                  **params: float) -> np.ndarray:
    """The mask of ``method`` ("flood" or "watershed") for one click, with ``params`` (defaults: ``DEFAULTS``)."""
    params = _check_params(method, params)
    if method == "flood":
        return flood_fill_mask(image, point_xy, **params)
    return watershed_mask(image, point_xy, **params)


# ----------------------------------------------------------------------------------------------------------------
# Scores


def _check_clicks(images: np.ndarray, targets: np.ndarray, points: np.ndarray,
                  image_index: Sequence[int] | np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not (isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 3
            and images.dtype == np.uint8):
        raise ValueError(f"images: expected an (N, H, W, 3) uint8 array, got "
                         f"{getattr(images, 'shape', type(images).__name__)} {getattr(images, 'dtype', '')}")
    targets = np.asarray(targets)
    if targets.ndim != 3 or targets.shape[1:] != images.shape[1:3]:
        raise ValueError(f"targets: expected (K, {images.shape[1]}, {images.shape[2]}) masks, one per click, "
                         f"got {targets.shape}")
    points = np.asarray(points, dtype=float)
    if points.shape != (len(targets), 2):
        raise ValueError(f"points: expected ({len(targets)}, 2) clicks as (x, y), one per target, got {points.shape}")
    index = np.arange(len(targets)) if image_index is None else np.asarray(image_index)
    if image_index is None and len(images) != len(targets):
        raise ValueError(f"images: expected one image per click ({len(targets)}), got {len(images)}; "
                         f"or pass image_index (K,) to say which image each click is on")
    if index.shape != (len(targets),) or not np.issubdtype(index.dtype, np.integer) \
            or (len(index) and (index.min() < 0 or index.max() >= len(images))):
        raise ValueError(f"image_index: expected ({len(targets)},) integers in [0, {len(images)}), "
                         f"got {index.shape} {index.dtype}")
    return targets.astype(bool), points, index


def baseline_ious(images: np.ndarray, targets: np.ndarray, points: np.ndarray, method: str = "flood", *,
                  image_index: Sequence[int] | np.ndarray | None = None, **params: float) -> np.ndarray:
    """The IoU of ``method``'s mask with the target for each click: (K,).

    images (N, H, W, 3) uint8; targets (K, H, W) bool; points (K, 2) as (x, y); ``image_index`` (K,): the image of
    each click (default: click k is on image k, N = K)."""
    return _grid_ious(images, targets, points, method, [_check_params(method, params)], image_index)[0]


def baseline_miou(images: np.ndarray, targets: np.ndarray, points: np.ndarray, method: str = "flood", *,
                  image_index: Sequence[int] | np.ndarray | None = None, **params: float) -> float:
    """The mean over clicks of :func:`baseline_ious`: mIoU, in [0, 1]."""
    return float(baseline_ious(images, targets, points, method, image_index=image_index, **params).mean())


def _grid_ious(images: np.ndarray, targets: np.ndarray, points: np.ndarray, method: str,
               settings: list[dict[str, float]], image_index: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """IoUs (len(settings), K); the colour features are computed once per image, σ and lightness."""
    targets, points, index = _check_clicks(images, targets, points, image_index)
    ious = np.zeros((len(settings), len(targets)))
    for features in sorted({(s["sigma"], s["lightness"]) for s in settings}):
        rows = [i for i, s in enumerate(settings) if (s["sigma"], s["lightness"]) == features]
        for n in np.unique(index):
            lab = smoothed_lab(images[n], *features)
            relief = _relief(lab) if method == "watershed" else None
            for k in np.flatnonzero(index == n):
                seed = _check_point(points[k], lab.shape)
                for i in rows:
                    if relief is None:
                        mask = _flood_lab(lab, seed, settings[i]["tolerance"])
                    else:
                        mask = _watershed_relief(relief, seed, settings[i]["radius"])
                    ious[i, k] = float(mask_iou(torch.from_numpy(mask), torch.from_numpy(targets[k])))
    return ious


def tune(images: np.ndarray, masks_per_click: np.ndarray, points: np.ndarray, method: str = "flood",
         grid: Mapping[str, Iterable[float]] | None = None, *,
         image_index: Sequence[int] | np.ndarray | None = None) -> dict[str, float]:
    """Grid search: the parameters of ``method`` with the highest mIoU on the given (training!) clicks.

    ``grid`` maps parameter names to the values to try (every combination; a parameter left out keeps its default;
    default grid: ``GRIDS[method]``). Ties go to the first in grid order. Returns the parameters and their
    ``"miou"``, e.g. ``{"tolerance": 18.0, "sigma": 0.5, "lightness": 0.5, "miou": 0.72}``, which
    :func:`baseline_miou` and :func:`baseline_mask` take as they are (``**best``; they ignore ``"miou"``)."""
    grid = GRIDS[method] if grid is None else grid
    names = list(grid)
    values = [list(grid[name]) for name in names]
    if any(len(v) == 0 for v in values):
        raise ValueError(f"grid: every parameter needs at least one value, got {dict(zip(names, values, strict=True))}")
    settings = [_check_params(method, dict(zip(names, combo, strict=True))) for combo in itertools.product(*values)]
    if not settings:
        raise ValueError("grid: nothing to try")
    miou = _grid_ious(images, masks_per_click, points, method, settings, image_index).mean(axis=1)
    best = int(np.argmax(miou))
    return {**settings[best], "miou": float(miou[best])}


GRIDS: dict[str, dict[str, list[float]]] = {
    "flood": {"tolerance": [6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 25.0, 30.0], "sigma": [0.0, 0.5, 1.0, 2.0]},
    "watershed": {"radius": [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6], "sigma": [0.0, 0.5, 1.0]},
}


# ----------------------------------------------------------------------------------------------------------------
# Clicks from instance maps


def object_clicks(instance_maps: np.ndarray, mode: str = "farthest", seed: int = 0,
                  min_pixels: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One click per object of each instance map (N, H, W) (0 = background, k > 0 = object k) with at least
    ``min_pixels`` pixels. ``mode``: "farthest" (the pixel farthest from the object's boundary, as
    :func:`helpers.sam.training.farthest_points`) or "uniform" (a pixel drawn uniformly from the object, as
    :func:`helpers.sam.training.sample_points`, with a generator seeded by ``seed``).

    Returns image_index (K,) int, targets (K, H, W) bool and points (K, 2) float as (x, y)."""
    maps = np.asarray(instance_maps)
    if maps.ndim != 3 or not np.issubdtype(maps.dtype, np.integer):
        raise ValueError(f"instance_maps: expected (N, H, W) integer instance maps, got {maps.shape} {maps.dtype}")
    if mode not in ("farthest", "uniform"):
        raise ValueError(f"mode must be 'farthest' or 'uniform', got {mode!r}")
    index, masks = all_objects(torch.from_numpy(maps.astype(np.int64)), min_pixels)  # the lab's object order
    if mode == "farthest":
        points = farthest_points(masks)
    else:
        points = sample_points(masks, torch.Generator().manual_seed(seed))
    return index.numpy(), masks.numpy(), points.numpy().astype(float)
