"""helpers.sam.mae: patches, masking and the masked loss do what MAE says; the MAE encoder path is SAM's encoder run
as a plain ViT; pretraining lowers the loss, repeats bit for bit, and its weights load into SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.sam.config import SamConfig
from helpers.sam.image_encoder import ImageEncoderViT
from helpers.sam.mae import (
    MaskedAutoencoder,
    Masking,
    masked_mse,
    patch_targets,
    patchify,
    plain_block,
    prepare_images,
    random_masking,
    sincos_position_embedding,
    train_mae,
    unpatchify,
)
from helpers.sam.model import Sam

TINY = dict(img_size=32, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
            encoder_window_size=3, encoder_global_attn_indexes=(1,), prompt_embed_dim=32, mask_in_chans=8,
            decoder_num_heads=2, decoder_mlp_dim=32, iou_head_hidden_dim=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (tests/conftest.py)


def tiny_mae(seed: int = 0, **overrides) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    encoder = ImageEncoderViT(SamConfig(**{**TINY, **overrides}))
    return MaskedAutoencoder(encoder, decoder_dim=16, decoder_depth=1, decoder_num_heads=2)


def test_patchify_layout_and_round_trip():
    images = torch.randn(2, 3, 16, 24)
    patches = patchify(images, 8)
    assert patches.shape == (2, 6, 8 * 8 * 3)
    # patch 4 is row 1, column 1; inside it, values run over (row, column, channel)
    assert torch.equal(patches[1, 4], images[1, :, 8:16, 8:16].permute(1, 2, 0).reshape(-1))
    square = torch.randn(2, 3, 16, 16)
    assert torch.equal(unpatchify(patchify(square, 4), 4), square)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) with H and W multiples of patch_size=5"):
        patchify(images, 5)
    with pytest.raises(ValueError, match=r"expected shape \(B, N, 48\) with N a square"):
        unpatchify(torch.zeros(1, 6, 48), 4)


def test_random_masking_hides_the_right_number_and_restores_the_order():
    masking = random_masking(3, 16, 0.75, generator=torch.Generator().manual_seed(0))
    assert masking.keep.shape == (3, 4) and masking.mask.shape == (3, 16) and masking.restore.shape == (3, 16)
    assert masking.mask.sum(1).tolist() == [12.0, 12.0, 12.0]
    for b in range(3):  # the kept patches are exactly the visible ones, and restore undoes the shuffle
        assert sorted(masking.keep[b].tolist()) == torch.nonzero(masking.mask[b] == 0).flatten().tolist()
        hidden = torch.nonzero(masking.mask[b] == 1).flatten()
        shuffled = torch.cat([masking.keep[b], hidden[torch.argsort(masking.restore[b][hidden])]])
        assert torch.equal(shuffled[masking.restore[b]], torch.arange(16))
    again = random_masking(3, 16, 0.75, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.keep, masking.keep)
    assert random_masking(1, 10, 0.0).mask.sum() == 0
    with pytest.raises(ValueError, match=r"mask_ratio must lie in \[0, 1\)"):
        random_masking(1, 16, 1.0)


def test_targets_are_normalised_per_patch_and_the_loss_counts_hidden_patches_only():
    images = 5 + 3 * torch.randn(2, 3, 16, 16)
    target = patch_targets(images, 8)
    torch.testing.assert_close(target.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.var(-1), torch.ones(2, 4), atol=1e-4, rtol=0)
    assert torch.equal(patch_targets(images, 8, normalise=False), patchify(images, 8))
    pred = torch.randn_like(target)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    expected = torch.stack([(pred[b, n] - target[b, n]).pow(2).mean() for b, n in [(0, 0), (0, 3), (1, 1)]]).mean()
    torch.testing.assert_close(masked_mse(pred, target, mask), expected)
    changed = pred.clone()
    changed[mask == 0] += 100.0  # visible patches do not count
    torch.testing.assert_close(masked_mse(changed, target, mask), expected)
    with pytest.raises(ValueError, match=r"mask \(B, N\)"):
        masked_mse(pred, target, mask[:, :3])


def test_sincos_positions():
    pe = sincos_position_embedding(4, 8)
    assert pe.shape == (4, 4, 8)
    assert torch.equal(pe[2, 0, :4], pe[2, 3, :4]) and torch.equal(pe[0, 1, 4:], pe[3, 1, 4:])  # rows | columns
    torch.testing.assert_close(pe[1, 0, 0], torch.tensor(np.sin(1.0), dtype=torch.float32))
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_position_embedding(4, 6)


def test_encoder_path_is_sams_encoder_as_a_plain_vit():
    """With every patch visible, MAE's encoder = SAM's blocks on the full grid when SAM uses no windows and its
    relative-position tables are still zero (as SAM initialises them)."""
    mae = tiny_mae(encoder_window_size=0, encoder_global_attn_indexes=())
    encoder = mae.encoder
    assert all(torch.all(b.attn.rel_pos_h == 0) for b in encoder.blocks)
    images = torch.randn(2, 3, 32, 32)
    keep = torch.arange(16).expand(2, -1)
    x = encoder.patch_embed(images) + encoder.pos_embed
    for block in encoder.blocks:
        x = block(x)
    torch.testing.assert_close(mae.encode(images, keep), mae.encoder_norm(x.flatten(1, 2)), atol=1e-5, rtol=1e-5)
    block = encoder.blocks[0]  # plain_block on a subset of tokens = the block on that subset alone
    tokens = torch.randn(2, 5, 32)
    torch.testing.assert_close(plain_block(block, tokens), block(tokens[:, None]).squeeze(1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"expected shape \(B, 3, 32, 32\)"):
        mae.encode(torch.randn(2, 3, 16, 16), keep)


def test_forward_shapes_and_which_weights_learn():
    mae = tiny_mae()
    images = torch.randn(3, 3, 32, 32)
    out = mae(images, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (3, 16, 8 * 8 * 3) and out.mask.shape == (3, 16) and out.loss.dim() == 0
    assert out.mask.sum().item() == 3 * 12
    out.loss.backward()
    encoder = mae.encoder
    assert encoder.patch_embed.proj.weight.grad.abs().sum() > 0 and encoder.pos_embed.grad.abs().sum() > 0
    assert encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert encoder.blocks[0].attn.rel_pos_h.grad is None and encoder.neck[0].weight.grad is None
    # the hidden patches' pixels do not reach the encoder: changing them leaves the encoder's codes alone
    masking = random_masking(3, 16, 0.75, generator=torch.Generator().manual_seed(1))
    hidden = torch.nn.functional.interpolate(masking.mask.view(3, 1, 4, 4), scale_factor=8)
    with torch.no_grad():
        torch.testing.assert_close(mae.encode(images + 50 * hidden, masking.keep), mae.encode(images, masking.keep))
    reconstruction = mae.reconstruct(images, mae(images, masking))
    visible = (1 - hidden).bool().expand_as(images)
    assert reconstruction.shape == images.shape and torch.equal(reconstruction[visible], images[visible])


def test_needs_absolute_positions():
    with pytest.raises(ValueError, match="encoder_use_abs_pos=True"):
        tiny_mae(encoder_use_abs_pos=False)


def test_pretraining_lowers_the_loss_repeats_and_loads_into_sam():
    config = SamConfig(**TINY)
    gen = np.random.default_rng(0)
    base = gen.integers(0, 150, size=(6, 1, 1, 1))
    ramp = np.linspace(0, 50, 32)[None, :, None, None]  # grey ramps: every normalised patch looks alike
    images = np.repeat(np.clip(base + ramp + ramp.transpose(0, 2, 1, 3), 0, 255).astype(np.uint8), 3, axis=-1)
    x = prepare_images(images, config)
    assert x.shape == (6, 3, 32, 32)

    def run():
        mae = tiny_mae(seed=1)
        return mae, train_mae(mae, x, steps=40, batch_size=4, lr=3e-3, generator=torch.Generator().manual_seed(2),
                              progress=False)

    mae, history = run()
    _, again = run()
    losses = history.losses
    assert losses == again.losses and len(history.lrs) == 40 and history.seconds > 0
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    sam = Sam(config)
    sam.image_encoder.load_state_dict(mae.encoder.state_dict())
    with torch.no_grad():
        assert sam.image_encoder(x[:2]).shape == (2, 32, 4, 4)
    assert torch.equal(sam.image_encoder.blocks[1].mlp.lin1.weight, mae.encoder.blocks[1].mlp.lin1.weight)


def test_prepare_images_normalises_and_pads():
    config = SamConfig(**TINY)
    images = np.full((1, 24, 32, 3), 128, dtype=np.uint8)
    x = prepare_images(images, config)
    assert x.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x[0, 0, 0, 0], torch.tensor((128 - 123.675) / 58.395))
    assert torch.all(x[:, :, 24:] == 0)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8 array with H, W ≤ 32"):
        prepare_images(np.zeros((1, 64, 64, 3), np.uint8), config)


def test_masking_dataclass_is_exported():
    assert set(Masking.__dataclass_fields__) == {"keep", "mask", "restore"}
