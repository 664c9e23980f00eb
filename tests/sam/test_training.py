"""helpers.sam.training: the focal loss is torchvision's (its documented formula here, the real one where torchvision
is installed), the dice loss is a hand computation, the best-of-M loss and the IoU regression do what SAM's paper
says, the prompts come from the right places, and an interactive session feeds each round's logits to the next."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from helpers.sam.config import SamConfig
from helpers.sam.model import Sam
from helpers.sam.training import (
    all_objects,
    dice_loss,
    error_regions,
    farthest_points,
    interactive_session,
    iou_regression_loss,
    mask_iou,
    mask_loss,
    mask_to_box,
    next_points,
    random_objects,
    sam_loss,
    sample_box,
    sample_points,
    session_loss,
    sigmoid_focal_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)


def documented_focal(inputs, targets, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss(reduction="none") as its documentation defines it, from the BCE."""
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def random_pair(*shape, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    return logits, torch.randint(0, 2, shape, generator=g).double()


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.5, 0.0), (-1.0, 2.0), (0.75, 5.0)])
def test_focal_matches_the_documented_formula(alpha, gamma):
    logits, targets = random_pair(3, 2, 9, 11)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha, gamma),
                               documented_focal(logits, targets, alpha, gamma), rtol=1e-10, atol=1e-12)


def test_focal_with_gamma_zero_and_no_alpha_is_bce():
    logits, targets = random_pair(4, 16, 16, seed=1)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0),
                               F.binary_cross_entropy_with_logits(logits, targets, reduction="none"))


def test_focal_is_finite_for_large_logits():
    logits = torch.tensor([[-200.0, 200.0], [60.0, -60.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = sigmoid_focal_loss(logits, targets)
    assert torch.isfinite(loss).all()
    assert loss[0, 0].item() == pytest.approx(0.25 * 200.0) and loss[0, 1].item() == pytest.approx(0.75 * 200.0)
    assert loss[1].abs().max().item() < 1e-30


def test_focal_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    logits, targets = random_pair(2, 3, 8, 8, seed=2)
    for alpha, gamma in [(0.25, 2.0), (0.6, 1.0), (-1.0, 3.0)]:
        torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha, gamma),
                                   torchvision.ops.sigmoid_focal_loss(logits, targets, alpha, gamma, "none"))


def test_focal_rejects_soft_targets_and_bad_shapes():
    with pytest.raises(ValueError, match="binary"):
        sigmoid_focal_loss(torch.zeros(2, 2), torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        sigmoid_focal_loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))


def test_dice_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, math.log(3.0)]])  # p = 0.5, σ(2), σ(−1), 0.75
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    p = [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1)), 0.75]
    intersection, total = p[0] + p[1], sum(p) + 2
    assert dice_loss(logits, targets).item() == pytest.approx(1 - (2 * intersection + 1) / (total + 1))
    assert dice_loss(logits, targets, smooth=0.0).item() == pytest.approx(1 - 2 * intersection / total)


def test_dice_of_a_confident_right_mask_is_near_zero_and_wrong_is_near_one():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    right, wrong = (2 * target - 1) * 50, (1 - 2 * target) * 50
    assert dice_loss(right, target).item() < 1e-6
    assert dice_loss(wrong, target).item() == pytest.approx(1 - 1 / (48 + 16 + 1))  # Σp = 48, Σt = 16


def test_mask_loss_is_twenty_focal_plus_dice():
    logits, targets = random_pair(2, 3, 6, 6, seed=3)
    expected = 20 * documented_focal(logits, targets).mean((-2, -1)) + dice_loss(logits, targets)
    torch.testing.assert_close(mask_loss(logits, targets), expected)


def test_mask_iou():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[0, :2], b[0, 1:3] = True, True  # 4 shared of 12
    a[1], b[1] = True, True
    torch.testing.assert_close(mask_iou(a, b), torch.tensor([1 / 3, 1.0, 1.0]))  # both empty: 1
    table = mask_iou(a[:, None], b[None])  # every mask against every target: (3, 3)
    torch.testing.assert_close(table.diagonal(), torch.tensor([1 / 3, 1.0, 1.0]))
    assert table[1, 2] == 0.0 and table[2, 1] == 0.0  # a full mask against an empty one
    with pytest.raises(ValueError, match=r"broadcast together, got \(3, 4, 4\) and \(2, 4, 4\)"):
        mask_iou(a, b[:2])
    with pytest.raises(ValueError, match="broadcast together"):
        mask_iou(a, b[..., :3])


