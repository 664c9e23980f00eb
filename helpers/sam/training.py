"""SAM's training recipe: the losses, the prompts drawn from a ground-truth mask, and the simulated interactive
session (one canonical copy; chapter SAM 4 derives it, the SAM lab imports it).

Kirillov et al., 2023, "Segment Anything", §3 ("Losses and training") and appendix A ("Training algorithm"):
- mask loss: focal loss (Lin et al., 2017) and dice loss (Milletari et al., 2016) in a 20:1 ratio;
- ambiguity: the decoder predicts M = 3 masks for one prompt, and only the lowest of their losses is back-propagated;
- IoU head: mean-square error between each predicted IoU and the IoU of that mask with the ground truth;
- prompts: a point uniformly from the ground-truth mask, or its bounding box with noise (standard deviation 10% of
  the box side, at most 20 px); later points from the error region of the previous prediction (false negative →
  foreground point, false positive → background point), with the previous mask logits as a mask prompt.

Shapes: B prompts (one object each), M masks per prompt, H × W the ground truth's size, 4e × 4e the low-resolution
logits of the decoder. Points are (x, y) pixel coordinates (column, row) in the S × S input frame of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from helpers.sam.boxes import masks_to_boxes

if TYPE_CHECKING:
    from helpers.sam.model import Sam

FOCAL_WEIGHT, DICE_WEIGHT = 20.0, 1.0  # the paper's 20:1
BOX_NOISE, BOX_NOISE_MAX = 0.1, 20.0  # noise std: 10% of the box side, at most 20 px


def _check_pair(logits: torch.Tensor, targets: torch.Tensor) -> None:
    try:
        fits = torch.broadcast_shapes(logits.shape, targets.shape) == logits.shape
    except RuntimeError:
        fits = False
    if not fits or logits.dim() < 2 or targets.dim() < 2 or logits.shape[-2:] != targets.shape[-2:]:
        raise ValueError(f"expected logits (..., H, W) and targets (..., H, W) that broadcast to them, "
                         f"got {tuple(logits.shape)} and {tuple(targets.shape)}")


# ----------------------------------------------------------------------------------------------------------------
# Losses


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Focal loss per pixel, FL = −α_t (1 − p_t)^γ log p_t (Lin et al. 2017, eq. 5), the same shape as ``logits``.

    p_t = σ(x) for a foreground pixel (target 1) and 1 − σ(x) for a background one (target 0); α_t = α and 1 − α;
    α < 0 turns the weighting off. Computed from the logits x as p_t = σ(s·x) with s = ±1, which is stable."""
    _check_pair(logits, targets)
    if not ((targets == 0) | (targets == 1)).all():
        raise ValueError("targets must be binary (0 or 1)")
    sign = 2.0 * targets.to(logits.dtype) - 1.0  # s: +1 foreground, −1 background
    log_p_t = F.logsigmoid(sign * logits)
    loss = -torch.sigmoid(-sign * logits).pow(gamma) * log_p_t  # 1 − p_t = σ(−s·x)
    if alpha >= 0:
        loss = torch.where(targets.bool(), alpha, 1.0 - alpha) * loss
    return loss


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss per mask, 1 − (2 Σ p·t + smooth) / (Σ p + Σ t + smooth) over H × W, p = σ(x): (...,)."""
    _check_pair(logits, targets)
    p, t = logits.sigmoid().flatten(-2), targets.to(logits.dtype).flatten(-2)
    return 1.0 - (2.0 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)


def mask_loss(logits: torch.Tensor, targets: torch.Tensor, focal_weight: float = FOCAL_WEIGHT,
              dice_weight: float = DICE_WEIGHT) -> torch.Tensor:
    """The paper's mask loss per mask: 20 · (focal loss, mean over pixels) + 1 · dice loss: (...,)."""
    focal = sigmoid_focal_loss(logits, targets).flatten(-2).mean(-1)
    return focal_weight * focal + dice_weight * dice_loss(logits, targets)


