"""helpers.sam.widget: the click-to-segment state without a browser (a fake segmenter), the ipyevents coordinates,
the widget's wiring, and SAM's interactive refinement through SamPredictor and through the course's model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from helpers.sam.config import SamConfig
from helpers.sam.model import Sam, sam_to_reference
from helpers.sam.widget import MASK_COLOUR, ClickToSegment, model_segmenter, predictor_segmenter

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 48, 64


def disc_segmenter(radius: float = 6.0):
    """Foreground discs around the foreground points minus discs around the background points; score = 1 / N."""
    calls = []

    def segment(points, labels):
        calls.append((points.copy(), labels.copy()))
        rows, cols = np.mgrid[:H, :W]
        mask = np.zeros((H, W), dtype=bool)
        for (x, y), label in zip(points, labels, strict=True):
            disc = np.hypot(cols - x, rows - y) <= radius
            mask = mask | disc if label == 1 else mask & ~disc
        return mask, 1.0 / len(points)

    segment.calls = calls
    return segment


def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_click_undo_reset_update_the_state():
    segment = disc_segmenter()
    app = ClickToSegment(image(), segment, size=128)
    assert app.points.shape == (0, 2) and app.labels.shape == (0,) and not app.mask.any() and np.isnan(app.score)
    assert segment.calls == []  # nothing to segment yet

    app.click(20, 10)
    assert app.points.tolist() == [[20.0, 10.0]] and app.labels.tolist() == [1]
    assert app.mask[10, 20] and app.mask.sum() == disc_segmenter()(np.array([[20.0, 10.0]]), np.array([1]))[0].sum()
    assert app.score == 1.0

    app.click(40, 30, foreground=True)
    app.click(22, 10, foreground=False)
    assert app.labels.tolist() == [1, 1, 0] and app.score == pytest.approx(1 / 3)
    assert not app.mask[10, 22] and app.mask[30, 40]
    np.testing.assert_array_equal(segment.calls[-1][0], [[20, 10], [40, 30], [22, 10]])

    app.undo()
    assert app.labels.tolist() == [1, 1] and app.mask[10, 20] and app.score == pytest.approx(0.5)
    app.reset()
    assert app.points.shape == (0, 2) and not app.mask.any() and np.isnan(app.score)
    app.undo()  # nothing to undo: no error
    assert app.labels.tolist() == []


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        ClickToSegment(np.zeros((H, W), dtype=np.uint8), disc_segmenter())
    app = ClickToSegment(image(), disc_segmenter())
    with pytest.raises(ValueError, match="outside the 64 × 48 image"):
        app.click(64, 3)
    with pytest.raises(ValueError, match=r"expected \(48, 64\)"):
        ClickToSegment(image(), lambda p, lab: (np.zeros((3, 3), bool), 0.0)).click(1, 1)


def test_overlay_colours_the_mask_only():
    app = ClickToSegment(image(), disc_segmenter(radius=8))
    app.click(30, 20)
    out = app.overlay(alpha=0.5)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~app.mask], app.image[~app.mask])
    inside = app.mask.copy()
    inside[[20, 20, 12, 28], [22, 38, 30, 30]] = False  # the outline is solid: check the interior
    expected = np.round(0.5 * app.image[20, 30].astype(float) + 0.5 * MASK_COLOUR)
    np.testing.assert_array_equal(out[20, 30], expected)
    assert (out[20, 22] == MASK_COLOUR).all()  # (x=22, y=20) lies on the disc's outline


@pytest.mark.parametrize("keys", ["relative", "data"])
def test_event_maps_to_the_pixel_at_half_size(keys):
    app = ClickToSegment(image(), disc_segmenter(), size=32)  # displayed 32 × 24: half the image
    assert app.display_size == (32, 24)
    if keys == "relative":
        event = {"type": "click", "relativeX": 10, "relativeY": 5, "boundingRectWidth": 32.0,
                 "boundingRectHeight": 24.0}
    else:
        event = {"type": "click", "dataX": 10, "dataY": 5}
    assert app.event_to_pixel(event) == (20, 10)
    assert app.event_to_pixel({**event, **{f"{keys}X": 31.9, f"{keys}Y": 23.9}}) == (63, 47)
    assert app.event_to_pixel({**event, **{f"{keys}X": 40, f"{keys}Y": -2}}) == (63, 0)  # clamped inside


def test_event_kinds_choose_the_label():
    app = ClickToSegment(image(), disc_segmenter(), size=64)
    base = {"relativeX": 8, "relativeY": 8, "boundingRectWidth": 64, "boundingRectHeight": 48}
    app.handle_event({**base, "type": "click"})
    app.handle_event({**base, "type": "click", "shiftKey": True})
    app.handle_event({**base, "type": "contextmenu"})
    app.handle_event({**base, "type": "mousemove"})  # ignored
    app.foreground = False
    app.handle_event({**base, "type": "click"})
    assert app.labels.tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="relativeX"):
        app.event_to_pixel({"type": "click"})


def test_widget_builds_and_routes_events():
    app = ClickToSegment(image(), disc_segmenter(), size=128)
    box = app.widget
    parts = app._widgets
    assert box is app.widget and parts["image"] in box.children
    assert (parts["image"].width, parts["image"].height) == ("128", "96")
    before = parts["image"].value
    # what ipyevents' front end sends: a DOM event message to the Event widget
    parts["events"]._handle_mouse_msg(None, {"type": "click", "relativeX": 60, "relativeY": 40,
                                             "boundingRectWidth": 128, "boundingRectHeight": 96}, None)
    assert app.points.tolist() == [[30.0, 20.0]] and parts["image"].value != before
    assert "predicted IoU 1.000" in parts["status"].value
    parts["mode"].value = False
    parts["events"]._handle_mouse_msg(None, {"type": "click", "dataX": 20, "dataY": 20}, None)
    assert app.labels.tolist() == [1, 0]
    parts["undo"].click()
    assert app.labels.tolist() == [1]
    parts["reset"].click()
    assert app.labels.tolist() == [] and "Click on an object" in parts["status"].value


# ----------------------------------------------------------------------------------------------------------------
# SAM's interactive refinement


def tiny_sam(seed: int = 0) -> Sam:
    torch.manual_seed(seed)
    model = Sam(SamConfig(img_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                          encoder_window_size=4, encoder_global_attn_indexes=(1,), prompt_embed_dim=32,
                          mask_in_chans=8, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32))
    with torch.no_grad():  # no zeros or ones left (position tables start at zero)
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


CLICKS = np.array([[20.0, 12.0], [40.0, 30.0], [25.0, 14.0]]), np.array([1, 1, 0])


def direct_rounds(predictor: SamPredictor):
    """SAM's interactive refinement written out with SamPredictor.predict: the expected masks and scores."""
    points, labels = CLICKS
    masks, scores, logits = predictor.predict(point_coords=points[:1], point_labels=labels[:1],
                                              multimask_output=True)
    best = int(np.argmax(scores))
    out = [(masks[best], scores[best])]
    previous = logits[best]
    for n in (2, 3):
        masks, scores, logits = predictor.predict(point_coords=points[:n], point_labels=labels[:n],
                                                  mask_input=previous[None], multimask_output=False)
        out.append((masks[0], scores[0]))
        previous = logits[0]
    return out