def test_iou_regression_targets_the_mask_iou_without_gradient_to_the_masks():
    logits, targets = random_pair(2, 3, 5, 5, seed=4)
    logits.requires_grad_(True)
    predicted = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.3, 1.0]], dtype=torch.float64, requires_grad=True)
    loss = iou_regression_loss(predicted, logits, targets)
    torch.testing.assert_close(loss, (predicted - mask_iou(logits > 0, targets)).pow(2))
    loss.sum().backward()
    assert logits.grad is None and predicted.grad is not None
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        iou_regression_loss(predicted[:, :2], logits, targets)


def test_sam_loss_backpropagates_the_best_mask_only():
    g = torch.Generator().manual_seed(5)
    targets = torch.zeros(2, 8, 8)
    targets[:, 2:6, 1:7] = 1
    logits = torch.randn(2, 3, 8, 8, generator=g)
    logits[0, 2] = (2 * targets[0] - 1) * 4  # a good mask: index 2 for the first prompt
    logits[1, 0] = (2 * targets[1] - 1) * 4  # index 0 for the second
    logits.requires_grad_(True)
    iou_pred = torch.rand(2, 3, generator=g, requires_grad=True)
    out = sam_loss(logits, iou_pred, targets)
    assert out.best.tolist() == [2, 0]
    per_mask = mask_loss(logits.detach(), targets[:, None])
    torch.testing.assert_close(out.mask, per_mask.min(1).values.mean())
    torch.testing.assert_close(out.total, out.mask + out.iou)
    out.mask.backward()
    touched = logits.grad.abs().flatten(2).sum(-1) > 0
    assert touched.tolist() == [[False, False, True], [True, False, False]]
    with pytest.raises(ValueError, match=r"\(B, M, H, W\)"):
        sam_loss(logits[0], iou_pred, targets)


def test_sam_loss_relaxed_minimum_trains_every_mask_a_little():
    g = torch.Generator().manual_seed(6)
    targets = (torch.rand(3, 8, 8, generator=g) > 0.5).float()
    logits = torch.randn(3, 3, 8, 8, generator=g, requires_grad=True)
    iou_pred = torch.rand(3, 3, generator=g)
    per_mask = mask_loss(logits.detach(), targets[:, None])  # ℓ_k: (B, M)
    relaxed = sam_loss(logits, iou_pred, targets, epsilon=0.1)
    expected = (0.9 * per_mask.min(1).values + 0.1 * per_mask.mean(1)).mean()
    torch.testing.assert_close(relaxed.mask, expected)
    torch.testing.assert_close(relaxed.iou, sam_loss(logits, iou_pred, targets).iou)
    assert torch.equal(relaxed.best, per_mask.argmin(1))
    relaxed.mask.backward()
    assert (logits.grad.abs().flatten(2).sum(-1) > 0).all()  # every mask of every prompt gets a gradient
    with pytest.raises(ValueError, match=r"epsilon must lie in \[0, 1\], got 1.5"):
        sam_loss(logits, iou_pred, targets, epsilon=1.5)


def _square_masks():
    masks = torch.zeros(2, 32, 40, dtype=torch.bool)
    masks[0, 5:15, 10:30] = True  # rows 5..14, columns 10..29
    masks[1, 20, 3] = True
    return masks


def test_mask_to_box_and_noise_free_box():
    masks = _square_masks()
    expected = torch.tensor([[10.0, 5.0, 29.0, 14.0], [3.0, 20.0, 3.0, 20.0]])
    torch.testing.assert_close(mask_to_box(masks), expected)
    torch.testing.assert_close(sample_box(masks, noise=0.0), expected)
    with pytest.raises(ValueError, match="at least one pixel"):
        mask_to_box(torch.zeros(1, 4, 4))


def test_box_noise_follows_the_paper():
    masks = torch.zeros(4000, 64, 64, dtype=torch.bool)
    masks[:, 20:40, 10:50] = True  # width 40, height 20: std 4 and 2 px
    boxes = sample_box(masks, torch.Generator().manual_seed(0))
    shift = boxes - mask_to_box(masks)
    std = shift.std(0)
    assert std[0].item() == pytest.approx(4.0, rel=0.06) and std[1].item() == pytest.approx(2.0, rel=0.06)
    wide = torch.zeros(500, 8, 1024, dtype=torch.bool)
    wide[:, 2:6, 50:950] = True  # width 900: std 90 px, clipped to ±20
    shift = sample_box(wide, torch.Generator().manual_seed(1)) - mask_to_box(wide)
    assert shift[:, 0].abs().max().item() == pytest.approx(20.0) and shift[:, 2].abs().max().item() <= 20.0


