"""helpers.sam_engine against the references: the point grid and the stability score against
segment_anything.utils.amg, boxes against its batched_mask_to_box, NMS against OpenCV (and torchvision where it is
installed), and the automatic mask generator against segment_anything's SamAutomaticMaskGenerator."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score

from helpers import sam_engine as E
from helpers.sam import Sam, SamConfig, sam_to_reference

TINY = dict(img_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
            encoder_window_size=4, encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8,
            decoder_depth=2, decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)


# ----------------------------------------------------------------------------------------------------------------
# Grid, stability, boxes


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 32, 64])
def test_point_grid_equals_segment_anything(n):
    grid = E.build_point_grid(n)
    assert grid.shape == (n * n, 2)
    assert np.array_equal(grid, build_point_grid(n))  # bit for bit


def test_point_grid_refuses_bad_sizes():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive int"):
            E.build_point_grid(bad)


@pytest.mark.parametrize("threshold,offset", [(0.0, 1.0), (0.0, 0.25), (0.5, 2.0), (-1.0, 0.0)])
def test_stability_score_equals_segment_anything(threshold, offset):
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(4, 3, 20, 24, generator=gen)
    logits[0, 0] = -10  # empty at both cuts: segment_anything divides 0 by 0
    logits[1] = logits[1].round()  # many logits exactly at a cut: a strict ">" there
    ours = E.stability_score(logits, threshold, offset)
    ref = calculate_stability_score(logits, threshold, offset)
    assert ours.shape == (4, 3) and ours.dtype == ref.dtype
    assert torch.isnan(ref[0, 0]) and ours[0, 0] == 0
    assert torch.equal(ours, ref.nan_to_num(0.0))


def test_stability_score_of_a_step_is_one_and_of_a_ramp_is_known():
    step = torch.full((10, 10), -5.0)
    step[2:6, 3:8] = 5.0
    assert E.stability_score(step).item() == 1.0
    ramp = torch.arange(10.0).expand(10, 10) - 4.5  # columns at −4.5 … 4.5: > 1 keeps 4 columns, > −1 keeps 6
    assert E.stability_score(ramp).item() == pytest.approx(4 / 6)


def test_masks_to_boxes_equals_segment_anything():
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(5, 3, 17, 23, generator=gen) > 0.97
    masks[0, 0] = False  # empty
    masks[1, 1] = False
    masks[1, 1, 4, 9] = True  # one pixel: a box of area 0
    ours = E.masks_to_boxes(masks)
    assert torch.equal(ours, batched_mask_to_box(masks))
    assert ours[0, 0].tolist() == [0, 0, 0, 0] and ours[1, 1].tolist() == [9, 4, 9, 4]
    single = torch.zeros(8, 8, dtype=torch.bool)
    single[2:5, 1:7] = True
    assert E.masks_to_boxes(single).tolist() == [1, 2, 6, 4] == batched_mask_to_box(single).tolist()


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        E.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"scores: expected a tensor of shape \(3,\)"):
        E.nms(torch.zeros(3, 4), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"categories: expected a tensor of shape \(3,\)"):
        E.batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        E.stability_score(torch.zeros(5))
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        E.masks_to_boxes(torch.zeros(4, 0, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        E.filter_candidates(torch.zeros(2, 3, 8, 8), torch.zeros(2), torch.zeros(2, 2), pred_iou_thresh=0.5,
                            stability_score_thresh=0.5)


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
    kept = E.nms(boxes, scores, threshold)
    assert kept.dtype == torch.long
    assert kept.tolist() == opencv_nms(boxes, scores, threshold)  # same boxes, same order (decreasing score)
    if 0 < threshold < 0.9:
        assert 1 < len(kept) < len(boxes)  # the check has teeth: some kept, some suppressed


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.7])
def test_batched_nms_equals_opencv_and_a_loop(threshold):
    boxes, scores = random_boxes(120, 3)
    categories = torch.randint(4, (120,), generator=torch.Generator().manual_seed(4))
    kept = E.batched_nms(boxes, scores, categories, threshold)
    rects = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in boxes.tolist()]
    ref = np.asarray(cv2.dnn.NMSBoxesBatched(rects, scores.tolist(), categories.tolist(), 0.0, threshold))
    assert sorted(kept.tolist()) == sorted(ref.flatten().tolist())
    loop = torch.cat([torch.nonzero(categories == c).flatten()[E.nms(boxes[categories == c], scores[categories == c],
                                                                      threshold)] for c in categories.unique()])
    assert kept.tolist() == loop[torch.sort(scores[loop], descending=True, stable=True).indices].tolist()
    assert len(kept) > len(E.nms(boxes, scores, threshold))  # categories matter here


def test_iou_has_no_plus_one_like_opencv():
    """Two 2 × 2 boxes overlapping in a 1 × 1 square: IoU 1/7 ≈ 0.14 (with a "+1" on every side it would be
    4/14 ≈ 0.29). At threshold 0.2 both stay, in OpenCV and here."""
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    scores = torch.tensor([0.9, 0.8])
    assert E.box_iou(boxes, boxes)[0, 1].item() == pytest.approx(1 / 7)
    assert E.nms(boxes, scores, 0.2).tolist() == opencv_nms(boxes, scores, 0.2) == [0, 1]
    assert E.nms(boxes, scores, 0.1).tolist() == opencv_nms(boxes, scores, 0.1) == [0]


def test_an_iou_exactly_at_the_threshold():
    """IoU = threshold is not "> threshold": the box stays (as in torchvision). OpenCV computes the overlap as
    1 − (1 − IoU) in double precision, which can land just above: there it may go."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 1.0]])  # IoU 10 / 100 = 0.1 exactly
    scores = torch.tensor([0.9, 0.8])
    assert E.box_iou(boxes, boxes)[0, 1].item() == 0.1
    assert E.nms(boxes, scores, 0.1).tolist() == [0, 1]
    assert opencv_nms(boxes, scores, 0.1) == [0]  # 1 − (1 − 0.1) = 0.10000000000000003 > 0.1
    assert E.nms(boxes, scores, 0.0999).tolist() == opencv_nms(boxes, scores, 0.0999) == [0]


