"""Boxes of masks, their overlaps and non-maximum suppression: what the data engine removes duplicates with and
what the box prompt is drawn from (Kirillov et al., 2023, appendix A and B). Each function equals its counterpart
in torchvision or ``segment_anything.utils.amg`` (tests/sam/test_boxes.py).

Conventions: boxes are (x1, y1, x2, y2) with the corners at the first and last pixel of the mask (inclusive
indices), and areas and overlaps are computed without a "+1" (as torchvision, OpenCV and segment_anything do), so a
mask of one pixel has a box of area 0.
"""

from __future__ import annotations

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------------
# Boxes


def _check_boxes(name: str, boxes: torch.Tensor) -> None:
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}: expected a tensor of shape (N, 4) as (x1, y1, x2, y2), "
                         f"got {tuple(getattr(boxes, 'shape', ())) or type(boxes).__name__}")


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """The tightest box around each mask: (..., H, W) bool → (..., 4) int64 (x1, y1, x2, y2), the first and
    last row and column that hold a mask pixel; (0, 0, 0, 0) for an empty mask."""
    if masks.dim() < 2:
        raise ValueError(f"expected masks of shape (..., H, W), got {tuple(masks.shape)}")
    if masks.shape[-1] == 0 or masks.shape[-2] == 0:
        raise ValueError(f"expected masks of shape (..., H, W) with H, W ≥ 1, got {tuple(masks.shape)}")
    masks = masks.bool()
    H, W = masks.shape[-2:]
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (..., H): row y holds a pixel; (..., W): column x does
    ys = torch.arange(H, device=masks.device)
    xs = torch.arange(W, device=masks.device)
    y1, y2 = torch.where(rows, ys, H).amin(dim=-1), torch.where(rows, ys, -1).amax(dim=-1)
    x1, x2 = torch.where(cols, xs, W).amin(dim=-1), torch.where(cols, xs, -1).amax(dim=-1)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    return torch.where(rows.any(dim=-1, keepdim=True), boxes, 0)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(x2 − x1) · (y2 − y1) for each box: (N, 4) → (N,). No "+1": a box is a region of the plane."""
    _check_boxes("boxes", boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair: (N, 4), (M, 4) → (N, M) float. 0 where the union is empty (two
    boxes of area 0), so such boxes never suppress each other (torchvision's NaN does the same)."""
    _check_boxes("boxes1", boxes1)
    _check_boxes("boxes2", boxes2)
    a, b = boxes1.double(), boxes2.double()  # float64: exact for pixel boxes, no rounding at the threshold
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


# ----------------------------------------------------------------------------------------------------------------
# Non-maximum suppression


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: visit the boxes by decreasing score (ties: the earlier box first) and
    keep each one that no kept box overlaps with IoU > ``iou_threshold``. Returns the kept indices (int64),
    by decreasing score."""
    _check_boxes("boxes", boxes)
    if not isinstance(scores, torch.Tensor) or scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores: expected a tensor of shape ({boxes.shape[0]},), one per box, "
                         f"got {tuple(getattr(scores, 'shape', ())) or type(scores).__name__}")
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()  # (N, N), in score order
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]  # every box this one overlaps too much is out
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, categories: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS within each category only, in one call: shift each category's boxes by its own offset, larger than
    the span of all the boxes, so that boxes of different categories cannot overlap. Returns the kept indices
    (int64) of all categories, by decreasing score."""
    _check_boxes("boxes", boxes)
    if not isinstance(categories, torch.Tensor) or categories.shape != boxes.shape[:1]:
        raise ValueError(f"categories: expected a tensor of shape ({boxes.shape[0]},), one per box, "
                         f"got {tuple(getattr(categories, 'shape', ())) or type(categories).__name__}")
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shifted = boxes.double() - boxes.min().double()  # every coordinate now in [0, span]
    offsets = categories.double() * (shifted.max() + 1)  # category k lives in [k (span + 1), k (span + 1) + span]
    return nms(shifted + offsets[:, None], scores, iou_threshold)