def test_boxes_stay_inside_the_image_and_ordered():
    masks = torch.zeros(300, 16, 16, dtype=torch.bool)
    masks[:, 0:3, 14:16] = True
    boxes = sample_box(masks, torch.Generator().manual_seed(2), noise=2.0)
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 15).all() and (boxes[:, [1, 3]] <= 15).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_points_are_drawn_uniformly_from_the_mask():
    masks = torch.zeros(6000, 10, 10, dtype=torch.bool)
    masks[:, 2, 3] = masks[:, 7, 8] = masks[:, 5, 1] = True
    xy = sample_points(masks, torch.Generator().manual_seed(3))
    assert masks[0][xy[:, 1].long(), xy[:, 0].long()].all()  # (x, y) = (column, row)
    counts = torch.stack([(xy == torch.tensor(p)).all(1).sum() for p in ([3.0, 2.0], [8.0, 7.0], [1.0, 5.0])])
    assert counts.min().item() > 1800
    with pytest.raises(ValueError, match="at least one pixel"):
        sample_points(torch.zeros(2, 4, 4))


def test_farthest_point_is_the_centre_of_a_square_and_avoids_the_image_edge():
    masks = torch.zeros(2, 20, 20, dtype=torch.bool)
    masks[0, 3:10, 8:15] = True  # 7 × 7 square, centre (x, y) = (11, 6)
    masks[1, :, :6] = True  # a strip along the left edge: its middle column, not column 0
    xy = farthest_points(masks)
    assert xy[0].tolist() == [11.0, 6.0]
    assert xy[1, 0].item() in (2.0, 3.0)


def test_error_regions_and_next_points():
    targets = torch.zeros(3, 12, 12, dtype=torch.bool)
    targets[:, 2:8, 2:8] = True
    predictions = targets.clone()
    predictions[0, 2:8, 2:5] = False  # 18 false negatives
    predictions[1, 8:12, :] = True  # 48 false positives
    predictions[1, 2:4, 2:4] = False  # and 4 false negatives: the larger region wins
    fn, fp = error_regions(predictions, targets)
    assert fn.flatten(1).sum(1).tolist() == [18, 4, 0] and fp.flatten(1).sum(1).tolist() == [0, 48, 0]
    for mode in ("uniform", "farthest"):
        coords, labels = next_points(predictions, targets, mode, torch.Generator().manual_seed(4))
        assert labels.tolist() == [1, 0, -1]
        x, y = coords[:2].long().T
        assert fn[0, y[0], x[0]] and fp[1, y[1], x[1]]
    coords, _ = next_points(predictions, targets, "farthest")
    assert coords[0].tolist() == [3.0, 3.0]  # FN strip: columns 2..4, rows 2..7; distance 2 first at (3, 3)
    with pytest.raises(ValueError, match="mode"):
        next_points(predictions, targets, "centre")


def test_random_objects():
    maps = torch.zeros(3, 6, 6, dtype=torch.uint8)
    maps[0, :2, :2], maps[0, 4:, 4:] = 1, 3  # objects 1 (4 px) and 3 (4 px)
    maps[1, :, :] = 2
    maps[2, 0, 0], maps[2, 1:, 1:] = 1, 2  # 1 px and 25 px
    image, masks = random_objects(maps, 50, torch.Generator().manual_seed(5), min_pixels=2)
    assert image.tolist() == [0] * 50 + [1] * 50 + [2] * 50 and masks.shape == (150, 6, 6)
    ids = torch.stack([maps[i][m].unique() for i, m in zip(image, masks, strict=True)]).flatten()
    assert set(ids[:50].tolist()) == {1, 3} and set(ids[50:].tolist()) == {2} and set(ids[100:].tolist()) == {2}
    _, tiny = random_objects(maps[2:], 1, min_pixels=100)  # none big enough: the largest
    assert tiny.sum().item() == 25


def tiny_sam(seed=0):
    torch.manual_seed(seed)
    return Sam(SamConfig(img_size=32, patch_size=8, encoder_embed_dim=16, encoder_depth=1, encoder_num_heads=2,
                         encoder_window_size=0, encoder_global_attn_indexes=(), prompt_embed_dim=16,
                         mask_in_chans=8, decoder_depth=1, decoder_num_heads=2, decoder_mlp_dim=32,
                         iou_head_hidden_dim=16)).eval()