def test_ties_and_degenerate_boxes():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
    scores = torch.tensor([0.5, 0.5, 0.7, 0.6])
    # equal scores: the earlier box first (a stable sort), as OpenCV and torchvision do
    assert E.nms(boxes[:2], scores[:2], 0.5).tolist() == opencv_nms(boxes[:2], scores[:2], 0.5) == [0]
    # boxes of area 0 never suppress each other here (torchvision: IoU NaN); OpenCV counts them as identical
    assert E.nms(boxes[2:], scores[2:], 0.5).tolist() == [0, 1]
    assert opencv_nms(boxes[2:], scores[2:], 0.5) == [0]
    assert E.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert E.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5).tolist() == []


def test_nms_equals_torchvision():  # pragma: no cover - only where a real torchvision is installed
    torchvision = pytest.importorskip("torchvision")
    for seed in range(3):
        boxes, scores = random_boxes(200, seed)
        categories = torch.randint(3, (200,), generator=torch.Generator().manual_seed(seed))
        for threshold in (0.3, 0.5, 0.7):
            assert E.nms(boxes, scores, threshold).tolist() == torchvision.ops.nms(boxes, scores, threshold).tolist()
            assert (E.batched_nms(boxes, scores, categories, threshold).tolist()
                    == torchvision.ops.batched_nms(boxes, scores, categories, threshold).tolist())


# ----------------------------------------------------------------------------------------------------------------
# The automatic mask generator


def random_model(seed: int, scale: float = 0.5) -> Sam:
    """A tiny random SAM whose masks depend on the point: every weight perturbed by scale · N(0, 1), the
    positional code's frequencies ×5, and the IoU head shifted so that its outputs straddle small thresholds."""
    torch.manual_seed(seed)
    model = Sam(SamConfig(**TINY)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=gen))
        model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.mul_(5)
        model.mask_decoder.iou_prediction_head.layers[-1].bias.add_(9.5)
    return model


