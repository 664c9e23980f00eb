"""helpers.zero123.conditioning: pose-CLIP starts as the identity on the image embedding (Zero-1-to-3's
cc_projection), the widened first conv computes what the narrow one did, condition dropout has Zero-1-to-3's rates
(5 % embedding alone, 5 % both, 5 % latent alone), and bad input gets one sentence."""

from __future__ import annotations

import pytest
import torch

from helpers.zero123.camera import relative_pose
from helpers.zero123.conditioning import (
    DROP_RATE,
    ImageEncoder,
    PoseProjection,
    concat_input_latent,
    condition_dropout,
    widen_conv_in,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)

D = 16


def test_pose_projection_starts_as_the_identity_on_the_embedding():
    projection = PoseProjection(D)
    embedding, other = torch.randn(5, D), torch.randn(5, D)
    pose = relative_pose([1.0, 0.0, 2.0], [1.2, 0.7, 1.8])[None].expand(5, 4)
    context = projection(embedding, pose)
    assert context.shape == (5, 1, D)
    torch.testing.assert_close(context - projection(other, pose), (embedding - other)[:, None, :])
    assert projection.proj.weight[:, D:].abs().sum() > 0 and torch.count_nonzero(projection.proj.bias) == 0
    torch.testing.assert_close(context[:, 0], embedding + pose @ projection.proj.weight[:, D:].T)


def test_widened_conv_in_computes_what_the_narrow_one_did():
    torch.manual_seed(0)
    narrow = torch.nn.Conv2d(4, 8, 3, padding=1)
    wide = widen_conv_in(narrow, 4)
    assert wide.in_channels == 8 and torch.count_nonzero(wide.weight[:, 4:]) == 0
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(wide(torch.cat([x, torch.randn(2, 4, 6, 6)], dim=1)), narrow(x))


def test_condition_dropout_has_zero123_rates():
    n = 200_000
    drop_embedding, drop_latent = condition_dropout(n, generator=torch.Generator().manual_seed(0))
    rates = {"embedding only": (drop_embedding & ~drop_latent), "both": (drop_embedding & drop_latent),
             "latent only": (~drop_embedding & drop_latent)}
    for name, mask in rates.items():
        assert mask.float().mean().item() == pytest.approx(DROP_RATE, abs=0.003), name
    assert (drop_embedding | drop_latent).float().mean().item() == pytest.approx(3 * DROP_RATE, abs=0.003)


def test_bad_input_gets_one_sentence():
    encoder = ImageEncoder(D, image_size=16)
    with pytest.raises(ValueError, match=r"input views must have shape \(B, 3, 16, 16\), got \(4, 3, 32, 32\)"):
        encoder(torch.zeros(4, 3, 32, 32))
    with pytest.raises(ValueError, match=r"values in \[-1, 1\], got values in \[0, 255\]"):
        encoder(torch.full((4, 3, 16, 16), 255.0).index_fill_(1, torch.tensor([0]), 0.0))
    with pytest.raises(ValueError, match=r"input view's latent must have shape \(B, 4, h, w\), got \(4, 3, 8, 8\)"):
        concat_input_latent(torch.zeros(4, 4, 8, 8), torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match=r"must have the noisy latent's shape \(4, 4, 8, 8\)"):
        concat_input_latent(torch.zeros(4, 4, 8, 8), torch.zeros(4, 4, 4, 4))
    projection = PoseProjection(D)
    with pytest.raises(ValueError, match=r"relative poses must have shape \(B, 4\)"):
        projection(torch.zeros(4, D), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=rf"image embeddings must have shape \(B, {D}\), got \(4, 8\)"):
        projection(torch.zeros(4, 8), relative_pose([1.0, 0.0, 2.0], [1.0, 0.5, 2.0])[None].expand(4, 4))
