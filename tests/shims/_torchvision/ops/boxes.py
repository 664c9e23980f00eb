"""Stand-in for ``torchvision.ops.boxes.box_area`` and ``batched_nms``: boxes are (N, 4) tensors of
(x1, y1, x2, y2) corners, as torchvision documents them."""

from __future__ import annotations

import torch


def _check_boxes(boxes: torch.Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"expected boxes of shape (N, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area (x2 − x1)·(y2 − y1) of each box: (N, 4) → (N,)."""
    _check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair of boxes: (N, 4) → (N, N)."""
    area = box_area(boxes)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area[:, None] + area[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: visit the boxes by decreasing score and keep each one that no kept box
    overlaps with IoU > ``iou_threshold``. Returns the kept indices (int64), by decreasing score."""
    _check_boxes(boxes)
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"expected scores of shape ({boxes.shape[0]},), got {tuple(scores.shape)}")
    order = torch.sort(scores, descending=True, stable=True).indices
    ordered = boxes[order] if boxes.is_floating_point() else boxes[order].float()
    overlaps = box_iou(ordered) > iou_threshold
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Non-maximum suppression within each category of ``idxs``: boxes of different categories never suppress
    each other. Returns the kept indices (int64) of all categories together, by decreasing score."""
    _check_boxes(boxes)
    if idxs.shape != boxes.shape[:1]:
        raise ValueError(f"expected idxs of shape ({boxes.shape[0]},), got {tuple(idxs.shape)}")
    keep = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for category in torch.unique(idxs):
        members = torch.nonzero(idxs == category).flatten()
        keep[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    kept = torch.nonzero(keep).flatten()
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
