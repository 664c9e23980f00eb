"""SAM's data engine, fully automatic stage: masks for a whole image from a grid of point prompts, kept when
they are confident and stable, duplicates removed by non-maximum suppression (the chapter derives each piece).

Kirillov et al., 2023, "Segment Anything", §4 (the data engine) and appendix B (automatic mask generation).
Each function equals its counterpart in ``segment_anything.utils.amg`` (tests/sam/test_engine.py); the boxes and
non-maximum suppression are :mod:`helpers.sam.boxes`;
:class:`AutomaticMaskGenerator` keeps the same masks as ``segment_anything.SamAutomaticMaskGenerator`` with one
crop layer (``crop_n_layers=0``), no small-region clean-up, on the same model.

Conventions: points are (x, y) pixels; boxes are (x1, y1, x2, y2) with the corners at the first and last
pixel of the mask (inclusive indices), and areas and overlaps are computed without a "+1" (as torchvision,
OpenCV and segment_anything do), so a mask of one pixel has a box of area 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers.sam.boxes import masks_to_boxes, nms
from helpers.sam.transforms import prepare_image, transform_coords

STAGES = ("candidates", "predicted IoU", "stability", "NMS")  # the counts a MaskSet carries, in order

# ----------------------------------------------------------------------------------------------------------------
# Prompts: a regular grid of points


def build_point_grid(n_per_side: int) -> np.ndarray:
    """n × n points at the centres of an n × n grid of cells over [0, 1]²: (n², 2) as (x, y), x varying fastest
    (row by row). The paper's fully automatic stage uses n = 32 (1024 prompts per image)."""
    if not isinstance(n_per_side, (int, np.integer)) or isinstance(n_per_side, bool) or n_per_side < 1:
        raise ValueError(f"n_per_side must be a positive int, got {n_per_side!r}")
    half_cell = 1 / (2 * n_per_side)
    side = np.linspace(half_cell, 1 - half_cell, n_per_side)  # cell centres along one side
    xs, ys = np.meshgrid(side, side)  # (n, n) each: row i holds the points at height side[i]
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Filters: predicted IoU (the model's own confidence) and stability


def stability_score(logits: torch.Tensor, mask_threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """IoU of the mask cut at ``mask_threshold + offset`` with the mask cut at ``mask_threshold − offset``:
    (..., H, W) logits → (...). The first mask lies inside the second, so the IoU is a ratio of pixel counts.
    A mask that is empty at the lower cut scores 0 (segment_anything gives NaN there; both fail any filter)."""
    if logits.dim() < 2:
        raise ValueError(f"expected mask logits of shape (..., H, W), got {tuple(logits.shape)}")
    inner = (logits > mask_threshold + offset).sum(dim=(-2, -1))
    outer = (logits > mask_threshold - offset).sum(dim=(-2, -1))
    return torch.where(outer > 0, inner / outer.clamp(min=1), torch.zeros((), dtype=torch.float32))


# ----------------------------------------------------------------------------------------------------------------
# Selecting masks: the two filters, then NMS on their boxes


@dataclass
class MaskSet:
    """Masks of one image with their scores. ``counts``: how many candidates were left after each stage of
    :data:`STAGES`."""

    masks: torch.Tensor  # (K, H, W) bool
    scores: torch.Tensor  # (K,) predicted IoU, the model's confidence
    stability: torch.Tensor  # (K,) stability score
    boxes: torch.Tensor  # (K, 4) int64 (x1, y1, x2, y2)
    points: torch.Tensor  # (K, 2) float64: the point (x, y) in pixels that prompted each mask
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def index(self, keep: torch.Tensor) -> MaskSet:
        """The masks at ``keep`` (indices or a boolean mask), with the same counts."""
        return MaskSet(self.masks[keep], self.scores[keep], self.stability[keep], self.boxes[keep],
                       self.points[keep], dict(self.counts))

    @staticmethod
    def cat(parts: Sequence[MaskSet], size: tuple[int, int]) -> MaskSet:
        """Masks of several batches in one set; counts added up. ``size``: (H, W), for an empty result."""
        if not parts:
            return MaskSet(torch.zeros(0, *size, dtype=torch.bool), torch.zeros(0), torch.zeros(0),
                           torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 2, dtype=torch.float64))
        counts = {stage: sum(p.counts.get(stage, 0) for p in parts) for stage in parts[0].counts}
        return MaskSet(*(torch.cat([getattr(p, name) for p in parts])
                         for name in ("masks", "scores", "stability", "boxes", "points")), counts=counts)


def filter_candidates(logits: torch.Tensor, iou_preds: torch.Tensor, points: torch.Tensor, *,
                      pred_iou_thresh: float, stability_score_thresh: float, stability_score_offset: float = 1.0,
                      mask_threshold: float = 0.0) -> MaskSet:
    """Keep the candidates whose predicted IoU is above ``pred_iou_thresh`` and whose stability score is at
    least ``stability_score_thresh`` (segment_anything's comparisons; a threshold ≤ 0 switches its filter off),
    then cut the logits at ``mask_threshold`` and box them. logits: (N, H, W); iou_preds: (N,); points: (N, 2)."""
    if logits.dim() != 3:
        raise ValueError(f"logits: expected shape (N, H, W), one mask per candidate, got {tuple(logits.shape)}")
    if iou_preds.shape != logits.shape[:1] or points.shape != (logits.shape[0], 2):
        raise ValueError(f"expected iou_preds of shape ({logits.shape[0]},) and points of shape "
                         f"({logits.shape[0]}, 2), got {tuple(iou_preds.shape)} and {tuple(points.shape)}")
    counts = {"candidates": int(logits.shape[0])}
    keep = iou_preds > pred_iou_thresh if pred_iou_thresh > 0 else torch.ones_like(iou_preds, dtype=torch.bool)
    logits, iou_preds, points = logits[keep], iou_preds[keep], points[keep]
    counts["predicted IoU"] = int(logits.shape[0])
    stability = stability_score(logits, mask_threshold, stability_score_offset)
    keep = stability >= stability_score_thresh if stability_score_thresh > 0 else torch.ones_like(stability).bool()
    logits, iou_preds, points, stability = logits[keep], iou_preds[keep], points[keep], stability[keep]
    counts["stability"] = int(logits.shape[0])
    masks = logits > mask_threshold
    return MaskSet(masks, iou_preds, stability, masks_to_boxes(masks), points, counts)


def suppress_duplicates(found: MaskSet, box_nms_thresh: float) -> MaskSet:
    """NMS on the masks' boxes, scored by predicted IoU: the kept masks, by decreasing predicted IoU."""
    kept = found.index(nms(found.boxes.float(), found.scores, box_nms_thresh))
    kept.counts["NMS"] = len(kept)
    return kept


def select_masks(logits: torch.Tensor, iou_preds: torch.Tensor, points: torch.Tensor, *,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7,
                 mask_threshold: float = 0.0) -> MaskSet:
    """:func:`filter_candidates` then :func:`suppress_duplicates`, on candidates already predicted (defaults:
    segment_anything's, those of the paper's ViT-H)."""
    found = filter_candidates(logits, iou_preds, points, pred_iou_thresh=pred_iou_thresh,
                              stability_score_thresh=stability_score_thresh,
                              stability_score_offset=stability_score_offset, mask_threshold=mask_threshold)
    return suppress_duplicates(found, box_nms_thresh)


# ----------------------------------------------------------------------------------------------------------------
# The automatic mask generator


class AutomaticMaskGenerator:
    """Masks for a whole image (§4, fully automatic stage): prompt the model with each point of an n × n grid
    (one foreground point, three masks per point), keep the confident and stable masks, remove duplicates by
    NMS on their boxes.

    ``model``: :class:`helpers.sam.Sam` or ``segment_anything.modeling.Sam`` (anything with their
    ``image_encoder``, ``prompt_encoder``, ``mask_decoder``, ``preprocess`` and ``postprocess_masks``). The
    defaults are segment_anything's. Unlike ``SamAutomaticMaskGenerator``, no zoomed-in crops and no clean-up
    of small regions."""

    def __init__(self, model: nn.Module, points_per_side: int = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7) -> None:
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be at least 1, got {points_per_batch}")
        self.model = model
        self.point_grid = build_point_grid(points_per_side)  # (n², 2) in [0, 1]²
        self.points_per_batch = points_per_batch
        self.thresholds: dict[str, Any] = dict(pred_iou_thresh=pred_iou_thresh,
                                               stability_score_thresh=stability_score_thresh,
                                               stability_score_offset=stability_score_offset)
        self.box_nms_thresh = box_nms_thresh

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Run the image encoder once: (H, W, 3) uint8 → the image embedding (1, C, e, e) and the resized (h, w)."""
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise ValueError(f"image: expected an (H, W, 3) uint8 RGB array, got "
                             f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}")
        device = next(self.model.parameters()).device
        resized = prepare_image(image, self.model.image_encoder.img_size).to(device)  # (3, h, w), 0–255
        embedding = self.model.image_encoder(self.model.preprocess(resized[None]))
        return embedding, (int(resized.shape[1]), int(resized.shape[2]))

    @torch.no_grad()
    def predict(self, embedding: torch.Tensor, points: np.ndarray, input_size: tuple[int, int],
                original_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Three masks per point: (P, 2) pixels (x, y) in the original image → logits (P, 3, H, W) at the
        original size and predicted IoUs (P, 3)."""
        S = self.model.image_encoder.img_size
        device = embedding.device
        coords = torch.as_tensor(transform_coords(points, original_size, S), device=device)[:, None, :]  # (P, 1, 2)
        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=device)  # 1: foreground
        prompt_encoder = self.model.prompt_encoder
        sparse, dense = prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low_res, iou_preds = self.model.mask_decoder(
            image_embeddings=embedding, image_pe=prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=True)
        return self.model.postprocess_masks(low_res, input_size, original_size), iou_preds

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> MaskSet:
        """All the masks of an (H, W, 3) uint8 image, by decreasing predicted IoU."""
        embedding, input_size = self.embed(image)
        original_size = (int(image.shape[0]), int(image.shape[1]))
        points = self.point_grid * np.array(original_size[::-1])[None]  # (n², 2) pixels (x, y)
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start:start + self.points_per_batch]
            logits, iou_preds = self.predict(embedding, batch, input_size, original_size)  # (B, 3, H, W), (B, 3)
            M = logits.shape[1]
            parts.append(filter_candidates(
                logits.flatten(0, 1), iou_preds.flatten(0, 1),
                torch.as_tensor(np.repeat(batch, M, axis=0), device=logits.device),  # one point per candidate
                mask_threshold=self.model.mask_threshold, **self.thresholds))
        return suppress_duplicates(MaskSet.cat(parts, original_size), self.box_nms_thresh)