@pytest.mark.parametrize("first", ["point", "box"])
def test_interactive_session_feeds_back_the_chosen_logits(first):
    model = tiny_sam()
    targets = torch.zeros(3, 32, 32, dtype=torch.bool)
    targets[0, 4:20, 4:12], targets[1, 10:30, 15:31], targets[2, 0:5, 0:32] = True, True, True
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        embeddings = model.image_encoder(model.preprocess(images))
        rounds = interactive_session(model, embeddings, targets, 3, first=first, point_mode="farthest",
                                     generator=torch.Generator().manual_seed(1))
    assert [r.logits.shape[1] for r in rounds] == [3, 1, 1]  # M = 3 for one prompt, then 1
    assert rounds[0].mask_inputs is None and (rounds[0].boxes is not None) == (first == "box")
    for before, after in zip(rounds[:-1], rounds[1:], strict=True):
        chosen = before.logits[torch.arange(3), before.chosen][:, None]
        assert torch.equal(after.mask_inputs, chosen)
        # the new click sits in the error region of the previous mask, with the matching label
        x, y = after.point_coords[:, -1].long().T
        label = after.point_labels[:, -1]
        fn, fp = error_regions(before.masks, targets)
        for b in range(3):
            if label[b] == 1:
                assert fn[b, y[b], x[b]]
            elif label[b] == 0:
                assert fp[b, y[b], x[b]]
    n_points = [0 if r.point_coords is None else r.point_coords.shape[1] for r in rounds]
    assert n_points == ([1, 2, 3] if first == "point" else [0, 1, 2])
    # the same round computed directly by the model
    last = rounds[-1]
    with torch.no_grad():
        logits, iou = model.decode(embeddings, last.point_coords, last.point_labels, last.boxes, last.mask_inputs,
                                   multimask_output=False)
    torch.testing.assert_close(last.logits, logits)
    full = F.interpolate(logits, (32, 32), mode="bilinear", align_corners=False)[:, 0] > 0
    assert torch.equal(last.masks, full)
    torch.testing.assert_close(last.iou, mask_iou(full, targets))


def test_interactive_session_trains():
    model = tiny_sam(1).train()
    targets = torch.zeros(2, 32, 32, dtype=torch.bool)
    targets[0, 4:20, 4:12], targets[1, 16:28, 16:30] = True, True
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(15):
        rounds = interactive_session(model, model.image_encoder(model.preprocess(images)), targets, 2, generator=g)
        loss = session_loss(rounds, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match=r"\(B=2, C, e, e\)"):
        interactive_session(model, torch.zeros(3, 16, 4, 4), targets, 2)
    with pytest.raises(ValueError, match=r"\(B, 32, 32\)"):
        interactive_session(model, torch.zeros(2, 16, 4, 4), targets[:, :16], 2)


def test_all_objects_lists_every_object_in_order():
    maps = torch.zeros(2, 6, 6, dtype=torch.long)
    maps[0, :2, :2] = 2
    maps[0, 4:, 4:] = 1
    maps[1, 3, 3] = 5
    owner, masks = all_objects(maps)
    assert owner.tolist() == [0, 0, 1]
    assert [int(m.sum()) for m in masks] == [4, 4, 1] and bool(masks[0, 4, 4]) and bool(masks[1, 0, 0])
    owner, masks = all_objects(maps, min_pixels=2)
    assert owner.tolist() == [0, 0]
    with pytest.raises(ValueError, match="no object"):
        all_objects(maps, min_pixels=10)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        all_objects(maps[0])


def test_session_loss_is_the_mean_of_the_rounds_losses():
    model = tiny_sam(3)
    targets = torch.zeros(2, 32, 32, dtype=torch.bool)
    targets[0, 4:20, 4:12], targets[1, 16:28, 16:30] = True, True
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    rounds = interactive_session(model, model.image_encoder(model.preprocess(images)), targets, 3,
                                 generator=torch.Generator().manual_seed(1))
    by_hand = [sam_loss(F.interpolate(r.logits, (32, 32), mode="bilinear"), r.iou_predictions, targets).total
               for r in rounds]
    torch.testing.assert_close(session_loss(rounds, targets), sum(by_hand) / 3)
    relaxed = functools.partial(sam_loss, epsilon=0.5)
    assert not torch.equal(session_loss(rounds, targets, relaxed), session_loss(rounds, targets))  # loss_fn counts
    with pytest.raises(ValueError, match="at least one round"):
        session_loss([], targets)
