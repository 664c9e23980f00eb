"""helpers.sam.baselines: the classical click-to-mask baseline on synthetic images with a known answer, its
parameters' effect, the grid search, and a finite score on a few smoke scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.sam import scenes
from helpers.sam.baselines import (
    DEFAULTS,
    baseline_ious,
    baseline_mask,
    baseline_miou,
    flood_fill_mask,
    object_clicks,
    tune,
    watershed_mask,
)
from helpers.sam.training import mask_iou as torch_mask_iou


def mask_iou(mask: np.ndarray, target: np.ndarray) -> float:
    """The course's mask IoU (helpers.sam.training.mask_iou) of two (H, W) numpy masks."""
    return float(torch_mask_iou(torch.from_numpy(np.asarray(mask)), torch.from_numpy(np.asarray(target))))


def square_scene(size: int = 64, colour=(200, 40, 40), ground=(40, 90, 200)) -> tuple[np.ndarray, np.ndarray]:
    """A uniform 14 × 12 square (x 25–38, y 24–35) on a uniform background: the image (H, W, 3) and its mask."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = ground
    target = np.zeros((size, size), dtype=bool)
    target[24:36, 25:39] = True
    image[target] = colour
    return image, target


def ramp_scene() -> tuple[np.ndarray, np.ndarray]:
    """A square whose colour darkens steadily from left to right (shading) on a grey ground."""
    image, target = square_scene(colour=(0, 0, 0), ground=(128, 128, 128))
    ramp = np.linspace(250, 130, 14).round().astype(np.uint8)
    image[24:36, 25:39, 0] = ramp
    image[24:36, 25:39, 1:] = 20
    return image, target


def test_uniform_square_is_found_exactly():
    image, target = square_scene()
    for point in [(31, 29), (25, 24), (38.7, 35.2)]:  # centre, corners (fractions: the pixel it falls in)
        mask = flood_fill_mask(image, point, tolerance=10, sigma=0)
        assert mask.dtype == bool and mask.shape == target.shape
        assert mask_iou(mask, target) == 1.0
        assert mask_iou(baseline_mask(image, point, "flood", sigma=0), target) == 1.0
    # on the background: all of it, and the square too (a hole in the background, filled)
    assert flood_fill_mask(image, (2, 2), tolerance=10, sigma=0).all()
    # smoothing blurs the edge into colours between the two: less than the square, nothing outside it
    smoothed = flood_fill_mask(image, (31, 29), tolerance=10, sigma=1.0)
    assert 0.5 < mask_iou(smoothed, target) < 1.0 and not (smoothed & ~target).any()
    for point in [(31, 29), (27, 33)]:
        assert mask_iou(watershed_mask(image, point, radius=0.25, sigma=0), target) == 1.0
        assert mask_iou(baseline_mask(image, point, "watershed"), target) == 1.0
    # a click on the corner pixel, with background markers far enough: the square, give or take the corners
    for point in [(25, 24), (38.7, 35.2)]:
        assert mask_iou(watershed_mask(image, point, radius=0.4), target) > 0.95


def test_flood_tolerance_grows_the_mask_monotonically():
    image, target = ramp_scene()
    areas = [flood_fill_mask(image, (25, 29), tolerance=t, sigma=0).sum() for t in (0, 5, 10, 20, 40, 80, 200)]
    assert areas == sorted(areas) and areas[0] < target.sum() // 4 and areas[-1] == image.shape[0] * image.shape[1]
    masks = [flood_fill_mask(image, (25, 29), tolerance=t, sigma=0) for t in (5, 20)]
    assert not (masks[0] & ~masks[1]).any()  # nested
    # somewhere in between, the whole shaded square and nothing else
    assert max(mask_iou(flood_fill_mask(image, (25, 29), t, sigma=0), target) for t in range(10, 80, 5)) == 1.0


def test_watershed_radius_limits_the_object():
    image, target = square_scene()
    small = watershed_mask(image, (31, 29), radius=0.05, sigma=0)  # background markers 3.2 px from the click
    assert 0 < small.sum() < target.sum() / 2 and small[29, 31] and not (small & ~target).any()
    sizes = [watershed_mask(image, (31, 29), radius=r, sigma=0).sum() for r in (0.03, 0.05, 0.08, 0.12, 0.25)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] == target.sum()
    # from the corner, markers inside the square (closer than the far corner) cut it
    assert mask_iou(watershed_mask(image, (25, 24), radius=0.25), target) < 0.6


def test_tune_returns_the_best_of_the_grid():
    scenes = [ramp_scene(), square_scene(colour=(120, 200, 60), ground=(60, 30, 30))]
    images = np.stack([s[0] for s in scenes])
    targets = np.stack([s[1] for s in scenes])
    points = np.array([[25.0, 29.0], [31.0, 29.0]])
    grid = {"tolerance": [1.0, 10.0, 40.0, 400.0], "sigma": [0.0, 1.0]}
    best = tune(images, targets, points, "flood", grid)
    scores = {(t, s): baseline_miou(images, targets, points, "flood", tolerance=t, sigma=s)
              for t in grid["tolerance"] for s in grid["sigma"]}
    assert best["miou"] == pytest.approx(max(scores.values()))
    assert scores[best["tolerance"], best["sigma"]] == pytest.approx(best["miou"])
    assert best["lightness"] == DEFAULTS["flood"]["lightness"]  # not in the grid: the default
    assert scores[1.0, 0.0] < best["miou"] and scores[400.0, 0.0] < best["miou"]  # the grid matters
    # image_index: the same clicks on a shared image stack
    ious = baseline_ious(images, np.concatenate([targets, targets]), np.concatenate([points, points]), "flood",
                         image_index=[0, 1, 0, 1], tolerance=best["tolerance"], sigma=best["sigma"])
    assert ious.shape == (4,) and ious.mean() == pytest.approx(best["miou"])
    assert baseline_miou(images, targets, points, "flood", **best) == pytest.approx(best["miou"])  # as it is


def test_bad_input_is_named():
    image, target = square_scene()
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        flood_fill_mask(image.astype(float), (1, 1), 10)
    with pytest.raises(ValueError, match="outside the 64 × 64 image"):
        flood_fill_mask(image, (64, 1), 10)
    with pytest.raises(ValueError, match="one \\(x, y\\) pair"):
        watershed_mask(image, (1, 2, 3))
    with pytest.raises(ValueError, match="method must be one of"):
        baseline_mask(image, (1, 1), "grabcut")
    with pytest.raises(ValueError, match="unknown parameter"):
        baseline_mask(image, (1, 1), "watershed", tolerance=3)
    with pytest.raises(ValueError, match=r"points: expected \(1, 2\)"):
        baseline_miou(image[None], target[None], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="one image per click"):
        baseline_miou(np.stack([image, image]), target[None], np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"targets: expected \(K, 64, 64\)"):
        baseline_miou(image[None], target[None, :5], np.zeros((1, 2)))


def test_object_clicks_lie_on_their_objects():
    maps = np.zeros((2, 20, 20), dtype=np.uint8)
    maps[0, 2:8, 2:8], maps[0, 10:18, 5:15], maps[1, 0:20, 0:3] = 1, 3, 2
    for mode in ("farthest", "uniform"):
        index, targets, points = object_clicks(maps, mode, seed=0)
        assert index.tolist() == [0, 0, 1] and targets.shape == (3, 20, 20) and points.shape == (3, 2)
        assert all(targets[k][int(y), int(x)] for k, (x, y) in enumerate(points))
        assert targets.sum((1, 2)).tolist() == [36, 80, 60]
    _, _, farthest = object_clicks(maps, "farthest")
    assert farthest[1].tolist() == [8.0, 13.0]  # 4 px from every edge of the 10 × 8 box; first in row-major order
    uniform = [object_clicks(maps, "uniform", seed=s)[2] for s in (0, 0, 1)]
    np.testing.assert_array_equal(uniform[0], uniform[1])
    assert not np.array_equal(uniform[0], uniform[2])
    assert len(object_clicks(maps, min_pixels=50)[0]) == 2


def test_smoke_scenes_give_a_score_in_range():
    data = scenes.load("val", 16, 64)
    index, targets, points = object_clicks(data["masks"][:4], "farthest")
    for method in ("flood", "watershed"):
        miou = baseline_miou(data["images"], targets, points, method, image_index=index)
        assert np.isfinite(miou) and 0.0 <= miou <= 1.0
        assert miou > 0.2  # a click on an object finds a good part of it
