"""Training, evaluating and auto-labelling with a small SAM: the SAM lab's machinery, reusable from a script.

Kirillov et al., 2023, "Segment Anything": §3 and appendix A (training: a point or a box, then clicks in the error
region over several rounds, the loss on every round), §7.1 and appendix D (evaluation: a click at the centre of the
object, then clicks at the centre of the error; the "oracle" that picks the best of the three masks) and §4 with
appendix B (the data engine's fully automatic stage).

The functions take the parts that the lab grades as arguments (``loss_fn``, ``session_fn``, ``iou_fn``), with the
course's own copies (:mod:`helpers.sam.training`) as defaults: in the lab the student's loss and the student's
simulated user are the ones that train.

Shapes: N images (N, 3, S, S) float pixel values 0–255 in the model's input frame (no resizing: the scenes are
rendered at the model's size S), instance maps (N, S, S) int64 (0 = background), K objects with ``owner`` (K,) the
image of each object and ``masks`` (K, S, S) bool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers.common.loop import History, optimiser_step, progress_bar, train_loop
from helpers.common.optim import adamw, autocast, cosine_lr
from helpers.sam import training as sam_training
from helpers.sam.engine import AutomaticMaskGenerator, MaskSet
from helpers.sam.training import LossFn, Round

SessionFn = Callable[..., list[Round]]
IouFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
COURSE_SESSION: SessionFn = sam_training.interactive_session
PROMPTS = ("1 point", "3 points", "box", "oracle, 1 point")  # what :func:`evaluate_prompts` measures


# ----------------------------------------------------------------------------------------------------------------
# Data


def scene_tensors(data: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """The arrays of :func:`helpers.sam.scenes.load` → images (N, 3, S, S) float32 (0–255) and instance maps
    (N, S, S) int64."""
    images, maps = data.get("images"), data.get("masks")
    if not (isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == 3
            and isinstance(maps, np.ndarray) and maps.shape == images.shape[:3]):
        raise ValueError("expected scenes with 'images' (N, H, W, 3) uint8 and 'masks' (N, H, W) instance maps, got "
                         f"{getattr(images, 'shape', None)} and {getattr(maps, 'shape', None)}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float(), torch.from_numpy(maps.astype(np.int64))


@torch.no_grad()
def embed_images(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Image embeddings (N, C, e, e) of images (N, 3, S, S) (0–255), in batches, on the model's device; float32."""
    device = next(model.parameters()).device
    parts = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        with autocast(device):
            parts.append(model.image_encoder(model.preprocess(batch)).float())
    return torch.cat(parts)


# ----------------------------------------------------------------------------------------------------------------
# Training


