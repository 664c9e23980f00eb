"""helpers.sam.engine against the references: the point grid and the stability score against
segment_anything.utils.amg, and the automatic mask generator against segment_anything's SamAutomaticMaskGenerator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.utils.amg import build_point_grid, calculate_stability_score

from helpers.sam import engine as E
from helpers.sam.config import SamConfig
from helpers.sam.model import Sam, sam_to_reference

TINY = dict(img_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
            encoder_window_size=4, encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8,
            decoder_depth=2, decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)


# ----------------------------------------------------------------------------------------------------------------
# Grid and stability


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


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        E.stability_score(torch.zeros(5))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        E.filter_candidates(torch.zeros(2, 3, 8, 8), torch.zeros(2), torch.zeros(2, 2), pred_iou_thresh=0.5,
                            stability_score_thresh=0.5)


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
