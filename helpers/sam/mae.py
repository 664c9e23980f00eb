"""MAE pretraining of SAM's image encoder: hide most patches, encode the rest, reconstruct the hidden ones.

He et al., 2022, "Masked Autoencoders Are Scalable Vision Learners" (MAE), §3. SAM's image encoder is an
MAE-pretrained ViT (Kirillov et al., 2023, §3 and appendix A), adapted to high resolution as in ViTDet (Li et al.,
2022): the ViT is pretrained as a *plain* ViT (every block global, absolute positions only), and the windows and
the relative-position tables, which start at zero, come in when SAM is trained. :class:`MaskedAutoencoder` does
exactly that with a :class:`helpers.sam.ImageEncoderViT`: its blocks attend globally over the visible patches, and
their weights are the encoder's own, so after pretraining ``sam.image_encoder.load_state_dict(mae.encoder
.state_dict())`` (or simply building the MAE around ``sam.image_encoder``) gives SAM the pretrained encoder.

    encoder = helpers.sam.ImageEncoderViT(config)
    mae = MaskedAutoencoder(encoder, decoder_dim=64, decoder_depth=2, decoder_num_heads=4)
    losses = train_mae(mae, prepare_images(images_uint8, config), steps=500, batch_size=32, lr=1e-3)

Symbols: B images, S input side, p patch size, e = S / p, N = e² patches, r the mask ratio (75 %),
N_v = N − round(r·N) visible patches, D encoder width, D_d decoder width, P = p²·3 values per patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers.common.loop import History, optimiser_step, train_loop
from helpers.common.optim import adamw, autocast, cosine_lr
from helpers.sam.config import SamConfig
from helpers.sam.image_encoder import Block, ImageEncoderViT
from helpers.sam.transforms import sam_preprocess

# ----------------------------------------------------------------------------------------------------------------
# Patches, masks and targets


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) → (B, N, p·p·C): patches in row-major order, each flattened as (row, column, channel)."""
    if images.dim() != 4 or images.shape[-1] % patch_size or images.shape[-2] % patch_size:
        raise ValueError(f"images: expected shape (B, C, H, W) with H and W multiples of patch_size={patch_size}, "
                         f"got {tuple(images.shape)}")
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, e_h, e_w, p, p, C)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """Undo :func:`patchify` for square images: (B, N, p·p·C) → (B, C, H, W) with H = W = p·√N."""
    p, C = patch_size, channels
    e = math.isqrt(patches.shape[1]) if patches.dim() == 3 else 0
    if patches.dim() != 3 or e * e != patches.shape[1] or patches.shape[2] != p * p * C:
        raise ValueError(f"patches: expected shape (B, N, {p * p * C}) with N a square, got {tuple(patches.shape)}")
    x = patches.reshape(-1, e, e, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, e, p, e, p)
    return x.reshape(-1, C, e * p, e * p)


@dataclass
class Masking:
    """One random masking of a batch. ``keep``: (B, N_v) indices of the visible patches (in shuffled order);
    ``mask``: (B, N) with 1 = hidden, 0 = visible; ``restore``: (B, N), the permutation that puts the shuffled
    sequence [visible, hidden] back in patch order."""

    keep: torch.Tensor
    mask: torch.Tensor
    restore: torch.Tensor


