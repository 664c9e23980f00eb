"""helpers.zero123.unet is diffusers' UNet2DConditionModel: the same state dict (strict), the same outputs and
gradients (1e-4, float32) on configurations chosen at random: widths, channel multipliers, heads per level, norm
groups, cross-attention width, layers per block, input channels, which levels attend, odd latent sizes."""

from __future__ import annotations

import random

import pytest
import torch
from diffusers import UNet2DConditionModel

from helpers.zero123.layers import rename_state_dict
from helpers.zero123.unet import UNet, UNetConfig, unet_from_diffusers, unet_to_diffusers

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)

TOLERANCE = 1e-4


def random_config(seed: int) -> dict:
    """diffusers keyword arguments for a tiny UNet2DConditionModel drawn at random."""
    rng = random.Random(seed)
    levels = 2 + seed % 2
    groups = rng.choice([4, 8])
    base = groups * rng.choice([2, 4])
    channels = tuple(base * m for m in [1] + sorted(rng.choice([1, 2, 3]) for _ in range(levels - 1)))
    attends = [True] + [rng.random() < 0.5 for _ in range(levels - 2)] + [False]  # Zero-1-to-3: attention but last
    attends[-1] = seed % 3 == 2  # and sometimes the last level attends too
    heads = tuple(rng.choice([h for h in (1, 2, 4) if c % h == 0]) for c in channels)
    return dict(
        sample_size=8, in_channels=rng.choice([4, 8, 5]), out_channels=4, layers_per_block=rng.choice([1, 2]),
        block_out_channels=channels, norm_num_groups=groups, cross_attention_dim=rng.choice([8, 24, 32]),
        attention_head_dim=heads if rng.random() < 0.5 else heads[0] if all(c % heads[0] == 0 for c in channels)
        else heads,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)))


ZERO123_SHAPED = dict(sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                      norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
CONFIGS = {"zero123-shaped": ZERO123_SHAPED} | {f"random-{seed}": random_config(seed) for seed in range(5)}


def build_reference(kwargs: dict, seed: int = 0) -> UNet2DConditionModel:
    """A tiny UNet2DConditionModel, every weight perturbed so that none is a zero or a one."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**kwargs)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return unet


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    ref = build_reference(CONFIGS[request.param])
    return ref, unet_from_diffusers(ref)


def _inputs(ref, size, seed=0, tokens=1):
    gen = torch.Generator().manual_seed(seed)
    c = ref.config
    sample = torch.randn(3, c.in_channels, *size, generator=gen)
    context = torch.randn(3, tokens, c.cross_attention_dim, generator=gen)
    return sample, torch.tensor([0, 421, 999]), context


@pytest.mark.parametrize("size", [(8, 8), (12, 12)])
def test_outputs_equal_diffusers(pair, size):
    ref, model = pair
    sample, t, context = _inputs(ref, size)
    with torch.no_grad():
        torch.testing.assert_close(model(sample, t, context), ref(sample, t, encoder_hidden_states=context).sample,
                                   atol=TOLERANCE, rtol=0)


def test_odd_sizes_several_tokens_and_a_scalar_timestep(pair):
    """Latent sizes that do not halve evenly (diffusers passes the skip's size to its upsamplers), M = 3 tokens."""
    ref, model = pair
    sample, _, context = _inputs(ref, (9, 7), seed=1, tokens=3)
    with torch.no_grad():
        torch.testing.assert_close(model(sample, 37, context), ref(sample, 37, encoder_hidden_states=context).sample,
                                   atol=TOLERANCE, rtol=0)


def test_gradients_equal_diffusers(pair):
    ref, model = pair
    sample, t, context = _inputs(ref, (8, 8), seed=2)
    inputs_ref = [sample.clone().requires_grad_(), context.clone().requires_grad_()]
    inputs_ours = [sample.clone().requires_grad_(), context.clone().requires_grad_()]
    target = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    (ref(inputs_ref[0], t, encoder_hidden_states=inputs_ref[1]).sample * target).sum().backward()
    (model(inputs_ours[0], t, inputs_ours[1]) * target).sum().backward()
    for a, b in zip(inputs_ours, inputs_ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=TOLERANCE, rtol=0)
    ours = dict(model.named_parameters())
    renamed = rename_state_dict(dict(ref.named_parameters()))
    assert set(renamed) == set(ours)
    for name, parameter in renamed.items():
        torch.testing.assert_close(ours[name].grad, parameter.grad, atol=TOLERANCE, rtol=0, msg=name)
    ref.zero_grad()
    model.zero_grad()


def test_round_trip_to_diffusers(pair):
    ref, model = pair
    back = unet_to_diffusers(model)
    for key in ("in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
                "layers_per_block", "norm_num_groups", "norm_eps", "cross_attention_dim", "sample_size"):
        assert back.config[key] == ref.config[key], key
    heads = ref.config.attention_head_dim
    assert unet_from_diffusers(back).config.heads == model.config.heads == (
        (heads,) * len(model.config.block_out_channels) if isinstance(heads, int) else tuple(heads))
    ref_state, back_state = ref.state_dict(), back.state_dict()
    assert list(ref_state) == list(back_state)
    assert all(torch.equal(ref_state[k], back_state[k]) for k in ref_state)


def test_state_dicts_have_the_same_size(pair):
    ref, model = pair
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())


def test_a_course_unet_built_directly_matches_its_export():
    model = UNet(UNetConfig(block_out_channels=(16, 32, 32), cross_attention=(True, True, False), num_heads=(2, 4, 2),
                            layers_per_block=2, norm_num_groups=4, cross_attention_dim=12))
    ref = unet_to_diffusers(model)
    sample, t, context = _inputs(ref, (8, 8), seed=3)
    with torch.no_grad():
        torch.testing.assert_close(model(sample, t, context), ref(sample, t, encoder_hidden_states=context).sample,
                                   atol=TOLERANCE, rtol=0)


def test_transformer_group_norms_use_eps_1e6_and_resnets_the_configured_eps():
    model = UNet(UNetConfig(block_out_channels=(16, 32), norm_eps=1e-5, norm_num_groups=4, num_heads=2))
    assert model.down_blocks[0].attentions[0].norm.eps == 1e-6
    assert model.down_blocks[0].resnets[0].norm1.eps == 1e-5


def test_unsupported_diffusers_configurations_are_refused():
    with pytest.raises(ValueError, match="use_linear_projection=False"):
        unet_from_diffusers(UNet2DConditionModel(**ZERO123_SHAPED, use_linear_projection=True))
    with pytest.raises(ValueError, match="up blocks must mirror"):
        unet_from_diffusers(UNet2DConditionModel(**(ZERO123_SHAPED | {
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")})))


def test_bad_input_gets_one_sentence():
    model = UNet(UNetConfig(block_out_channels=(16, 32), norm_num_groups=4, num_heads=2, cross_attention_dim=8))
    with pytest.raises(ValueError, match=r"must have shape \(B, 8, H, W\), got \(2, 4, 8, 8\)"):
        model(torch.zeros(2, 4, 8, 8), 10, torch.zeros(2, 1, 8))
    with pytest.raises(ValueError, match=r"context must have shape \(B, M, 8\), got \(2, 1, 5\)"):
        model(torch.zeros(2, 8, 8, 8), 10, torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(block_out_channels=(12, 24), norm_num_groups=8)