def mask_iou(masks: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Intersection over union of binary masks (..., H, W) with targets (..., H, W), broadcast against each other:
    (...,); 1 where both are empty."""
    try:
        torch.broadcast_shapes(masks.shape, targets.shape)
        fits = masks.dim() >= 2 and targets.dim() >= 2 and masks.shape[-2:] == targets.shape[-2:]
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"expected masks (..., H, W) and targets (..., H, W) that broadcast together, "
                         f"got {tuple(masks.shape)} and {tuple(targets.shape)}")
    masks, targets = masks.bool(), targets.bool()
    intersection = (masks & targets).flatten(-2).sum(-1)
    union = (masks | targets).flatten(-2).sum(-1)
    return torch.where(union > 0, intersection / union.clamp(min=1), 1.0)


def iou_regression_loss(iou_predictions: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(predicted IoU − IoU of the mask logits > 0 with the targets)² per mask: (...,). No gradient reaches the
    masks through the IoU they are scored by."""
    if iou_predictions.shape != logits.shape[:-2]:
        raise ValueError(f"iou_predictions: expected shape {tuple(logits.shape[:-2])} (one per mask), "
                         f"got {tuple(iou_predictions.shape)}")
    actual = mask_iou(logits.detach() > 0, targets).to(iou_predictions.dtype)
    return (iou_predictions - actual).pow(2)


class SamLoss(NamedTuple):
    """The loss of one prediction: ``total`` = ``mask`` + ``iou_weight`` · ``iou``; ``best`` (B,): which mask."""

    total: torch.Tensor
    mask: torch.Tensor
    iou: torch.Tensor
    best: torch.Tensor


def sam_loss(logits: torch.Tensor, iou_predictions: torch.Tensor, targets: torch.Tensor,
             iou_weight: float = 1.0, epsilon: float = 0.0) -> SamLoss:
    """SAM's loss for M masks per prompt. logits (B, M, H, W), iou_predictions (B, M), targets (B, H, W).

    The mask loss counts only the mask with the lowest loss (min over M, §3 "Resolving ambiguity"); with
    ``epsilon`` > 0 it is the relaxed minimum (1 − ε) · min_k ℓ_k + ε · mean_k ℓ_k, which also trains the other masks
    a little (Lab 3 uses ε = 0.1). The IoU head is trained on every mask (MSE, weight ``iou_weight``). Losses are
    averaged over the B prompts."""
    if logits.dim() != 4 or targets.dim() != 3 or targets.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"expected logits (B, M, H, W) and targets (B, H, W), "
                         f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    per_mask = mask_loss(logits, targets[:, None])  # ℓ_k: (B, M)
    best = per_mask.detach().argmin(dim=1)
    lowest = per_mask.gather(1, best[:, None])[:, 0]  # (B,)
    mask = (lowest if epsilon == 0.0 else (1 - epsilon) * lowest + epsilon * per_mask.mean(dim=1)).mean()
    iou = iou_regression_loss(iou_predictions, logits, targets[:, None]).mean()
    return SamLoss(mask + iou_weight * iou, mask, iou, best)


# ----------------------------------------------------------------------------------------------------------------
# Prompts from a ground-truth mask


def _check_masks(name: str, masks: torch.Tensor) -> None:
    if masks.dim() != 3:
        raise ValueError(f"{name}: expected shape (B, H, W), got {tuple(masks.shape)}")


def mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """The tight box (x1, y1, x2, y2) of each binary mask (B, H, W), corners on the extreme pixels: (B, 4) float."""
    _check_masks("masks", masks)
    if not masks.bool().flatten(1).any(1).all():
        raise ValueError("every mask needs at least one pixel to have a box")
    return masks_to_boxes(masks).float()


def sample_box(masks: torch.Tensor, generator: torch.Generator | None = None, noise: float = BOX_NOISE,
               max_noise: float = BOX_NOISE_MAX) -> torch.Tensor:
    """The box prompt of appendix A: the tight box of each mask (B, H, W) with Gaussian noise on every coordinate,
    standard deviation ``noise`` × the box's width (x) or height (y), clipped to ±``max_noise`` px, kept inside
    the image and ordered: (B, 4). ``noise=0`` gives the tight box. The draws are z = ``torch.randn((B, 4),
    generator=generator)`` (on the CPU), one per coordinate."""
    box = mask_to_box(masks)
    H, W = masks.shape[-2:]
    side = (box[:, 2:] - box[:, :2] + 1).repeat(1, 2)  # (w, h, w, h)
    z = torch.randn(box.shape, generator=generator).to(box.device)
    box = box + (z * noise * side).clamp(-max_noise, max_noise)
    box = torch.minimum(box.clamp(min=0), torch.tensor([W - 1, H - 1, W - 1, H - 1], dtype=box.dtype,
                                                       device=box.device))
    low, high = torch.minimum(box[:, :2], box[:, 2:]), torch.maximum(box[:, :2], box[:, 2:])
    return torch.cat([low, high], dim=1)


def _pixel_xy(flat_index: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([flat_index % width, flat_index // width], dim=-1).float()


def sample_points(masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One pixel drawn uniformly from each mask (B, H, W), as (x, y): (B, 2)."""
    _check_masks("masks", masks)
    counts = masks.flatten(1).long().cumsum(1)  # (B, H·W): pixels of the mask up to each position
    if not (counts[:, -1] > 0).all():
        raise ValueError("every mask needs at least one pixel to draw a point from")
    u = torch.rand(len(masks), 1, generator=generator).to(masks.device)
    k = (u * counts[:, -1:]).long()  # the k-th pixel of the mask, k uniform in 0 … count − 1
    return _pixel_xy(torch.searchsorted(counts, k, right=True)[:, 0], masks.shape[-1])


def farthest_points(masks: torch.Tensor) -> torch.Tensor:
    """The pixel of each mask (B, H, W) farthest from the mask's boundary (Euclidean distance transform; the image
    edge counts as boundary; the first such pixel in row-major order on ties), as (x, y): (B, 2)."""
    _check_masks("masks", masks)
    if not masks.flatten(1).any(1).all():
        raise ValueError("every mask needs at least one pixel to choose a point from")
    padded = np.pad(masks.bool().cpu().numpy(), ((0, 0), (1, 1), (1, 1)))
    distance = np.stack([distance_transform_edt(m)[1:-1, 1:-1] for m in padded])
    return _pixel_xy(torch.from_numpy(distance).flatten(1).argmax(1), masks.shape[-1]).to(masks.device)


def error_regions(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(false negatives, false positives) of binary predictions against targets, both (B, H, W) bool."""
    _check_masks("predictions", predictions)
    if targets.shape != predictions.shape:
        raise ValueError(f"targets: expected shape {tuple(predictions.shape)}, got {tuple(targets.shape)}")
    predictions, targets = predictions.bool(), targets.bool()
    return targets & ~predictions, predictions & ~targets


def next_points(predictions: torch.Tensor, targets: torch.Tensor, mode: str = "uniform",
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The next click of the simulated user, one per prompt: from the larger error region (ties: false negatives),
    a foreground point (label 1) in a false negative region, a background point (label 0) in a false positive one.

    ``mode="uniform"`` draws it uniformly from that region (training, appendix A); ``"farthest"`` takes the pixel
    farthest from the region's boundary (evaluation, appendix D). Where there is no error the label is −1 (SAM's
    padding point). Returns coordinates (B, 2) as (x, y) and labels (B,) int64."""
    if mode not in ("uniform", "farthest"):
        raise ValueError(f"mode must be 'uniform' or 'farthest', got {mode!r}")
    fn, fp = error_regions(predictions, targets)
    positive = fn.flatten(1).sum(1) >= fp.flatten(1).sum(1)
    region = torch.where(positive[:, None, None], fn, fp)
    found = region.flatten(1).any(1)
    labels = torch.where(found, positive.long(), -1)
    coords = torch.zeros(region.shape[0], 2, device=region.device)
    if found.any():
        chosen = region[found]
        coords[found] = sample_points(chosen, generator) if mode == "uniform" else farthest_points(chosen)
    return coords, labels


def random_objects(instance_maps: torch.Tensor, per_image: int = 1, generator: torch.Generator | None = None,
                   min_pixels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``per_image`` objects (with replacement) from each instance map (N, H, W) (0 = background, k = object k),
    among those of at least ``min_pixels`` pixels (an image with none gives its largest object).
    Returns the image of each prompt (N · per_image,) and its binary mask (N · per_image, H, W)."""
    _check_masks("instance_maps", instance_maps)
    counts = F.one_hot(instance_maps.long().flatten(1), int(instance_maps.max()) + 1).sum(1)[:, 1:]  # (N, K)
    if not (counts > 0).any(1).all():
        raise ValueError("every instance map needs at least one object (a value > 0)")
    allowed = counts >= max(min_pixels, 1)
    largest = F.one_hot(counts.argmax(1), counts.shape[1]).bool()
    allowed = torch.where(allowed.any(1, keepdim=True), allowed, largest)
    ids = torch.multinomial(allowed.float().cpu(), per_image, replacement=True, generator=generator) + 1
    ids, image = ids.to(instance_maps.device), torch.arange(len(instance_maps), device=instance_maps.device)
    image = image.repeat_interleave(per_image)
    return image, instance_maps[image] == ids.flatten()[:, None, None]



def all_objects(instance_maps: torch.Tensor, min_pixels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Every object of at least ``min_pixels`` pixels in instance maps (N, H, W): its image (K,) and its mask
    (K, H, W) bool, image by image, in the order of the object indices (how every evaluation enumerates objects)."""
    if instance_maps.dim() != 3:
        raise ValueError(f"instance_maps: expected shape (N, H, W), got {tuple(instance_maps.shape)}")
    owner, masks = [], []
    for i, instance_map in enumerate(instance_maps):
        for k in instance_map.unique().tolist():
            mask = instance_map == k
            if k > 0 and int(mask.sum()) >= min_pixels:
                owner.append(i)
                masks.append(mask)
    if not masks:
        raise ValueError(f"no object of at least {min_pixels} pixels in these instance maps")
    return torch.tensor(owner), torch.stack(masks)

# ----------------------------------------------------------------------------------------------------------------
# The simulated interactive session


@dataclass
class Round:
    """One round of an interactive session on B prompts. The prompts given: points (B, N, 2) with labels (B, N)
    (None in a box-only first round), boxes (B, 4) or None, the previous round's logits (B, 1, 4e, 4e) or None.
    The answer: low-resolution logits (B, M, 4e, 4e) and predicted IoUs (B, M); ``chosen`` (B,): the mask with the
    highest predicted IoU; ``masks`` (B, H, W): it, thresholded at the ground truth's size; ``iou`` (B,): its IoU."""

    point_coords: torch.Tensor | None
    point_labels: torch.Tensor | None
    boxes: torch.Tensor | None
    mask_inputs: torch.Tensor | None
    logits: torch.Tensor
    iou_predictions: torch.Tensor
    chosen: torch.Tensor
    masks: torch.Tensor
    iou: torch.Tensor


def interactive_session(model: Sam, image_embeddings: torch.Tensor, targets: torch.Tensor, rounds: int,
                        first: str = "point", point_mode: str = "uniform",
                        generator: torch.Generator | None = None) -> list[Round]:
    """Simulate a user who clicks until the mask is right (appendix A), for B objects at once.

    image_embeddings: (B, C, e, e), one per prompt; targets: (B, S, S) ground-truth masks in the model's input
    frame. Round 1: a point (``first="point"``, drawn as ``point_mode`` says) or a noisy box (``"box"``), with M = 3
    masks (one prompt is ambiguous). Each later round adds the next point from the error region of the previous
    round's chosen mask and feeds that mask's low-resolution logits back as the mask prompt (detached, not
    thresholded), and asks for one mask (token 0: several prompts are not ambiguous). The mask passed on is the one
    with the highest predicted IoU. The loss of a session is :func:`session_loss`."""
    if first not in ("point", "box"):
        raise ValueError(f"first must be 'point' or 'box', got {first!r}")
    _check_masks("targets", targets)
    if image_embeddings.dim() != 4 or image_embeddings.shape[0] != targets.shape[0]:
        raise ValueError(f"image_embeddings: expected (B={targets.shape[0]}, C, e, e), one per target mask, "
                         f"got {tuple(image_embeddings.shape)}")
    S = model.image_encoder.img_size
    if tuple(targets.shape[-2:]) != (S, S):
        raise ValueError(f"targets: expected (B, {S}, {S}) masks in the model's input frame, "
                         f"got {tuple(targets.shape)}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    device = image_embeddings.device
    coords = labels = boxes = mask_inputs = None
    previous = torch.zeros_like(targets, dtype=torch.bool)  # round 1: the "error" is the whole object
    history: list[Round] = []
    for r in range(rounds):
        if r == 0 and first == "box":
            boxes = sample_box(targets.cpu(), generator).to(device)
        else:
            xy, lab = next_points(previous.cpu(), targets.cpu(), point_mode, generator)
            xy, lab = xy[:, None].to(device), lab[:, None].to(device)
            coords = xy if coords is None else torch.cat([coords, xy], dim=1)
            labels = lab if labels is None else torch.cat([labels, lab], dim=1)
        logits, iou_pred = model.decode(image_embeddings, coords, labels, boxes, mask_inputs, multimask_output=r == 0)
        full = F.interpolate(logits, targets.shape[-2:], mode="bilinear", align_corners=False)
        chosen = iou_pred.detach().argmax(dim=1)
        pick = chosen[:, None, None, None]
        previous = full.detach().gather(1, pick.expand(-1, 1, *full.shape[-2:]))[:, 0] > model.mask_threshold
        history.append(Round(coords, labels, boxes, mask_inputs, logits, iou_pred, chosen, previous,
                             mask_iou(previous, targets)))
        mask_inputs = logits.detach().gather(1, pick.expand(-1, 1, *logits.shape[-2:]))
    return history


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], SamLoss]


def session_loss(rounds: Sequence[Round], targets: torch.Tensor, loss_fn: LossFn = sam_loss) -> torch.Tensor:
    """The loss of an interactive session (appendix A: the loss of every round counts): the mean over the rounds of
    ``loss_fn(logits, iou_predictions, targets).total``, each round's low-resolution logits upsampled bilinearly to
    the targets' (B, H, W) size, in float32 (also under autocast)."""
    if not rounds:
        raise ValueError("session_loss needs at least one round")
    total = torch.zeros((), device=targets.device)
    for rnd in rounds:
        full = F.interpolate(rnd.logits.float(), targets.shape[-2:], mode="bilinear", align_corners=False)
        total = total + loss_fn(full, rnd.iou_predictions.float(), targets).total
    return total / len(rounds)