def random_masking(batch: int, num_patches: int, mask_ratio: float, *, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> Masking:
    """Hide round(r·N) patches of each image, chosen uniformly at random (MAE §3): sort one uniform noise value
    per patch; the patches with the smallest values stay visible."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
    visible = num_patches - round(mask_ratio * num_patches)
    noise = torch.rand(batch, num_patches, generator=generator).to(device)
    shuffle = noise.argsort(dim=1)  # patch indices, visible ones first
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :visible] = 0
    return Masking(keep=shuffle[:, :visible], mask=mask.gather(1, restore), restore=restore)


def patch_targets(images: torch.Tensor, patch_size: int, normalise: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """The reconstruction targets (B, N, P): the pixels of each patch, normalised by that patch's own mean and
    variance when ``normalise`` (MAE §3, "normalized pixels as targets", the better variant in its Table 1)."""
    target = patchify(images, patch_size)
    if normalise:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    return target


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch (B, N, P) → (B, N), averaged over the hidden patches only (mask = 1)."""
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(f"pred and target: expected the same shape (B, N, P) and mask (B, N), got "
                         f"{tuple(pred.shape)}, {tuple(target.shape)} and {tuple(mask.shape)}")
    per_patch = (pred - target).pow(2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


def sincos_position_embedding(size: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions (MAE's): half the features encode the row, half the column, each with
    dim/4 frequencies 10000^(−k/(dim/4)). → (size, size, dim)."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))

    def encode(positions: torch.Tensor) -> torch.Tensor:  # (size,) → (size, dim/2)
        angles = positions[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows = encode(torch.arange(size, dtype=torch.float64))
    columns = encode(torch.arange(size, dtype=torch.float64))
    grid = torch.cat([rows[:, None].expand(-1, size, -1), columns[None].expand(size, -1, -1)], dim=-1)
    return grid.float()


# ----------------------------------------------------------------------------------------------------------------
# The model


def plain_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """A :class:`helpers.sam.Block`'s weights applied as a plain ViT block to a set of tokens (B, N, D): global
    attention over the N tokens, no window, no relative positions (ViTDet's pretraining of SAM's encoder)."""
    attn = block.attn
    B, N, D = x.shape
    y = block.norm1(x)
    q, k, v = attn.qkv(y).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d_h)
    y = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    x = x + attn.proj(y.transpose(1, 2).reshape(B, N, D))
    return x + block.mlp(block.norm2(x))


@dataclass
class MaeOutput:
    """``loss``: the masked MSE (a 0-d tensor); ``pred``: (B, N, P) the decoder's patches (normalised pixels when
    the model's ``norm_pix_loss``); ``mask``: (B, N), 1 = hidden."""

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor


class MaskedAutoencoder(nn.Module):
    """MAE around a SAM image encoder (MAE §3, Fig. 1): the encoder sees only the visible 25 % of the patches;
    a light decoder gets their codes back in place, a shared learnt ``mask_token`` at every hidden patch, adds
    fixed positions and predicts every patch's pixels; the loss counts the hidden patches only.

    ``encoder`` is used, not copied: training the MAE trains it. Its ``pos_embed`` (SAM starts it at zero) is set
    to MAE's fixed 2-D sine-cosine positions and stays learnable. Its neck is not used. The decoder (``decoder_*``,
    ``mask_token``, ``encoder_norm``) is thrown away after pretraining."""

    def __init__(self, encoder: ImageEncoderViT, decoder_dim: int = 64, decoder_depth: int = 2,
                 decoder_num_heads: int = 4, mask_ratio: float = 0.75, norm_pix_loss: bool = True) -> None:
        super().__init__()
        if encoder.pos_embed is None:
            raise ValueError("the encoder needs an absolute position embedding (encoder_use_abs_pos=True): "
                             "without windows and relative positions, MAE's encoder would see no positions")
        self.encoder = encoder
        D, e = encoder.pos_embed.shape[-1], encoder.pos_embed.shape[1]
        self.patch_size = encoder.patch_embed.proj.kernel_size[0]
        self.grid = e
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        with torch.no_grad():
            encoder.pos_embed.copy_(sincos_position_embedding(e, D)[None])
        eps = encoder.blocks[0].norm1.eps if len(encoder.blocks) else 1e-6
        self.encoder_norm = nn.LayerNorm(D, eps=eps)
        self.decoder_embed = nn.Linear(D, decoder_dim)
        self.mask_token = nn.Parameter(0.02 * torch.randn(1, 1, decoder_dim))
        self.register_buffer("decoder_pos_embed", sincos_position_embedding(e, decoder_dim).reshape(1, e * e, -1),
                             persistent=False)
        self.decoder_blocks = nn.ModuleList(Block(decoder_dim, decoder_num_heads, norm_eps=eps)
                                            for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=eps)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * encoder.in_chans)

    def encode(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) and visible-patch indices (B, N_v) → their codes (B, N_v, D)."""
        S = self.encoder.img_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (self.encoder.in_chans, S, S):
            raise ValueError(f"images: expected shape (B, {self.encoder.in_chans}, {S}, {S}) (normalised, padded), "
                             f"got {tuple(images.shape)}")
        x = self.encoder.patch_embed(images) + self.encoder.pos_embed  # (B, e, e, D)
        x = x.flatten(1, 2)  # (B, N, D)
        x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))  # (B, N_v, D)
        for block in self.encoder.blocks:
            x = plain_block(block, x)
        return self.encoder_norm(x)

    def decode(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """Codes of the visible patches (B, N_v, D) → predicted patches (B, N, P), in patch order."""
        x = self.decoder_embed(latent)  # (B, N_v, D_d)
        B, visible, Dd = x.shape
        hidden = self.mask_token.expand(B, restore.shape[1] - visible, Dd)
        x = torch.cat([x, hidden], dim=1).gather(1, restore[..., None].expand(-1, -1, Dd))  # unshuffle
        x = (x + self.decoder_pos_embed).view(B, self.grid, self.grid, Dd)
        for block in self.decoder_blocks:
            x = block(x)  # a global ViT block on the (B, e, e, D_d) grid
        return self.decoder_pred(self.decoder_norm(x.flatten(1, 2)))

    def forward(self, images: torch.Tensor, masking: Masking | None = None,
                generator: torch.Generator | None = None) -> MaeOutput:
        """Normalised images (B, 3, S, S) → :class:`MaeOutput`. A new :func:`random_masking` is drawn (from
        ``generator``) unless ``masking`` is given."""
        if masking is None:
            masking = random_masking(images.shape[0], self.grid ** 2, self.mask_ratio, generator=generator,
                                     device=images.device)
        pred = self.decode(self.encode(images, masking.keep), masking.restore)
        target = patch_targets(images, self.patch_size, normalise=self.norm_pix_loss)
        return MaeOutput(loss=masked_mse(pred.float(), target.float(), masking.mask), pred=pred, mask=masking.mask)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, output: MaeOutput) -> torch.Tensor:
        """The picture of a reconstruction (B, 3, S, S): visible patches from ``images``, hidden ones from the
        prediction. With ``norm_pix_loss`` each predicted patch is given the true patch's mean and variance back
        (as MAE's figures do: the model predicts the structure, not the patch's mean colour)."""
        p, truth = self.patch_size, patchify(images, self.patch_size)
        pred = output.pred.float()
        if self.norm_pix_loss:
            mean, var = truth.mean(-1, keepdim=True), truth.var(-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        mixed = torch.where(output.mask[..., None].bool(), pred, truth)
        return unpatchify(mixed, p, images.shape[1])


# ----------------------------------------------------------------------------------------------------------------
# Data and training


def prepare_images(images: np.ndarray, config: SamConfig) -> torch.Tensor:
    """uint8 images (N, H, W, 3) with H, W ≤ S → SAM's encoder input (N, 3, S, S): normalised with the config's
    pixel mean and std, zero-padded at the bottom and right (:func:`helpers.sam.sam_preprocess`)."""
    if not (isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[-1] == config.in_chans
            and max(images.shape[1:3]) <= config.img_size):
        raise ValueError(f"images: expected a (N, H, W, {config.in_chans}) uint8 array with H, W ≤ {config.img_size}, "
                         f"got {getattr(images, 'shape', type(images))}")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    mean = torch.tensor(config.pixel_mean).view(-1, 1, 1)
    std = torch.tensor(config.pixel_std).view(-1, 1, 1)
    return sam_preprocess(x, mean, std, config.img_size)


def train_mae(model: MaskedAutoencoder, images: torch.Tensor, *, steps: int, batch_size: int, lr: float = 1e-3,
              weight_decay: float = 0.05, warmup_steps: int | None = None, flip: bool = True,
              generator: torch.Generator | None = None, progress: bool | str = True) -> History:
    """Pretrain ``model`` on normalised images (N, 3, S, S) for ``steps`` AdamW steps (MAE's recipe: β = (0.9,
    0.95), weight decay 0.05, linear warm-up then cosine decay, no gradient clipping); each step draws ``batch_size``
    images, a random horizontal flip each when ``flip`` (meant for unpadded images: a flip would move the padding
    to the left), and a new masking, all from ``generator``. Batches move to the model's device; bfloat16 autocast
    on CUDA. The course's loop (:func:`helpers.common.loop.train_loop`); returns its :class:`History`."""
    if images.dim() != 4:
        raise ValueError(f"images: expected shape (N, 3, S, S), got {tuple(images.shape)}")
    device = next(model.parameters()).device
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    warmup = max(1, steps // 10) if warmup_steps is None else warmup_steps
    optimiser = adamw(model, lr, weight_decay=weight_decay, betas=(0.9, 0.95))  # no decay on gains and biases

    def step(_: int, step_lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(images), (batch_size,), generator=generator)
        batch = images[index]
        if flip:
            flipped = torch.rand(batch_size, generator=generator) < 0.5
            batch = torch.where(flipped[:, None, None, None], batch.flip(-1), batch)
        masking = random_masking(batch_size, model.grid ** 2, model.mask_ratio, generator=generator, device=device)
        batch = batch.to(device)
        with autocast(device):
            loss = model(batch, masking).loss
        return loss, optimiser_step(model, optimiser, loss, step_lr, grad_clip=None)

    model.train()
    return train_loop(step, steps, lambda s: cosine_lr(s, lr, warmup, steps), progress=progress,
                      name="MAE pretraining")
