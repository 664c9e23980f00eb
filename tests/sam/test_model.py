"""helpers.sam is segment_anything's SAM: same parameter names, same numbers (1e-5, float32) on tiny random
configurations, for every kind of prompt. Also the test-only torchvision stand-in (tests/shims/_torchvision)
against OpenCV and PIL."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from functools import partial

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling import Sam as RefSam
from segment_anything.modeling.image_encoder import get_rel_pos
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from helpers.paths import REPO_ROOT
from helpers.sam.config import SamConfig
from helpers.sam.image_encoder import relative_position_table, window_partition, window_unpartition
from helpers.sam.model import Sam, sam_from_reference, sam_to_reference
from helpers.sam.transforms import (
    prepare_image,
    preprocess_shape,
    resize_longest_side,
    transform_boxes,
    transform_coords,
)

SHIMS = REPO_ROOT / "tests" / "shims"

# Tiny configurations: window sizes that do and do not divide the patch grid (padding), with and without
# relative positions, one to four blocks, two to four heads, IoU heads of depth 2 and 3.
CONFIGS = {
    "64px-p8-win3": dict(
        img_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
        encoder_window_size=3, encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8,
        decoder_depth=2, decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32),
    "128px-p16-win4-norel": dict(
        img_size=128, patch_size=16, encoder_embed_dim=48, encoder_depth=3, encoder_num_heads=4,
        encoder_window_size=4, encoder_global_attn_indexes=(2,), encoder_use_rel_pos=False, encoder_qkv_bias=False,
        encoder_norm_eps=1e-5, prompt_embed_dim=32, mask_in_chans=16, decoder_depth=2, decoder_num_heads=4,
        decoder_mlp_dim=48, iou_head_depth=2, iou_head_hidden_dim=24),
    "64px-p16-win2-depth4": dict(
        img_size=64, patch_size=16, encoder_embed_dim=64, encoder_depth=4, encoder_num_heads=4,
        encoder_mlp_ratio=2.0, encoder_window_size=2, encoder_global_attn_indexes=(1, 3), prompt_embed_dim=32,
        mask_in_chans=8, decoder_depth=2, decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)


def build_reference(img_size, patch_size, encoder_embed_dim, encoder_depth, encoder_num_heads, encoder_window_size,
                    encoder_global_attn_indexes, prompt_embed_dim, mask_in_chans, decoder_depth, decoder_num_heads,
                    decoder_mlp_dim, iou_head_hidden_dim, encoder_mlp_ratio=4.0, encoder_use_rel_pos=True,
                    encoder_qkv_bias=True, encoder_norm_eps=1e-6, iou_head_depth=3, seed=0) -> RefSam:
    """segment_anything's SAM built with its own constructors (as its build_sam does), every weight perturbed
    so that none is a zero or a one (the position tables start at zero)."""
    e = img_size // patch_size
    torch.manual_seed(seed)
    ref = RefSam(
        image_encoder=ImageEncoderViT(
            img_size=img_size, patch_size=patch_size, embed_dim=encoder_embed_dim, depth=encoder_depth,
            num_heads=encoder_num_heads, mlp_ratio=encoder_mlp_ratio, out_chans=prompt_embed_dim,
            qkv_bias=encoder_qkv_bias, norm_layer=partial(nn.LayerNorm, eps=encoder_norm_eps),
            use_rel_pos=encoder_use_rel_pos, window_size=encoder_window_size,
            global_attn_indexes=encoder_global_attn_indexes),
        prompt_encoder=PromptEncoder(embed_dim=prompt_embed_dim, image_embedding_size=(e, e),
                                     input_image_size=(img_size, img_size), mask_in_chans=mask_in_chans),
        mask_decoder=MaskDecoder(
            transformer_dim=prompt_embed_dim, num_multimask_outputs=3, iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
            transformer=TwoWayTransformer(depth=decoder_depth, embedding_dim=prompt_embed_dim,
                                          num_heads=decoder_num_heads, mlp_dim=decoder_mlp_dim)),
    )
    with torch.no_grad():
        for parameter in ref.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return ref.eval()


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    """(reference, course model, config) with the same weights."""
    ref = build_reference(**CONFIGS[request.param])
    model = sam_from_reference(ref)
    return ref, model, model.config


# ----------------------------------------------------------------------------------------------------------------
# Prompts


def _image(original_size, S, gen):
    h, w = preprocess_shape(*original_size, S)
    return torch.rand(3, h, w, generator=gen) * 255


def _points(B, N, S, gen, labels=(-1, 0, 1)):
    coords = torch.rand(B, N, 2, generator=gen) * S
    every_label = torch.randperm(B * N, generator=gen) % len(labels)  # each label at least once if B·N allows
    return coords, torch.tensor(labels)[every_label].view(B, N)


def _boxes(B, S, gen):
    corners = torch.rand(B, 2, 2, generator=gen) * S
    return torch.cat([corners.min(1).values, corners.max(1).values], dim=1)


def make_input(case: str, config: SamConfig, seed: int = 0) -> list[dict]:
    """One of the prompt situations, in the resized frame, on non-square originals (portrait and landscape)."""
    gen = torch.Generator().manual_seed(seed)
    S, m = config.img_size, config.mask_input_size
    landscape, portrait = (37, 53), (91, 40)

    def record(original, **prompts):
        return {"image": _image(original, S, gen), "original_size": original, **prompts}

    def points(B, N, labels=(-1, 0, 1)):
        coords, labels = _points(B, N, S, gen, labels)
        return {"point_coords": coords, "point_labels": labels}

    def masks(B):
        return {"mask_inputs": 3 * torch.randn(B, 1, m, m, generator=gen)}

    if case == "points":  # several prompts, foreground, background and padding labels
        return [record(landscape, **points(3, 4))]
    if case == "one-point":
        return [record(portrait, **points(1, 1, labels=(1,)))]
    if case == "boxes":
        return [record(portrait, boxes=_boxes(2, S, gen))]
    if case == "masks":  # a mask prompt alone
        return [record(landscape, **masks(2))]
    if case == "points+box":
        return [record(portrait, **points(2, 3), boxes=_boxes(2, S, gen))]
    if case == "points+mask":
        return [record(landscape, **points(2, 2, labels=(0, 1)), **masks(2))]
    if case == "all":
        return [record(landscape, **points(2, 2), boxes=_boxes(2, S, gen), **masks(2))]
    if case == "no-prompt":
        return [record(portrait)]
    if case == "two-images":
        return [record(landscape, **points(2, 3)), record((S, S), boxes=_boxes(3, S, gen), **masks(3))]
    raise ValueError(case)


CASES = ["points", "one-point", "boxes", "masks", "points+box", "points+mask", "all", "no-prompt", "two-images"]


def assert_same_outputs(ours, theirs, ref, batched_input):
    """Logits and IoUs to 1e-5; boolean masks equal wherever the reference logit is not within 1e-4 of 0."""
    assert len(ours) == len(theirs)
    for o, t, record in zip(ours, theirs, batched_input, strict=True):
        assert o.keys() == t.keys()
        torch.testing.assert_close(o["low_res_logits"], t["low_res_logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(o["iou_predictions"], t["iou_predictions"], atol=1e-5, rtol=1e-5)
        logits = ref.postprocess_masks(t["low_res_logits"], record["image"].shape[-2:], record["original_size"])
        assert o["masks"].shape == t["masks"].shape == logits.shape
        assert o["masks"].dtype == torch.bool
        clear = logits.abs() > 1e-4
        assert torch.equal(o["masks"][clear], t["masks"][clear])


# ----------------------------------------------------------------------------------------------------------------
# The whole model against segment_anything


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_segment_anything(pair, case, multimask):
    ref, model, config = pair
    batched_input = make_input(case, config)
    with torch.no_grad():
        ours, theirs = model(batched_input, multimask), ref(batched_input, multimask)
    assert_same_outputs(ours, theirs, ref, batched_input)
    expected_masks = 3 if multimask else 1
    assert ours[0]["low_res_logits"].shape[1:] == (expected_masks, config.mask_input_size, config.mask_input_size)


def test_parts_match_segment_anything(pair):
    ref, model, config = pair
    gen = torch.Generator().manual_seed(1)
    S = config.img_size
    x = torch.randn(2, 3, S, S, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(model.image_encoder(x), ref.image_encoder(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.prompt_encoder.get_dense_pe(), ref.prompt_encoder.get_dense_pe(),
                                   atol=1e-5, rtol=1e-5)
        prompts = dict(points=_points(3, 2, S, gen), boxes=_boxes(3, S, gen), masks=None)
        for ours, theirs in zip(model.prompt_encoder(**prompts), ref.prompt_encoder(**prompts), strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_decode_takes_one_embedding_per_prompt(pair):
    """An extension for training: (B, C, e, e) embeddings, one per prompt, equal B separate calls."""
    ref, model, config = pair
    gen = torch.Generator().manual_seed(2)
    e, C = config.image_embedding_size, config.prompt_embed_dim
    embeddings = torch.randn(3, C, e, e, generator=gen)
    coords, labels = _points(3, 2, config.img_size, gen)
    with torch.no_grad():
        together = model.decode(embeddings, coords, labels, multimask_output=True)
        for i in range(3):
            sparse, dense = ref.prompt_encoder(points=(coords[i:i + 1], labels[i:i + 1]), boxes=None, masks=None)
            alone = ref.mask_decoder(embeddings[i:i + 1], ref.prompt_encoder.get_dense_pe(), sparse, dense, True)
            for ours, theirs in zip(together, alone, strict=True):
                torch.testing.assert_close(ours[i:i + 1], theirs, atol=1e-5, rtol=1e-5)


def test_relative_position_table_matches_get_rel_pos():
    gen = torch.Generator().manual_seed(3)
    for size, rows in [(4, 7), (5, 9), (6, 7), (3, 11)]:  # the last two are resized (another training size)
        table = torch.randn(rows, 8, generator=gen)
        torch.testing.assert_close(relative_position_table(size, table), get_rel_pos(size, size, table))


def test_window_partition_round_trip():
    x = torch.randn(2, 7, 5, 3)
    windows, padded = window_partition(x, 3)
    assert windows.shape == (2 * 3 * 2, 3, 3, 3) and padded == (9, 6)
    assert torch.equal(windows[0], x[0, :3, :3])
    assert torch.equal(window_unpartition(windows, 3, padded, (7, 5)), x)


# ----------------------------------------------------------------------------------------------------------------
# Weights and configurations


def test_state_dicts_share_keys_and_round_trip(pair):
    ref, model, config = pair
    theirs, ours = ref.state_dict(), model.state_dict()
    assert list(ours) == list(theirs)
    assert all(k.split(".")[0] in ("image_encoder", "prompt_encoder", "mask_decoder") for k in ours)
    assert SamConfig.from_reference(ref) == config
    back = sam_to_reference(sam_from_reference(ref)).state_dict()
    assert list(back) == list(theirs)
    assert all(torch.equal(back[k], theirs[k]) for k in theirs)
    assert torch.equal(sam_to_reference(model).pixel_mean, ref.pixel_mean)


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_official_sizes_share_keys_and_shapes(name):
    """Built on the meta device: no memory, no time."""
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        ref = sam_model_registry[name]()
        model = Sam(getattr(SamConfig, name)())
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert SamConfig.from_reference(ref) == getattr(SamConfig, name)()


# ----------------------------------------------------------------------------------------------------------------
# Images and prompts from the original frame, SamPredictor, SamAutomaticMaskGenerator


def test_resize_and_coordinate_transforms_match_resize_longest_side():
    rng = np.random.default_rng(4)
    for original in [(37, 53), (91, 40), (64, 64), (1, 200), (300, 7)]:
        for S in (64, 128, 1024):
            transform = ResizeLongestSide(S)
            assert preprocess_shape(*original, S) == transform.get_preprocess_shape(*original, S)
            coords, boxes = rng.uniform(0, 100, (5, 2)), rng.uniform(0, 100, (3, 4))
            np.testing.assert_array_equal(transform_coords(coords, original, S),
                                          transform.apply_coords(coords, original))
            np.testing.assert_array_equal(transform_boxes(boxes, original, S), transform.apply_boxes(boxes, original))
            coords_t = torch.as_tensor(coords, dtype=torch.float)
            assert torch.equal(transform_coords(coords_t, original, S),
                               transform.apply_coords_torch(coords_t, original))
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_longest_side(image, 64), ResizeLongestSide(64).apply_image(image))


def _predictor_prompts():
    return dict(point_coords=np.array([[10.0, 20.0], [25.0, 5.0], [3.0, 44.0]]), point_labels=np.array([1, 0, 1]),
                box=np.array([2.0, 3.0, 28.0, 40.0]))


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
def test_sam_predictor_on_the_reference_copy_agrees(pair, multimask):
    """SamPredictor drives sam_to_reference(model); the course's model gets the same prompt directly."""
    _, model, config = pair
    image = np.random.default_rng(5).integers(0, 256, (50, 30, 3), dtype=np.uint8)
    prompts = _predictor_prompts()
    predictor = SamPredictor(sam_to_reference(model))
    predictor.set_image(image)
    masks, iou, low_res = predictor.predict(**prompts, multimask_output=multimask)

    S, original = config.img_size, image.shape[:2]
    coords = transform_coords(prompts["point_coords"], original, S)
    record = {
        "image": prepare_image(image, S), "original_size": original,
        "point_coords": torch.as_tensor(coords, dtype=torch.float)[None],
        "point_labels": torch.as_tensor(prompts["point_labels"])[None],
        "boxes": torch.as_tensor(transform_boxes(prompts["box"], original, S), dtype=torch.float),
    }
    with torch.no_grad():
        out = model([record], multimask_output=multimask)[0]
        logits = model.postprocess_masks(out["low_res_logits"], record["image"].shape[-2:], original)[0]
    np.testing.assert_allclose(out["low_res_logits"][0].numpy(), low_res, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(out["iou_predictions"][0].numpy(), iou, atol=1e-5, rtol=1e-5)
    clear = logits.abs().numpy() > 1e-4
    assert masks.shape == (3 if multimask else 1, *original)
    np.testing.assert_array_equal(out["masks"][0].numpy()[clear], masks[clear])


def test_sam_predictor_drives_the_course_model_directly(pair):
    """The course's Sam has the attributes SamPredictor calls, with the same names and arguments."""
    ref, model, _ = pair
    image = np.random.default_rng(6).integers(0, 256, (41, 64, 3), dtype=np.uint8)
    results = []
    for sam in (model, ref):
        predictor = SamPredictor(sam)
        predictor.set_image(image)
        results.append(predictor.predict(**_predictor_prompts(), multimask_output=True, return_logits=True))
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def test_automatic_mask_generator_runs_on_the_reference_copy(pair):
    _, model, _ = pair
    image = np.random.default_rng(7).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    options = dict(points_per_side=4, pred_iou_thresh=-1e9, stability_score_thresh=-1e9, box_nms_thresh=0.7)
    found = SamAutomaticMaskGenerator(sam_to_reference(model), **options).generate(image)
    assert found and all(m["segmentation"].shape == image.shape[:2] for m in found)
    assert len(found) <= 4 * 4 * 3
    again = SamAutomaticMaskGenerator(model, **options).generate(image)
    assert [m["bbox"] for m in again] == [m["bbox"] for m in found]


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_names_the_expected_shape(pair):
    _, model, config = pair
    S, m = config.img_size, config.mask_input_size
    good = make_input("points", config)[0]
    with pytest.raises(ValueError, match=rf"expected shape \(3, h, w\) with h, w ≤ {S}.*got \(\d+, \d+, 3\)"):
        model([{**good, "image": good["image"].permute(1, 2, 0)}], True)
    with pytest.raises(ValueError, match=r"expected shape \(3, h, w\)"):
        model([{**good, "image": torch.zeros(3, S + 1, S)}], True)
    with pytest.raises(ValueError, match=rf"image_encoder input: expected shape \(B, 3, {S}, {S}\)"):
        model.image_encoder(torch.zeros(1, 3, S // 2, S // 2))
    with pytest.raises(ValueError, match=r"point_coords: expected shape \(B, N, 2\), got \(3, 4, 3\)"):
        model([{**good, "point_coords": torch.zeros(3, 4, 3)}], True)
    with pytest.raises(ValueError, match=r"point_labels: expected shape \(B, N\) = \(3, 4\), got \(3, 5\)"):
        model([{**good, "point_labels": torch.zeros(3, 5)}], True)
    with pytest.raises(ValueError, match=rf"mask_inputs: expected shape \(B, 1, {m}, {m}\), got \(3, 1, 8, 8\)"):
        model([{**good, "mask_inputs": torch.zeros(3, 1, 8, 8)}], True)
    with pytest.raises(ValueError, match=r"boxes: expected shape \(B, 4\)"):
        model([{**good, "boxes": torch.zeros(3, 2, 2)}], True)
    with pytest.raises(ValueError, match=r"same number B of prompts, got \[3, 2\]"):
        model([{**good, "boxes": torch.zeros(2, 4)}], True)
    with pytest.raises(ValueError, match="point_coords and point_labels come together"):
        model.decode(torch.zeros(1, config.prompt_embed_dim, 4, 4), point_coords=torch.zeros(1, 1, 2))


def test_sam_to_reference_says_what_is_missing(pair, monkeypatch):
    """A module set to None in sys.modules counts as not installed (monkeypatch restores the real ones)."""
    _, model, _ = pair

    def forget_segment_anything():
        for name in [m for m in sys.modules if m.split(".")[0] == "segment_anything"]:
            monkeypatch.delitem(sys.modules, name)

    forget_segment_anything()
    monkeypatch.setitem(sys.modules, "torchvision.transforms.functional", None)
    with pytest.raises(ImportError, match="segment_anything imports torchvision, which is not installed"):
        sam_to_reference(model)
    forget_segment_anything()
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    with pytest.raises(ImportError, match="pip install segment-anything"):
        sam_to_reference(model)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="img_size=100 must be a multiple of patch_size=16"):
        SamConfig(img_size=100)
    with pytest.raises(ValueError, match="encoder_global_attn_indexes"):
        SamConfig(encoder_depth=4, encoder_global_attn_indexes=(4,))
    with pytest.raises(ValueError, match="decoder_num_heads"):
        SamConfig(prompt_embed_dim=48, decoder_num_heads=5)


# ----------------------------------------------------------------------------------------------------------------
# The torchvision stand-in (test-only; see tests/shims/_torchvision/__init__.py)


def _stand_in(name: str):
    spec = importlib.util.spec_from_file_location("_torchvision_for_tests", SHIMS / "_torchvision" / "__init__.py")
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    return package.load(name)


def _random_boxes(n, gen, spread=60.0, size=(5.0, 40.0)):
    top_left = torch.rand(n, 2, generator=gen, dtype=torch.float64) * spread
    wh = size[0] + torch.rand(n, 2, generator=gen, dtype=torch.float64) * (size[1] - size[0])
    return torch.cat([top_left, top_left + wh], dim=1)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.7])