def reference_masks(ref_model, image, **options):
    found = SamAutomaticMaskGenerator(ref_model, crop_n_layers=0, **options).generate(image)
    masks = torch.from_numpy(np.stack([f["segmentation"] for f in found])) if found else None
    scores = torch.tensor([f["predicted_iou"] for f in found])
    stability = torch.tensor([f["stability_score"] for f in found])
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (f["bbox"] for f in found)])
    return masks, scores, stability, boxes


@pytest.mark.parametrize("image_seed,shape,options", [
    (0, (64, 64), dict(points_per_side=16, pred_iou_thresh=0.3, stability_score_thresh=0.85)),
    (0, (48, 64), dict(points_per_side=12, pred_iou_thresh=0.3, stability_score_thresh=0.5,
                       stability_score_offset=2.0, box_nms_thresh=0.5, points_per_batch=50)),
    (2, (64, 40), dict(points_per_side=10, pred_iou_thresh=0.2, stability_score_thresh=0.6, box_nms_thresh=0.8)),
])
def test_generator_keeps_the_masks_of_segment_anything(image_seed, shape, options):
    model = random_model(0)
    image = np.random.default_rng(image_seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = E.AutomaticMaskGenerator(model, **options).generate(image)
    counts = ours.counts
    assert list(counts) == list(E.STAGES) and counts["candidates"] == 3 * options["points_per_side"] ** 2
    # every stage removes something and something is left: the comparison below has teeth
    assert counts["candidates"] > counts["predicted IoU"] > counts["stability"] > counts["NMS"] == len(ours) > 1
    masks, scores, stability, boxes = reference_masks(sam_to_reference(model), image, **options)
    assert len(ours) == len(masks)
    assert ours.masks.shape == (len(ours), *shape) and ours.masks.dtype == torch.bool
    assert torch.equal(ours.masks, masks)  # the same masks, in the same order (decreasing predicted IoU)
    torch.testing.assert_close(ours.scores, scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.stability, stability, atol=1e-6, rtol=0)
    assert torch.equal(ours.boxes, boxes)


def test_generator_drives_segment_anythings_model_too():
    model = random_model(0)
    image = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    options = dict(points_per_side=8, pred_iou_thresh=0.3, stability_score_thresh=0.85)
    ours = E.AutomaticMaskGenerator(model, **options).generate(image)
    theirs = E.AutomaticMaskGenerator(sam_to_reference(model), **options).generate(image)
    assert len(ours) > 0 and torch.equal(ours.masks, theirs.masks)


def test_generator_with_nothing_left_and_bad_images():
    model = random_model(0)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    empty = E.AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=1e6).generate(image)
    assert len(empty) == 0 and empty.masks.shape == (0, 64, 64) and empty.counts["NMS"] == 0
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        E.AutomaticMaskGenerator(model).generate(image.astype(np.float32))


def test_select_masks_on_given_candidates():
    """Three copies of one square (one soft), a far square and a low-confidence blob: the soft copy fails the
    stability filter, the blob the IoU filter, and NMS keeps one copy (the most confident) and the far square."""
    logits = torch.full((5, 20, 20), -4.0)
    logits[0, 2:8, 2:8] = 4.0
    logits[1, 2:8, 2:9] = 4.0
    logits[2, 2:8, 2:8] = 0.5  # soft: gone at the +1 cut
    logits[3, 12:18, 12:18] = 4.0
    logits[4, 5:15, 5:15] = 4.0
    iou_preds = torch.tensor([0.95, 0.97, 0.99, 0.9, 0.5])
    found = E.select_masks(logits, iou_preds, torch.zeros(5, 2, dtype=torch.float64))
    assert found.counts == {"candidates": 5, "predicted IoU": 4, "stability": 3, "NMS": 2}
    assert found.scores.tolist() == pytest.approx([0.97, 0.9])
    assert found.boxes.tolist() == [[2, 2, 8, 7], [12, 12, 17, 17]]