def train_sam(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, *, steps: int, lr: float,
              images_per_step: int = 8, objects_per_image: int = 4, rounds: int = 3, box_share: float = 0.5,
              min_pixels: int = 1, flip: bool = True, warmup_steps: int | None = None, weight_decay: float = 0.1,
              grad_clip: float = 1.0,
              loss_fn: LossFn = sam_training.sam_loss, session_fn: SessionFn = COURSE_SESSION,
              generator: torch.Generator | None = None, progress: bool | str = True) -> History:
    """Train every part of ``model`` (appendix A in small): each step draws ``images_per_step`` images and
    ``objects_per_image`` objects in each (with replacement, at least ``min_pixels`` pixels), embeds the images once,
    runs ``session_fn`` for ``rounds`` rounds starting from a box (probability ``box_share``) or a point, and
    minimises the mean over the rounds of ``loss_fn`` (:func:`helpers.sam.training.session_loss`). With ``flip``,
    each drawn scene and its instance map are flipped left–right with probability 1/2 (the only augmentation).

    The course's loop (:func:`helpers.common.loop.train_loop`): AdamW (weight decay on matrices only), linear warm-up
    (default: a tenth of the steps) then cosine decay to 0, gradients clipped to ``grad_clip``, bfloat16 autocast on
    CUDA. All random draws come from ``generator`` (on the CPU), so a CPU run repeats exactly. The history's
    ``metrics["ious"]`` holds, per step, the mean IoU of each round's chosen mask."""
    if images.dim() != 4 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"expected images (N, 3, S, S) and maps (N, S, S), got {tuple(images.shape)} and "
                         f"{tuple(maps.shape)}")
    device = next(model.parameters()).device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    warmup = max(1, steps // 10) if warmup_steps is None else warmup_steps
    optimiser = adamw(model, lr, weight_decay=weight_decay)

    def step(_: int, step_lr: float) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[float]]]:
        batch = torch.randint(len(images), (images_per_step,), generator=generator)
        batch_images, batch_maps = images[batch], maps[batch]
        if flip:
            flipped = (torch.rand(images_per_step, generator=generator) < 0.5).to(images.device)
            batch_images = torch.where(flipped[:, None, None, None], batch_images.flip(-1), batch_images)
            batch_maps = torch.where(flipped[:, None, None], batch_maps.flip(-1), batch_maps)
        owner, targets = sam_training.random_objects(batch_maps, objects_per_image, generator, min_pixels=min_pixels)
        first = "box" if torch.rand((), generator=generator) < box_share else "point"
        batch_images, targets = batch_images.to(device), targets.to(device)
        with autocast(device):
            embeddings = model.image_encoder(model.preprocess(batch_images))[owner.to(device)]
            session = session_fn(model, embeddings, targets, rounds, first=first, generator=generator)
        loss = sam_training.session_loss(session, targets, loss_fn)
        grad_norm = optimiser_step(model, optimiser, loss, step_lr, grad_clip)
        return loss, grad_norm, {"ious": [float(r.iou.float().mean()) for r in session]}

    model.train()
    history = train_loop(step, steps, lambda s: cosine_lr(s, lr, warmup, steps), progress=progress,
                         name="training SAM")
    model.eval()
    return history


# ----------------------------------------------------------------------------------------------------------------
# Evaluation


