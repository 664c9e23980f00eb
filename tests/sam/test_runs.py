"""helpers.sam.runs: the SAM lab's training loop trains with the loss and session it is given and repeats exactly,
the evaluation scores the four prompts as the paper's protocol says, and the data engine's pieces label and score
automatic masks correctly."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.paths import REPO_ROOT
from helpers.sam import runs as sam_fit
from helpers.sam import training as sam_training
from helpers.sam.config import SamConfig
from helpers.sam.engine import MaskSet
from helpers.sam.model import Sam

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)

CONFIG = SamConfig(img_size=32, patch_size=8, encoder_embed_dim=16, encoder_depth=1, encoder_num_heads=2,
                   encoder_window_size=0, encoder_global_attn_indexes=(), prompt_embed_dim=16, mask_in_chans=4,
                   decoder_depth=1, decoder_num_heads=2, decoder_mlp_dim=32, iou_head_hidden_dim=16)


def tiny_model(seed: int = 0) -> Sam:
    torch.manual_seed(seed)
    return Sam(CONFIG)


def disc_scenes(count: int = 4, size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Scenes like helpers.sam.scenes': two coloured discs on a grey background, with their instance maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.full((count, size, size, 3), 120, dtype=np.uint8)
    maps = np.zeros((count, size, size), dtype=np.uint8)
    for i in range(count):
        for k, (cx, cy) in enumerate([(9, 10), (22, 21)], start=1):
            radius = rng.uniform(4, 7)
            inside = (xx - cx - rng.integers(-2, 3)) ** 2 + (yy - cy - rng.integers(-2, 3)) ** 2 <= radius ** 2
            maps[i][inside] = k
            images[i][inside] = rng.integers(0, 256, 3)
    return {"images": images, "masks": maps}


@pytest.fixture(scope="module")
def scenes():
    return sam_fit.scene_tensors(disc_scenes())


def test_scene_tensors_shapes_and_errors():
    images, maps = sam_fit.scene_tensors(disc_scenes(3))
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32 and images.max() <= 255
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.int64
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        sam_fit.scene_tensors({"images": np.zeros((3, 32, 32), np.uint8), "masks": np.zeros((3, 32, 32))})


def test_train_sam_repeats_exactly_and_uses_the_given_parts(scenes):
    images, maps = scenes
    calls = {"loss": 0, "session": 0}

    def loss_fn(logits, iou_predictions, targets):
        calls["loss"] += 1
        return sam_training.sam_loss(logits, iou_predictions, targets)

    def session_fn(*args, **kwargs):
        calls["session"] += 1
        return sam_training.interactive_session(*args, **kwargs)

    runs = []
    for _ in range(2):
        model = tiny_model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        history = sam_fit.train_sam(model, images, maps, steps=3, lr=1e-3, images_per_step=2, objects_per_image=2,
                                    rounds=2, loss_fn=loss_fn, session_fn=session_fn,
                                    generator=torch.Generator().manual_seed(0), progress=False)
        runs.append(history)
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert any(k.startswith("image_encoder.") for k in changed) and any(k.startswith("mask_decoder.")
                                                                            for k in changed)
        assert not model.training  # left in eval mode
    assert calls == {"loss": 2 * 3 * 2, "session": 2 * 3}  # 2 runs × 3 steps (× 2 rounds for the loss)
    assert len(runs[0].losses) == 3 and np.array(runs[0].metrics["ious"]).shape == (3, 2) and runs[0].seconds > 0
    assert runs[0].losses == runs[1].losses and runs[0].metrics["ious"] == runs[1].metrics["ious"]
    assert len(runs[0].lrs) == len(runs[0].grad_norms) == 3 and runs[0].lrs == runs[1].lrs


def test_train_sam_rejects_mismatched_scenes(scenes):
    images, maps = scenes
    with pytest.raises(ValueError, match=r"\(N, 3, S, S\)"):
        sam_fit.train_sam(tiny_model(), images, maps[:2], steps=1, lr=1e-3, progress=False)


def test_chosen_and_oracle_iou_by_hand():
    target = torch.zeros(1, 8, 8, dtype=torch.bool)
    target[0, 2:6, 2:6] = True
    logits = torch.full((1, 3, 4, 4), -5.0)  # low resolution: upsampled ×2 to the target
    logits[0, 0, 1:3, 1:2] = 5.0  # half the square
    logits[0, 1, 1:3, 1:3] = 5.0  # the square
    logits[0, 2] = 5.0  # everything
    chosen, oracle = sam_fit.chosen_and_oracle_iou(logits, torch.tensor([[0.9, 0.5, 0.2]]), target)
    torch.testing.assert_close((chosen, oracle), (torch.tensor([0.5]), torch.tensor([1.0])))
    with pytest.raises(ValueError, match=r"\(B, M, H', W'\)"):
        sam_fit.chosen_and_oracle_iou(logits[0], torch.tensor([[0.9, 0.5, 0.2]]), target)


def test_evaluate_prompts_follows_the_protocol(scenes):
    images, maps = scenes
    model = tiny_model(3)
    owner, masks = sam_training.all_objects(maps)
    result = sam_fit.evaluate_prompts(model, images, owner, masks, batch_size=3)
    assert set(result.ious) == set(sam_fit.PROMPTS) and all(v.shape == (len(masks),) for v in result.ious.values())
    assert all(((v >= 0) & (v <= 1)).all() for v in result.ious.values())
    assert (result.ious["oracle, 1 point"] >= result.ious["1 point"] - 1e-6).all()
    np.testing.assert_array_equal(result.clicks, sam_training.farthest_points(masks).numpy())  # clicks at centres
    # the same numbers, computed here from the course's session and a tight box
    with torch.no_grad():
        embeddings = model.image_encoder(model.preprocess(images))[owner]
        session = sam_training.interactive_session(model, embeddings, masks, 3, point_mode="farthest")
        box_logits, box_iou = model.decode(embeddings, boxes=sam_training.mask_to_box(masks))
    np.testing.assert_allclose(result.ious["1 point"], session[0].iou.numpy(), atol=1e-6)
    np.testing.assert_allclose(result.ious["3 points"], session[2].iou.numpy(), atol=1e-6)
    full = F.interpolate(box_logits, (32, 32), mode="bilinear", align_corners=False) > 0
    box = sam_training.mask_iou(full, masks[:, None]).gather(1, box_iou.argmax(1, keepdim=True))[:, 0]
    np.testing.assert_allclose(result.ious["box"], box.numpy(), atol=1e-6)
    assert result.miou()["box"] == pytest.approx(float(box.mean()), abs=1e-6)


def test_prompt_masks_are_the_masks_that_evaluate_prompts_scores(scenes):
    images, maps = scenes
    model = tiny_model(3)
    owner, masks = sam_training.all_objects(maps)
    scores = sam_fit.evaluate_prompts(model, images, owner, masks, batch_size=3).ious
    for chosen in (torch.arange(len(masks)), torch.tensor([len(masks) - 1, 0])):  # every object; two, out of order
        shown = sam_fit.prompt_masks(model, images, owner[chosen], masks[chosen], batch_size=3)
        assert shown.point_coords.shape == (len(chosen), 3, 2) and shown.point_labels.shape == (len(chosen), 3)
        np.testing.assert_array_equal(shown.point_coords[:, 0], sam_training.farthest_points(masks[chosen]).numpy())
        truth = masks[chosen].numpy()
        for prompt in sam_fit.PROMPTS:
            found = shown.masks[prompt]
            assert found.shape == truth.shape and found.dtype == bool
            iou = (found & truth).sum((1, 2)) / np.maximum((found | truth).sum((1, 2)), 1)
            np.testing.assert_allclose(iou, scores[prompt][chosen.numpy()], atol=1e-6, err_msg=prompt)


def test_masks_to_instance_map_lets_the_confident_mask_win():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True  # rows 0–1, score 0.5
    masks[1, 1:3] = True  # rows 1–2, score 0.9: wins row 1
    masks[2, 3, 3] = True  # one pixel, score 0.1
    found = MaskSet(masks, torch.tensor([0.5, 0.9, 0.1]), torch.ones(3), torch.zeros(3, 4, dtype=torch.long),
                    torch.zeros(3, 2, dtype=torch.float64))
    instance_map = sam_fit.masks_to_instance_map(found, (4, 4))
    assert instance_map[:, 0].tolist() == [1, 2, 2, 0] and instance_map[3, 3] == 3


def test_label_quality_counts_matches():
    maps = torch.zeros(1, 6, 6, dtype=torch.long)
    maps[0, :3, :3] = 1
    maps[0, 4:, 4:] = 2
    exact = maps[0] == 1
    half = torch.zeros(6, 6, dtype=torch.bool)
    half[4:, 4] = True  # 2 of object 2's 4 pixels: IoU 0.5
    wrong = torch.zeros(6, 6, dtype=torch.bool)
    wrong[0, 5] = True  # background: IoU 0
    masks = torch.stack([exact, half, wrong])
    found = MaskSet(masks, torch.ones(3), torch.ones(3), torch.zeros(3, 4, dtype=torch.long),
                    torch.zeros(3, 2, dtype=torch.float64))
    quality = sam_fit.label_quality([found], maps)
    assert quality["masks per image"] == 3
    assert quality["mean IoU with the best true object"] == pytest.approx(0.5)
    assert quality["share of masks with IoU ≥ 0.5"] == pytest.approx(2 / 3)
    assert quality["share of true objects found (IoU ≥ 0.5)"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one MaskSet per instance map"):
        sam_fit.label_quality([found, found], maps)


def test_auto_label_keeps_large_enough_masks_and_restores_the_mode():
    data = disc_scenes(2)
    model = tiny_model(5).train()
    label = functools.partial(sam_fit.auto_label, model, data["images"], points_per_side=4, pred_iou_thresh=0.0,
                              stability_score_thresh=0.0, progress=False)
    everything, large = label(), label(min_pixels=20)
    assert model.training and len(everything) == 2 and all(isinstance(f, MaskSet) for f in everything)
    for few, many in zip(large, everything, strict=True):
        assert (few.masks.flatten(1).sum(1) >= 20).all()
        assert len(few) == int((many.masks.flatten(1).sum(1) >= 20).sum())


def test_train_sam_flips_each_scene_with_its_map():
    maps = torch.zeros(6, 32, 32, dtype=torch.long)
    maps[:, 4:28, 2:12] = 1  # one object, on the left of every scene
    images = (maps[:, None] * 255).expand(-1, 3, -1, -1).float()  # the image shows the map
    model = tiny_model()
    seen = {"images": [], "targets": []}
    preprocess = model.preprocess

    def recording_preprocess(x):
        seen["images"].append(x.clone())
        return preprocess(x)

    def session_fn(model, embeddings, targets, rounds, **kwargs):
        seen["targets"].append(targets.clone())
        return sam_training.interactive_session(model, embeddings, targets, rounds, **kwargs)

    model.preprocess = recording_preprocess
    sam_fit.train_sam(model, images, maps, steps=4, lr=1e-3, images_per_step=4, objects_per_image=2, rounds=1,
                      session_fn=session_fn, generator=torch.Generator().manual_seed(0), progress=False)
    flips = 0
    for batch, targets in zip(seen["images"], seen["targets"], strict=True):
        shown = batch[:, 0] > 0  # (4, S, S): where each scene shows its object
        assert torch.equal(targets, shown.repeat_interleave(2, dim=0)), "a target does not match its scene"
        flips += int(shown[:, :, 20:].any(dim=(1, 2)).sum())  # objects moved to the right by a flip
    assert 0 < flips < 16


@pytest.mark.slow
def test_sam_recipe_script_repeats_exactly(tmp_path):
    """scripts/sam/recipe.py (how the lab's settings were chosen) trains, evaluates and appends the same JSON line
    twice for the same arguments."""
    out = tmp_path / "results.jsonl"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "sam" / "recipe.py"), "--profile", "smoke", "--steps", "3",
               "--images", "2", "--objects", "2", "--out", str(out)]
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first.pop("training_seconds") >= 0 and second.pop("training_seconds") >= 0
    assert first == second
    assert set(sam_fit.PROMPTS) <= set(first) and all(0 <= first[p] <= 1 for p in sam_fit.PROMPTS)
    assert first["steps"] == 3 and first["objects"] == 2 and first["held_out_objects"] > 0