def test_stand_in_batched_nms_matches_opencv(threshold):
    boxes_module = _stand_in("torchvision.ops.boxes")
    gen = torch.Generator().manual_seed(int(threshold * 10))
    for n in (1, 17, 120):
        boxes = _random_boxes(n, gen)
        scores = torch.rand(n, generator=gen, dtype=torch.float64) + 0.01
        categories = torch.randint(0, 4, (n,), generator=gen)
        keep = boxes_module.batched_nms(boxes, scores, categories, threshold)
        rects = [(x1, y1, x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes.tolist()]
        expected = np.asarray(cv2.dnn.NMSBoxesBatched(rects, scores.tolist(), categories.tolist(), 0.0, threshold))
        assert keep.dtype == torch.int64
        assert keep.tolist() == expected.flatten().tolist()  # same boxes, by decreasing score
        assert torch.all(scores[keep][:-1] >= scores[keep][1:])
        single = boxes_module.nms(boxes, scores, threshold)
        expected_single = np.asarray(cv2.dnn.NMSBoxes(rects, scores.tolist(), 0.0, threshold))
        assert single.tolist() == expected_single.flatten().tolist()
        if n > 100:
            assert 0 < len(single) < n  # the case suppresses some boxes, not all


def test_stand_in_nms_edge_cases_and_box_area():
    boxes_module = _stand_in("torchvision.ops.boxes")
    empty = boxes_module.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert boxes_module.batched_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.5).tolist() == [0, 2]  # other category
    assert boxes_module.batched_nms(boxes, scores, torch.tensor([0, 0, 0]), 0.7).tolist() == [0, 1]  # IoU 0.68
    assert torch.equal(boxes_module.box_area(torch.tensor([[1.0, 2, 4, 7], [0, 0, 0, 5]])), torch.tensor([15.0, 0]))
    with pytest.raises(ValueError, match=r"expected boxes of shape \(N, 4\)"):
        boxes_module.box_area(torch.zeros(3, 2))