def chosen_and_oracle_iou(logits: torch.Tensor, iou_predictions: torch.Tensor,
                          targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (B, M, H', W') of logits (any resolution; upsampled bilinearly to the targets' (H, W), cut at 0),
    their predicted IoUs (B, M), targets (B, H, W) → the IoU of the mask with the highest predicted IoU (what SAM
    returns) and the best IoU of the M masks (the oracle, §7.1), both (B,)."""
    if logits.dim() != 4 or iou_predictions.shape != logits.shape[:2] or targets.dim() != 3 \
            or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"expected logits (B, M, H', W'), iou_predictions (B, M) and targets (B, H, W), got "
                         f"{tuple(logits.shape)}, {tuple(iou_predictions.shape)} and {tuple(targets.shape)}")
    full = F.interpolate(logits.float(), targets.shape[-2:], mode="bilinear", align_corners=False)
    ious = sam_training.mask_iou(full > 0, targets[:, None])  # (B, M)
    chosen = ious.gather(1, iou_predictions.argmax(dim=1, keepdim=True))[:, 0]
    return chosen, ious.amax(dim=1)


@dataclass
class Evaluation:
    """Per-object IoUs (K,) for each prompt of :data:`PROMPTS`, and the click of the one-point prompt (K, 2) as
    (x, y) pixels, for a baseline to use the same clicks."""

    ious: dict[str, np.ndarray]
    clicks: np.ndarray

    def miou(self) -> dict[str, float]:
        """Mean IoU of each prompt."""
        return {name: float(values.mean()) for name, values in self.ious.items()}


def _prompt_rounds(model: nn.Module, embeddings: torch.Tensor, owner: torch.Tensor, masks: torch.Tensor,
                   session_fn: SessionFn, batch_size: int
                   ) -> Iterator[tuple[torch.Tensor, list[Round], torch.Tensor, torch.Tensor]]:
    """The protocol's prompts for K objects, ``batch_size`` at a time, given their scenes' embeddings: yields the
    objects' targets (B, S, S), the 3-round session from the centre click and the box's logits (B, 3, 4e, 4e) with
    their predicted IoUs (B, 3)."""
    device = embeddings.device
    for start in range(0, len(masks), batch_size):
        index = slice(start, start + batch_size)
        emb, targets = embeddings[owner[index].to(device)], masks[index].to(device)
        with autocast(device):
            session = session_fn(model, emb, targets, 3, first="point", point_mode="farthest")
            box_logits, box_iou = model.decode(emb, boxes=sam_training.mask_to_box(targets), multimask_output=True)
        yield targets, session, box_logits, box_iou


@torch.no_grad()
def evaluate_prompts(model: nn.Module, images: torch.Tensor, owner: torch.Tensor, masks: torch.Tensor, *,
                     session_fn: SessionFn = COURSE_SESSION,
                     iou_fn: IouFn = chosen_and_oracle_iou, batch_size: int = 64) -> Evaluation:
    """Held-out IoU of each object for four prompts (appendix D's protocol, deterministic):

    - "1 point": one click at the object's centre (the pixel farthest from its boundary), the mask SAM returns
      (highest predicted IoU of three); "oracle, 1 point": the best of those three masks;
    - "3 points": the session continued for two more rounds, each click at the centre of the larger error region,
      with the previous logits as a mask prompt; the single mask of round 3;
    - "box": the object's tight box, the mask with the highest predicted IoU of three.

    images (N, 3, S, S), owner (K,), masks (K, S, S). ``session_fn`` runs the clicks (``point_mode="farthest"``),
    ``iou_fn`` scores logits (:func:`chosen_and_oracle_iou`). :func:`prompt_masks` returns the masks themselves."""
    was_training = model.training
    model.eval()
    ious: dict[str, list[torch.Tensor]] = {name: [] for name in PROMPTS}
    clicks = []
    for targets, session, box_logits, box_iou in _prompt_rounds(model, embed_images(model, images), owner, masks,
                                                                session_fn, batch_size):
        chosen, oracle = iou_fn(session[0].logits, session[0].iou_predictions.float(), targets)
        ious["1 point"].append(chosen)
        ious["oracle, 1 point"].append(oracle)
        ious["3 points"].append(iou_fn(session[2].logits, session[2].iou_predictions.float(), targets)[0])
        ious["box"].append(iou_fn(box_logits, box_iou.float(), targets)[0])
        clicks.append(session[0].point_coords[:, 0].cpu())
    model.train(was_training)
    return Evaluation({name: torch.cat(values).float().cpu().numpy() for name, values in ious.items()},
                      torch.cat(clicks).numpy())


@dataclass
class PromptMasks:
    """What :func:`evaluate_prompts` scores, for a few objects: the mask (K, S, S) bool of each prompt of
    :data:`PROMPTS`, and the clicks of the 3-point session, (K, 3, 2) (x, y) pixels with labels (K, 3)
    (1 foreground, 0 background)."""

    masks: dict[str, np.ndarray]
    point_coords: np.ndarray
    point_labels: np.ndarray


@torch.no_grad()
def prompt_masks(model: nn.Module, images: torch.Tensor, owner: torch.Tensor, masks: torch.Tensor, *,
                 session_fn: SessionFn = COURSE_SESSION, batch_size: int = 64) -> PromptMasks:
    """The masks behind :func:`evaluate_prompts`' IoUs, to look at: the same prompts for the K objects of ``owner``
    (K,) and ``masks`` (K, S, S) in images (N, 3, S, S); only the scenes they are in are embedded. Each mask is the
    low-resolution logits upsampled bilinearly to S × S and cut at 0: for the "1 point", "3 points" and "box"
    prompts the one with the highest predicted IoU, for the oracle the one closest to the truth."""
    was_training = model.training
    model.eval()
    scenes, local_owner = owner.unique(return_inverse=True)
    embeddings = embed_images(model, images[scenes.to(images.device)])
    found: dict[str, list[torch.Tensor]] = {name: [] for name in PROMPTS}
    coords, labels = [], []
    for targets, session, box_logits, box_iou in _prompt_rounds(model, embeddings, local_owner, masks, session_fn,
                                                                batch_size):
        full = {name: F.interpolate(logits.float(), targets.shape[-2:], mode="bilinear", align_corners=False) > 0
                for name, logits in [("1 point", session[0].logits), ("3 points", session[2].logits),
                                     ("box", box_logits)]}
        rows = torch.arange(len(targets), device=targets.device)
        found["1 point"].append(full["1 point"][rows, session[0].iou_predictions.argmax(dim=1)])
        found["3 points"].append(full["3 points"][rows, session[2].iou_predictions.argmax(dim=1)])
        found["box"].append(full["box"][rows, box_iou.argmax(dim=1)])
        oracle = sam_training.mask_iou(full["1 point"], targets[:, None]).argmax(dim=1)
        found["oracle, 1 point"].append(full["1 point"][rows, oracle])
        coords.append(session[2].point_coords.cpu())
        labels.append(session[2].point_labels.cpu())
    model.train(was_training)
    return PromptMasks({name: torch.cat(values).cpu().numpy() for name, values in found.items()},
                       torch.cat(coords).numpy(), torch.cat(labels).numpy())


# ----------------------------------------------------------------------------------------------------------------
# The data engine's fully automatic stage, one round


def masks_to_instance_map(found: MaskSet, size: tuple[int, int]) -> torch.Tensor:
    """Automatic masks of one image → an instance map (H, W) int64: mask k gets the value k + 1; where masks
    overlap, the one with the higher predicted IoU wins (the masks are painted from the least to the most
    confident)."""
    instance_map = torch.zeros(size, dtype=torch.long)
    for k in torch.argsort(found.scores.cpu(), stable=True).tolist():
        instance_map[found.masks[k].cpu()] = k + 1
    return instance_map


def auto_label(model: nn.Module, images: np.ndarray, *, points_per_side: int, pred_iou_thresh: float,
               stability_score_thresh: float, box_nms_thresh: float = 0.7, min_pixels: int = 1,
               progress: bool | str = True) -> list[MaskSet]:
    """The fully automatic stage (§4) on uint8 images (N, H, W, 3): a grid of point prompts, the confident and
    stable masks, NMS (:class:`helpers.sam.engine.AutomaticMaskGenerator`); masks under ``min_pixels`` pixels are
    dropped. One :class:`MaskSet` per image."""
    generator = AutomaticMaskGenerator(model, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                                       stability_score_thresh=stability_score_thresh, box_nms_thresh=box_nms_thresh)
    bar = progress_bar(progress, len(images), "auto-labelling")
    was_training = model.training
    model.eval()
    found = []
    for image in images:
        masks = generator.generate(image)
        found.append(masks.index(masks.masks.flatten(1).sum(1) >= min_pixels))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    model.train(was_training)
    return found


def label_quality(found: Sequence[MaskSet], maps: torch.Tensor, match: float = 0.5) -> dict[str, float]:
    """How good automatic masks are, against the true instance maps (N, H, W) that the data engine did not see:
    masks per image, the mean IoU of each mask with its best-matching true object, the share of masks that match
    one at IoU ≥ ``match``, and the share of true objects that some mask matches (recall)."""
    if len(found) != len(maps):
        raise ValueError(f"expected one MaskSet per instance map, got {len(found)} and {len(maps)}")
    best_per_mask, recalled, objects = [], 0, 0
    for masks, instance_map in zip(found, maps, strict=True):
        ids = [k for k in instance_map.unique().tolist() if k > 0]
        truth = torch.stack([instance_map == k for k in ids])  # (T, H, W)
        objects += len(ids)
        if len(masks) == 0:
            continue
        ious = sam_training.mask_iou(masks.masks.cpu()[:, None].expand(-1, len(truth), -1, -1), truth[None])  # (K, T)
        best_per_mask.append(ious.amax(dim=1))
        recalled += int((ious.amax(dim=0) >= match).sum())
    best = torch.cat(best_per_mask) if best_per_mask else torch.zeros(0)
    return {"masks per image": sum(len(m) for m in found) / max(len(found), 1),
            "mean IoU with the best true object": float(best.mean()) if len(best) else 0.0,
            f"share of masks with IoU ≥ {match}": float((best >= match).float().mean()) if len(best) else 0.0,
            f"share of true objects found (IoU ≥ {match})": recalled / max(objects, 1)}
