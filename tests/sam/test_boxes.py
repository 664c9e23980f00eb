"""helpers.sam.boxes against the references: boxes against segment_anything's batched_mask_to_box, NMS against OpenCV
(and torchvision where it is installed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from segment_anything.utils.amg import batched_mask_to_box

from helpers.sam import boxes as B

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        B.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"scores: expected a tensor of shape \(3,\)"):
        B.nms(torch.zeros(3, 4), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"categories: expected a tensor of shape \(3,\)"):
        B.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        B.masks_to_boxes(torch.zeros(4, 0, 3, dtype=torch.bool))


def test_masks_to_boxes_equals_segment_anything():
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(5, 3, 17, 23, generator=gen) > 0.97
    masks[0, 0] = False  # empty
    masks[1, 1] = False
    masks[1, 1, 4, 9] = True  # one pixel: a box of area 0
    ours = B.masks_to_boxes(masks)
    assert torch.equal(ours, batched_mask_to_box(masks))
    assert ours[0, 0].tolist() == [0, 0, 0, 0] and ours[1, 1].tolist() == [9, 4, 9, 4]
    single = torch.zeros(8, 8, dtype=torch.bool)
    single[2:5, 1:7] = True
    assert B.masks_to_boxes(single).tolist() == [1, 2, 6, 4] == batched_mask_to_box(single).tolist()



# ----------------------------------------------------------------------------------------------------------------
# NMS


def random_boxes(n: int, seed: int, size: float = 100.0, integer: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """n boxes in clusters (so that many overlap) and distinct positive scores."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(1, n // 6), 2, generator=gen) * size
    picks = torch.randint(len(centres), (n,), generator=gen)
    xy = centres[picks] + 6 * torch.randn(n, 2, generator=gen)
    wh = 5 + 25 * torch.rand(n, 2, generator=gen)
    boxes = torch.cat([xy, xy + wh], dim=1)
    if integer:
        boxes = boxes.round()
    scores = torch.randperm(n, generator=gen).double() / n + 0.01  # distinct and > 0 (OpenCV drops scores ≤ 0)
    return boxes.double(), scores


def opencv_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    rects = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes.tolist()]  # OpenCV takes (x, y, w, h)
    return np.asarray(cv2.dnn.NMSBoxes(rects, scores.tolist(), 0.0, threshold)).flatten().tolist()


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("seed,integer", [(0, False), (1, True), (2, False)])
def test_nms_equals_opencv(threshold, seed, integer):
    boxes, scores = random_boxes(150, seed, integer=integer)
    if integer:  # pixel boxes can overlap with an IoU of exactly 0.1 (22/220): see test_an_iou_exactly_at_the_threshold
        threshold += 1e-3
    kept = B.nms(boxes, scores, threshold)
    assert kept.dtype == torch.long
    assert kept.tolist() == opencv_nms(boxes, scores, threshold)  # same boxes, same order (decreasing score)
    if 0 < threshold < 0.9:
        assert 1 < len(kept) < len(boxes)  # the check has teeth: some kept, some suppressed


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.7])
def test_batched_nms_equals_opencv_and_a_loop(threshold):
    boxes, scores = random_boxes(120, 3)
    categories = torch.randint(4, (120,), generator=torch.Generator().manual_seed(4))
    kept = B.batched_nms(boxes, scores, categories, threshold)
    rects = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes.tolist()]
    ref = np.asarray(cv2.dnn.NMSBoxesBatched(rects, scores.tolist(), categories.tolist(), 0.0, threshold))
    assert sorted(kept.tolist()) == sorted(ref.flatten().tolist())
    loop = torch.cat([torch.nonzero(categories == c).flatten()[B.nms(boxes[categories == c], scores[categories == c],
                                                                      threshold)] for c in categories.unique()])
    assert kept.tolist() == loop[torch.sort(scores[loop], descending=True, stable=True).indices].tolist()
    assert len(kept) > len(B.nms(boxes, scores, threshold))  # categories matter here


def test_iou_has_no_plus_one_like_opencv():
    """Two 2 × 2 boxes overlapping in a 1 × 1 square: IoU 1/7 ≈ 0.14 (with a "+1" on every side it would be
    4/14 ≈ 0.29). At threshold 0.2 both stay, in OpenCV and here."""
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    scores = torch.tensor([0.9, 0.8])
    assert B.box_iou(boxes, boxes)[0, 1].item() == pytest.approx(1 / 7)
    assert B.nms(boxes, scores, 0.2).tolist() == opencv_nms(boxes, scores, 0.2) == [0, 1]
    assert B.nms(boxes, scores, 0.1).tolist() == opencv_nms(boxes, scores, 0.1) == [0]


def test_an_iou_exactly_at_the_threshold():
    """IoU = threshold is not "> threshold": the box stays (as in torchvision). OpenCV computes the overlap as
    1 − (1 − IoU) in double precision, which can land just above: there it may go."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 1.0]])  # IoU 10 / 100 = 0.1 exactly
    scores = torch.tensor([0.9, 0.8])
    assert B.box_iou(boxes, boxes)[0, 1].item() == 0.1
    assert B.nms(boxes, scores, 0.1).tolist() == [0, 1]
    assert opencv_nms(boxes, scores, 0.1) == [0]  # 1 − (1 − 0.1) = 0.10000000000000003 > 0.1
    assert B.nms(boxes, scores, 0.0999).tolist() == opencv_nms(boxes, scores, 0.0999) == [0]


def test_ties_and_degenerate_boxes():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
    scores = torch.tensor([0.5, 0.5, 0.7, 0.6])
    # equal scores: the earlier box first (a stable sort), as OpenCV and torchvision do
    assert B.nms(boxes[:2], scores[:2], 0.5).tolist() == opencv_nms(boxes[:2], scores[:2], 0.5) == [0]
    # boxes of area 0 never suppress each other here (torchvision: IoU NaN); OpenCV counts them as identical
    assert B.nms(boxes[2:], scores[2:], 0.5).tolist() == [0, 1]
    assert opencv_nms(boxes[2:], scores[2:], 0.5) == [0]
    assert B.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert B.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5).tolist() == []


def test_nms_equals_torchvision():  # pragma: no cover - only where a real torchvision is installed
    torchvision = pytest.importorskip("torchvision")
    for seed in range(3):
        boxes, scores = random_boxes(200, seed)
        categories = torch.randint(3, (200,), generator=torch.Generator().manual_seed(seed))
        for threshold in (0.3, 0.5, 0.7):
            assert B.nms(boxes, scores, threshold).tolist() == torchvision.ops.nms(boxes, scores, threshold).tolist()
            assert (B.batched_nms(boxes, scores, categories, threshold).tolist()
                    == torchvision.ops.batched_nms(boxes, scores, categories, threshold).tolist())