def test_stand_in_resize_and_to_pil_image_match_pil():
    functional = _stand_in("torchvision.transforms.functional")
    image = np.random.default_rng(8).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    pil = functional.to_pil_image(image)
    assert pil.mode == "RGB" and np.array_equal(np.asarray(pil), image)
    for h, w in [(20, 33), (64, 91), (37, 53)]:
        resized = np.asarray(functional.resize(pil, (h, w)))
        assert resized.shape == (h, w, 3)
        np.testing.assert_array_equal(resized, np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR)))
    with pytest.raises(TypeError, match="uint8"):
        functional.to_pil_image(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"sequence \(h, w\)"):
        functional.resize(pil, 32)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="no real torchvision installed")
def test_stand_in_agrees_with_a_real_torchvision():  # pragma: no cover - only where torchvision exists
    import torchvision.ops.boxes as real_boxes
    import torchvision.transforms.functional as real_functional

    boxes_module, functional = _stand_in("torchvision.ops.boxes"), _stand_in("torchvision.transforms.functional")
    gen = torch.Generator().manual_seed(9)
    boxes, scores = _random_boxes(80, gen).float(), torch.rand(80, generator=gen)
    categories = torch.randint(0, 3, (80,), generator=gen)
    assert torch.equal(boxes_module.batched_nms(boxes, scores, categories, 0.5),
                       real_boxes.batched_nms(boxes, scores, categories, 0.5))
    image = np.random.default_rng(9).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(functional.resize(functional.to_pil_image(image), (20, 33))),
                                  np.asarray(real_functional.resize(real_functional.to_pil_image(image), (20, 33))))


def test_stand_in_keeps_torchvision_invisible_to_transformers():
    """With tests/shims on PYTHONPATH (as the test commands set it), segment_anything imports, yet
    find_spec("torchvision") stays None: transformers must not think torchvision is installed."""
    if importlib.util.find_spec("torchvision") is not None and "torchvision.ops.boxes" not in sys.modules:
        pytest.skip("a real torchvision is installed: the stand-in is not used")
    code = ("import importlib.util, segment_anything\n"
            "from segment_anything import SamAutomaticMaskGenerator\n"
            "import transformers, transformers.models.llama\n"
            "from transformers import LlamaForCausalLM\n"
            "from transformers.utils import is_torchvision_available\n"
            "assert importlib.util.find_spec('torchvision') is None\n"
            "assert not is_torchvision_available()\n"
            "from torchvision.ops.boxes import batched_nms\n"
            "print('ok', batched_nms.__module__)\n")
    env = {**os.environ, "PYTHONPATH": str(SHIMS)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok torchvision.ops.boxes"
