"""helpers.zero123.model: the whole denoiser equals diffusers' UNet fed the same concatenated latent and context
token; guidance combines the two branches run in one batch; the unconditional token is training's W [0; π] or
Zero-1-to-3's zeros; the loss reaches every part; guided sampling repeats exactly with one generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.zero123.camera import relative_pose, sample_cameras
from helpers.zero123.conditioning import ImageEncoder
from helpers.zero123.model import Zero123, denoising_loss, loss_weights
from helpers.zero123.scheduler import DDIM, ZERO123_DDIM, classifier_free_guidance, sample
from helpers.zero123.unet import UNet, UNetConfig, unet_to_diffusers

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)

D = 16


def make_model(seed: int = 0) -> Zero123:
    torch.manual_seed(seed)
    unet = UNet(UNetConfig(block_out_channels=(16, 32), num_heads=2, norm_num_groups=4, cross_attention_dim=D))
    return Zero123(unet, ImageEncoder(D, channels=(8, 16), image_size=16, groups=4))


def make_batch(B: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    cameras = sample_cameras(2 * B, np.random.default_rng(seed))
    return dict(input_image=torch.rand(B, 3, 16, 16, generator=gen) * 2 - 1,
                input_latent=torch.randn(B, 4, 8, 8, generator=gen),
                target_latent=torch.randn(B, 4, 8, 8, generator=gen),
                pose=relative_pose(cameras[:B], cameras[B:]))


def test_model_equals_diffusers_unet_on_the_concatenated_latent():
    model, batch = make_model(), make_batch()
    reference = unet_to_diffusers(model.unet)
    t = torch.tensor([1, 100, 500, 999])
    with torch.no_grad():
        context = model.context(batch["input_image"], batch["pose"])
        noisy = torch.randn(4, 4, 8, 8)
        want = reference(torch.cat([noisy, batch["input_latent"]], dim=1), t, encoder_hidden_states=context).sample
        torch.testing.assert_close(model(noisy, t, context, batch["input_latent"]), want, atol=1e-4, rtol=0)


def test_guidance_runs_both_branches_in_one_batch():
    model, batch = make_model(), make_batch()
    pose, latent = batch["pose"], batch["input_latent"]
    noisy, t = torch.randn(4, 4, 8, 8), torch.tensor(321)
    with torch.no_grad():
        context = model.context(batch["input_image"], pose)
        for kind in ("training", "zero123"):
            null = model.null_context(pose, kind)
            unconditional = model(noisy, t, null, torch.zeros_like(latent))
            conditional = model(noisy, t, context, latent)
            torch.testing.assert_close(model.guided_noise(noisy, t, context, latent, null, 2.5),
                                       classifier_free_guidance(unconditional, conditional, 2.5), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.guided_noise(noisy, t, context, latent, null, 1.0), conditional)


def test_null_contexts():
    """Training's unconditional token is W [0; π]; Zero-1-to-3's sampling code uses zeros after the projection."""
    model, batch = make_model(), make_batch()
    with torch.no_grad():
        training = model.null_context(batch["pose"], "training")
        dropped = model.context(batch["input_image"], batch["pose"], drop_embedding=torch.ones(4, dtype=torch.bool))
        torch.testing.assert_close(training, dropped)
        assert torch.count_nonzero(model.null_context(batch["pose"], "zero123")) == 0
    with pytest.raises(ValueError, match="kind must be one of"):
        model.null_context(batch["pose"], "empty")


def test_denoising_loss_trains_every_part():
    model, batch = make_model(), make_batch()
    ddim = DDIM(**ZERO123_DDIM)
    loss = denoising_loss(model, ddim, generator=torch.Generator().manual_seed(0), **batch)
    loss.backward()
    assert loss.item() > 0
    for name, part in (("image encoder", model.image_encoder), ("projection", model.projection),
                       ("unet", model.unet)):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), name
    again = denoising_loss(model, ddim, generator=torch.Generator().manual_seed(0), **batch)
    assert again.item() == loss.item()  # the generator fixes t, ε and the dropout


def test_loss_weights_set_what_an_x0_error_costs():
    """ε error = SNR · x_0 error: the weights times SNR are the x_0 weightings the docstring names."""
    ddim = DDIM(**ZERO123_DDIM)
    snr = ddim.alphas_cumprod / (1 - ddim.alphas_cumprod)
    assert torch.equal(loss_weights(ddim, "epsilon"), torch.ones(1000))
    torch.testing.assert_close(loss_weights(ddim, "min-snr", gamma=5.0) * snr, snr.clamp(max=5.0))
    torch.testing.assert_close(loss_weights(ddim, "truncated-snr") * snr, snr.clamp(min=1.0))
    assert loss_weights(ddim, "truncated-snr")[-1] > 100  # the noisiest step: its x_0 error counts as at SNR 1
    with pytest.raises(ValueError, match="kind must be one of"):
        loss_weights(ddim, "v")


def test_weighted_loss_weighs_each_example_by_its_step():
    model, batch = make_model(), make_batch()
    ddim = DDIM(**ZERO123_DDIM)
    plain = denoising_loss(model, ddim, generator=torch.Generator().manual_seed(3), **batch)
    ones = denoising_loss(model, ddim, generator=torch.Generator().manual_seed(3), weights=torch.ones(1000), **batch)
    torch.testing.assert_close(ones, plain)
    t = torch.randint(0, 1000, (4,), generator=torch.Generator().manual_seed(3))  # the steps the loss draws first
    only_first = torch.zeros(1000)
    only_first[t[0]] = 4.0
    weighted = denoising_loss(model, ddim, generator=torch.Generator().manual_seed(3), weights=only_first, **batch)
    assert 0 < weighted.item() and not torch.isclose(weighted, plain)


def test_guided_sampling_runs_and_is_deterministic():
    model, batch = make_model(), make_batch(2)
    ddim = DDIM(**ZERO123_DDIM)
    outs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(0)
        denoiser = model.denoiser(batch["input_image"], batch["input_latent"], batch["pose"], scale=3.0)
        with torch.no_grad():
            outs.append(sample(denoiser, ddim, torch.randn(2, 4, 8, 8, generator=gen), 4, eta=1.0, generator=gen))
    assert outs[0].shape == (2, 4, 8, 8) and torch.equal(outs[0], outs[1])


def test_bad_input_gets_one_sentence():
    model, batch = make_model(), make_batch()
    with pytest.raises(ValueError, match=r"input views must have shape \(B, 3, 16, 16\), got \(4, 3, 32, 32\)"):
        model.context(torch.zeros(4, 3, 32, 32), batch["pose"])
    with pytest.raises(ValueError, match=r"relative poses must have shape \(B, 4\)"):
        model.context(batch["input_image"], batch["pose"][:, :3])
    with pytest.raises(ValueError, match=r"input view's latent must have shape \(B, 4, h, w\), got \(4, 3, 8, 8\)"):
        model(torch.zeros(4, 4, 8, 8), 10, model.null_context(batch["pose"]), torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="must equal the UNet's cross_attention_dim"):
        Zero123(model.unet, ImageEncoder(D + 1, image_size=16))
    with pytest.raises(ValueError, match=r"in_channels = 2 × out_channels"):
        Zero123(UNet(UNetConfig(in_channels=4, block_out_channels=(16, 32), num_heads=2, norm_num_groups=4,
                                cross_attention_dim=D)), ImageEncoder(D, image_size=16))