def test_predictor_segmenter_is_sams_refinement():
    model = tiny_sam()
    img = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    predictor = SamPredictor(sam_to_reference(model))
    with pytest.raises(ValueError, match="set_image"):
        predictor_segmenter(predictor)
    predictor.set_image(img)
    expected = direct_rounds(predictor)
    assert any(0 < m.sum() < m.size for m, _ in expected)  # the tiny model gives masks that say something

    segment = predictor_segmenter(predictor)
    points, labels = CLICKS
    for n in (1, 2, 3):
        mask, score = segment(points[:n], labels[:n])
        np.testing.assert_array_equal(mask, expected[n - 1][0])
        assert score == pytest.approx(float(expected[n - 1][1]), abs=1e-6)

    calls = []
    original = predictor.predict
    predictor.predict = lambda **kw: calls.append(kw) or original(**kw)
    mask, score = segment(points[:2], labels[:2])  # undo: the cached round, no new prediction
    assert calls == [] and score == pytest.approx(float(expected[1][1]), abs=1e-6)
    np.testing.assert_array_equal(mask, expected[1][0])
    with pytest.raises(ValueError, match=r"points_xy \(N, 2\)"):
        segment(np.zeros((0, 2)), np.zeros(0))


def test_model_segmenter_equals_predictor_segmenter():
    model = tiny_sam(seed=3)
    img = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    predictor = SamPredictor(sam_to_reference(model))
    predictor.set_image(img)
    ours, theirs = model_segmenter(model, img), predictor_segmenter(predictor)
    points, labels = CLICKS
    for n in (1, 2, 3):
        (mask, score), (ref_mask, ref_score) = ours(points[:n], labels[:n]), theirs(points[:n], labels[:n])
        assert mask.shape == (H, W) and (mask == ref_mask).mean() >= 0.999
        assert score == pytest.approx(ref_score, abs=1e-4)


def test_the_widget_drives_the_course_model():
    model = tiny_sam()
    img = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    app = ClickToSegment(img, model_segmenter(model, img))
    app.click(20, 12)
    first = app.mask.copy()
    app.click(40, 30)
    app.undo()
    np.testing.assert_array_equal(app.mask, first)
