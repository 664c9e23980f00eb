"""helpers.zero123.metrics: PSNR and SSIM equal scikit-image's, the object's box holds the object, and the sharpness
ratio tells a blurred view from a sharp one."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from helpers.zero123 import metrics


@pytest.fixture(scope="module")
def views():
    g = torch.Generator().manual_seed(0)
    truth = torch.ones(3, 3, 24, 24)
    truth[:, :, 6:15, 8:20] = torch.rand(3, 3, 1, 1, generator=g) * 2 - 1  # a coloured block on white
    masks = torch.zeros(3, 24, 24, dtype=torch.bool)
    masks[:, 6:15, 8:20] = True
    prediction = (truth + 0.2 * torch.randn(truth.shape, generator=g)).clamp(-1, 1)
    return prediction, truth, masks


def test_psnr_and_ssim_equal_scikit_image(views):
    prediction, truth, _ = views
    p, t = metrics.to_unit(prediction), metrics.to_unit(truth)
    expected_psnr = [peak_signal_noise_ratio(t[i], p[i], data_range=1.0) for i in range(3)]
    expected_ssim = [structural_similarity(p[i], t[i], data_range=1.0, channel_axis=-1) for i in range(3)]
    np.testing.assert_allclose(metrics.psnr(prediction, truth), expected_psnr, rtol=1e-10)
    np.testing.assert_allclose(metrics.ssim(prediction, truth), expected_ssim, rtol=1e-10)


def test_the_object_box_scores_only_the_object(views):
    prediction, truth, masks = views
    boxes = metrics.object_boxes(masks, margin=2)
    assert boxes[0, 4:17, 6:22].all() and boxes[0].sum() == 13 * 16
    p, t = metrics.to_unit(prediction), metrics.to_unit(truth)
    mse = ((p[0, 4:17, 6:22] - t[0, 4:17, 6:22]) ** 2).mean()
    assert metrics.psnr(prediction, truth, boxes)[0] == pytest.approx(10 * np.log10(1 / mse), rel=1e-10)
    white = torch.ones_like(truth)  # all background: flattered by the white margin, found out on the box
    assert metrics.psnr(white, truth, boxes).mean() < metrics.psnr(white, truth).mean() - 3
    assert metrics.object_boxes(np.zeros((1, 5, 5), bool)).all()  # no object: the whole image


def test_sharpness_is_one_for_the_truth_and_low_for_a_blur(views):
    _, truth, masks = views
    g = torch.Generator().manual_seed(1)
    texture = (truth * 0.7 + 0.3 * torch.rand(truth.shape, generator=g) * 2 - 0.3).clamp(-1, 1)
    blurred = F.avg_pool2d(F.pad(texture, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert metrics.sharpness(texture, texture) == pytest.approx(1.0)
    assert metrics.sharpness(blurred, texture) < 0.3
    scores = metrics.scores(blurred, texture, masks)
    assert set(scores) == {"PSNR", "SSIM", "PSNR (object)", "SSIM (object)", "sharpness"}


def test_colour_errors_see_a_tinted_background_and_washed_out_colours(views):
    _, truth, masks = views
    exact = metrics.colour_errors(truth, truth, masks)
    assert exact["background tint"] == 0.0 and exact["chroma"] == exact["true chroma"] > 0.05
    tinted = truth.clone()
    tinted[:, 0] = torch.where(masks, truth[:, 0], truth[:, 0] - 0.3)  # red channel down 0.15 on the background
    by_hand = np.sqrt(0.15**2 / 3)  # one channel of three off by 0.15 in [0, 1] units
    assert metrics.colour_errors(tinted, truth, masks)["background tint"] == pytest.approx(by_hand, rel=1e-6)
    grey = truth.mean(1, keepdim=True).expand_as(truth)
    washed = truth * 0.5 + grey * 0.5  # halfway to grey
    assert metrics.colour_errors(washed, truth, masks)["chroma"] == pytest.approx(exact["true chroma"] / 2, rel=1e-6)
    assert metrics.colour_errors(grey, truth, masks)["chroma"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"masks must have shape \(3, 24, 24\), got \(3, 24\)"):
        metrics.colour_errors(truth, truth, masks[:, 0])


def test_bad_input_is_refused(views):
    prediction, truth, _ = views
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\), got \(3, 24, 24\)"):
        metrics.psnr(prediction[:, 0], truth[:, 0])
    with pytest.raises(ValueError, match="one shape"):
        metrics.ssim(prediction[:2], truth)
    with pytest.raises(ValueError, match=r"masks must have shape \(B, H, W\)"):
        metrics.object_boxes(np.zeros((5, 5), bool))


def test_per_image_scores_average_to_the_scores(views):
    prediction, truth, masks = views
    rows = metrics.per_image(prediction, truth, masks)
    assert set(rows) == set(metrics.IMAGE_METRICS) and all(v.shape == (3,) for v in rows.values())
    means = metrics.scores(prediction, truth, masks)
    for name, values in rows.items():
        assert means[name] == pytest.approx(values.mean(), rel=1e-12)
