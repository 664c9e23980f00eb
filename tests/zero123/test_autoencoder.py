"""helpers.zero123.autoencoder is diffusers' AutoencoderKL: the same state dict (strict), posterior moments, samples,
KL term and reconstructions (1e-4, float32) on configurations chosen at random; its latent scale is 1/std."""

from __future__ import annotations

import random

import pytest
import torch
from diffusers import AutoencoderKL

from helpers.zero123.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    autoencoder_from_diffusers,
    autoencoder_loss,
    autoencoder_to_diffusers,
    chroma,
    latent_scale_factor,
)
from helpers.zero123.layers import Downsample

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)

TOLERANCE = 1e-4


def random_config(seed: int) -> dict:
    rng = random.Random(seed)
    levels = 2 + seed % 2
    groups = rng.choice([4, 8])
    channels = tuple(groups * rng.choice([1, 2, 4]) for _ in range(levels))
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=channels,
                layers_per_block=rng.choice([1, 2]), latent_channels=rng.choice([3, 4]), norm_num_groups=groups,
                sample_size=rng.choice([16, 32]))


CONFIGS = {f"random-{seed}": random_config(seed) for seed in range(4)}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    torch.manual_seed(0)
    ref = AutoencoderKL(**CONFIGS[request.param])
    with torch.no_grad():
        for parameter in ref.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return ref, autoencoder_from_diffusers(ref)


def _images(size, seed=0, batch=3):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_posterior_equals_diffusers(pair):
    ref, model = pair
    images = _images(ref.config.sample_size)
    with torch.no_grad():
        want, got = ref.encode(images).latent_dist, model.encode(images)
        for name in ("mean", "logvar", "std"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=TOLERANCE, rtol=0, msg=name)
        torch.testing.assert_close(got.kl(), want.kl(), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(got.sample(torch.Generator().manual_seed(4)),
                                   want.sample(torch.Generator().manual_seed(4)), atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(got.mode(), want.mode(), atol=TOLERANCE, rtol=0)


def test_decoder_and_reconstruction_equal_diffusers(pair):
    ref, model = pair
    model_config = model.config
    latents = torch.randn(2, model_config.latent_channels, model_config.latent_size, model_config.latent_size,
                          generator=torch.Generator().manual_seed(1))
    images = _images(ref.config.sample_size, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(latents), ref.decode(latents).sample, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(model(images, sample_posterior=False)[0], ref(images).sample, atol=TOLERANCE,
                                   rtol=0)
        sampled = ref(images, sample_posterior=True, generator=torch.Generator().manual_seed(3)).sample
        torch.testing.assert_close(model(images, generator=torch.Generator().manual_seed(3))[0], sampled,
                                   atol=TOLERANCE, rtol=0)


def test_round_trip_to_diffusers(pair):
    ref, model = pair
    back = autoencoder_to_diffusers(model, scaling_factor=0.5)
    assert back.config.scaling_factor == 0.5 and back.config.block_out_channels == ref.config.block_out_channels
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), back.state_dict().values(), strict=True))


def test_downsampling_pads_only_right_and_bottom():
    """The asymmetric padding matters: a symmetric one gives other numbers from the same weights."""
    torch.manual_seed(0)
    asymmetric, symmetric = Downsample(4, asymmetric=True), Downsample(4)
    symmetric.conv.weight.data.copy_(asymmetric.conv.weight)
    symmetric.conv.bias.data.copy_(asymmetric.conv.bias)
    x = torch.randn(1, 4, 8, 8)
    a, s = asymmetric(x), symmetric(x)
    assert a.shape == s.shape == (1, 4, 4, 4)
    assert (a - s).abs().max() > 1e-2
    # the first output pixel sees input rows/columns 0..2 (no padding above or left)
    torch.testing.assert_close(a[..., 0, 0], torch.nn.functional.conv2d(x[..., :3, :3], asymmetric.conv.weight,
                                                                         asymmetric.conv.bias)[..., 0, 0])


def test_latent_scale_factor_makes_latents_unit_variance():
    model = Autoencoder(AutoencoderConfig(block_out_channels=(8, 16), norm_num_groups=4, sample_size=16))
    images = _images(16, batch=16)
    scale = latent_scale_factor(model, images, generator=torch.Generator().manual_seed(0))
    latents = model.encode(images).sample(torch.Generator().manual_seed(0))
    assert (latents * scale).std().item() == pytest.approx(1.0, rel=1e-5)
    assert scale != pytest.approx(0.18215, rel=0.05)  # Stable Diffusion's factor belongs to its own autoencoder


def test_loss_trains_the_autoencoder():
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(block_out_channels=(8, 16), norm_num_groups=4, sample_size=16))
    coarse = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1  # smooth images
    images = torch.nn.functional.interpolate(coarse, size=16, mode="bilinear")
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss, parts = autoencoder_loss(model, images, kl_weight=1e-3, generator=torch.Generator().manual_seed(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(parts["mse"])
        assert parts["kl"] >= 0
    assert losses[-1] < 0.6 * losses[0]  # 0.276 → 0.123 when written


def test_bad_input_gets_one_sentence():
    model = Autoencoder(AutoencoderConfig(block_out_channels=(8, 16), norm_num_groups=4, sample_size=16))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 16, 16\), got \(2, 3, 32, 32\)"):
        model.encode(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"values in \[-1, 1\], got values in \[0, 255\]"):
        model.encode(torch.linspace(0, 255, 2 * 3 * 16 * 16).reshape(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 4, 8, 8\), got \(2, 3, 8, 8\)"):
        model.decode(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by the downsampling factor"):
        AutoencoderConfig(block_out_channels=(8, 16, 16), sample_size=18)


def test_the_chroma_term_measures_colour_alone():
    grey = torch.linspace(-1, 1, 16 * 16).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    torch.testing.assert_close(chroma(grey), torch.zeros_like(grey), atol=1e-6, rtol=0)  # a grey image: no colour
    tinted = grey + torch.tensor([0.2, 0.0, -0.2]).view(1, 3, 1, 1)
    torch.testing.assert_close(chroma(tinted), torch.tensor([0.2, 0.0, -0.2]).view(1, 3, 1, 1).expand(2, 3, 16, 16))
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(block_out_channels=(8, 16), norm_num_groups=4, sample_size=16))
    plain, parts = autoencoder_loss(model, tinted.clamp(-1, 1), generator=torch.Generator().manual_seed(2))
    both, both_parts = autoencoder_loss(model, tinted.clamp(-1, 1), generator=torch.Generator().manual_seed(2),
                                        chroma_weight=4.0)
    assert "chroma" not in parts and both_parts["chroma"] > 0
    torch.testing.assert_close(both, plain + 4.0 * both_parts["chroma"], rtol=1e-5, atol=1e-6)
