"""The conditional denoising UNet of latent diffusion: ε_θ(x_t, t, c).

x_t (B, C_in, h, w) is the noisy latent (Zero-1-to-3 concatenates the input view's latent to it: C_in = 8), t the
diffusion step, c (B, M, D) the context tokens that cross-attention reads (Zero-1-to-3: M = 1, the "pose-CLIP"
token). The network is a UNet (Ronneberger et al., 2015) as Rombach et al. (2022) build it:

- the step t becomes a sinusoidal embedding, then an MLP: t_emb (B, 4·C_0), added inside every residual block;
- down levels: residual blocks (each followed by a spatial transformer on levels with attention), then a stride-2
  conv; every output is kept for a skip connection;
- the middle: residual block, spatial transformer, residual block;
- up levels, mirrored: each residual block takes the previous output concatenated with one skip (channels add up),
  then nearest-neighbour upsampling; finally GroupNorm, SiLU and a 3×3 conv back to C_out channels.

A spatial transformer flattens the feature map to N = h·w tokens and runs self-attention, cross-attention to c and
a GEGLU feed-forward, each with a residual; its GroupNorm uses ε = 1e-6, the residual blocks' ε = 1e-5.

:func:`unet_from_diffusers` and :func:`unet_to_diffusers` move weights to and from ``diffusers``'
``UNet2DConditionModel`` (down ``CrossAttnDownBlock2D``/``DownBlock2D``, mid ``UNetMidBlock2DCrossAttn``, up the
mirror image); there ``attention_head_dim`` is, for historical reasons, the number of heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from helpers.zero123.layers import (
    Attention,
    Downsample,
    MidBlock,
    ResBlock,
    Upsample,
    rename_state_dict,
    timestep_embedding,
)
from helpers.zero123.validate import check_channels

if TYPE_CHECKING:
    import diffusers

TRANSFORMER_NORM_EPS = 1e-6  # the GroupNorm before each spatial transformer (diffusers fixes it)


@dataclass
class UNetConfig:
    """Sizes of the UNet. Level i has ``block_out_channels[i]`` channels; ``cross_attention[i]`` says whether its
    residual blocks are followed by spatial transformers (diffusers' ``CrossAttnDownBlock2D`` vs ``DownBlock2D``)."""

    in_channels: int = 8  # C_in: the noisy latent's 4 + the input view's latent's 4
    out_channels: int = 4  # C_out: the predicted noise ε_θ
    block_out_channels: tuple[int, ...] = (64, 128)  # C_0, C_1, …
    cross_attention: tuple[bool, ...] = (True, False)
    layers_per_block: int = 1  # residual blocks per down level (the up levels have one more)
    num_heads: int | tuple[int, ...] = 4  # h per level (diffusers' attention_head_dim)
    norm_num_groups: int = 8
    norm_eps: float = 1e-5
    cross_attention_dim: int = 64  # D, the width of the context tokens
    sample_size: int = 8  # h = w of the latents it is trained on (diffusers' pipelines read it)

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        self.cross_attention = tuple(bool(a) for a in self.cross_attention)
        if len(self.cross_attention) != len(self.block_out_channels):
            raise ValueError(f"cross_attention has {len(self.cross_attention)} entries for "
                             f"{len(self.block_out_channels)} levels")
        heads = self.heads
        for channels, h in zip(self.block_out_channels, heads, strict=True):
            if channels % self.norm_num_groups or channels % h:
                raise ValueError(f"a level's {channels} channels must be divisible by norm_num_groups="
                                 f"{self.norm_num_groups} and by its {h} heads")

    @property
    def heads(self) -> tuple[int, ...]:
        """The number of heads of each level."""
        if isinstance(self.num_heads, int):
            return (self.num_heads,) * len(self.block_out_channels)
        if len(self.num_heads) != len(self.block_out_channels):
            raise ValueError(f"num_heads has {len(self.num_heads)} entries for {len(self.block_out_channels)} levels")
        return tuple(self.num_heads)

    @property
    def time_channels(self) -> int:
        """D_t = 4·C_0, the width of the time embedding."""
        return 4 * self.block_out_channels[0]


class FeedForward(nn.Module):
    """GEGLU feed-forward (Shazeer, 2020): W_out (a ⊙ GELU(g)) with [a, g] = x W_proj, inner width 4·C."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * mult * dim)
        self.out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(a * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block on (B, N, C): self-attention, cross-attention to c (B, M, D), feed-forward."""

    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, heads, context_dim)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """A transformer on a feature map: GN, 1×1 conv, (B, C, h, w) → (B, h·w, C) tokens, a TransformerBlock,
    back to (B, C, h, w), 1×1 conv, plus the input."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(B, H * W, C)
        for block in self.transformer_blocks:
            h = block(h, context)
        return x + self.proj_out(h.reshape(B, H, W, C).permute(0, 3, 1, 2))


class Level(nn.Module):
    """One resolution of the UNet: residual blocks, each followed by a spatial transformer if ``attention``, then
    a down- or upsampler (or none at the bottom / top). Up levels concatenate one skip before each block."""

    def __init__(self, in_channels: list[int], out_channels: int, config: UNetConfig, heads: int, attention: bool,
                 resample: str | None) -> None:
        super().__init__()
        c = config
        self.resnets = nn.ModuleList([ResBlock(i, out_channels, c.time_channels, c.norm_num_groups, c.norm_eps)
                                      for i in in_channels])
        self.attentions = nn.ModuleList([
            SpatialTransformer(out_channels, heads, c.cross_attention_dim, c.norm_num_groups) for _ in in_channels
        ]) if attention else None
        self.downsample = Downsample(out_channels) if resample == "down" else None
        self.upsample = Upsample(out_channels) if resample == "up" else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor, context: torch.Tensor,
                skips: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Down: returns x and the outputs to keep as skips. Up: pops from ``skips`` (the last first)."""
        kept = []
        for i, resnet in enumerate(self.resnets):
            if skips is not None:
                x = torch.cat([x, skips.pop()], dim=1)
            x = resnet(x, t_emb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            kept.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            kept.append(x)
        if self.upsample is not None:
            x = self.upsample(x, size=skips[-1].shape[-2:])  # odd sizes: match the skip it meets next
        return x, kept


class UNet(nn.Module):
    """ε_θ(x_t, t, c): sample (B, C_in, h, w), timestep (B,) or a number, context (B, M, D) → (B, C_out, h, w)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = c = config
        channels, heads, levels = c.block_out_channels, c.heads, len(c.block_out_channels)
        self.conv_in = nn.Conv2d(c.in_channels, channels[0], 3, padding=1)
        self.time_embedding = nn.Sequential(nn.Linear(channels[0], c.time_channels), nn.SiLU(),
                                            nn.Linear(c.time_channels, c.time_channels))
        skip_channels = [channels[0]]  # what every kept output carries, in the order they are kept
        self.down_blocks = nn.ModuleList()
        for i in range(levels):
            inputs = [channels[i - 1] if i else channels[0]] + [channels[i]] * (c.layers_per_block - 1)
            last = i == levels - 1
            self.down_blocks.append(Level(inputs, channels[i], c, heads[i], c.cross_attention[i],
                                          None if last else "down"))
            skip_channels += [channels[i]] * (c.layers_per_block + (0 if last else 1))
        mid_attention = SpatialTransformer(channels[-1], heads[-1], c.cross_attention_dim, c.norm_num_groups)
        self.mid_block = MidBlock(channels[-1], mid_attention, c.time_channels, c.norm_num_groups, c.norm_eps)
        self.up_blocks = nn.ModuleList()
        x_channels = channels[-1]
        for i in reversed(range(levels)):
            inputs = [(x_channels if j == 0 else channels[i]) + skip_channels.pop()
                      for j in range(c.layers_per_block + 1)]
            self.up_blocks.append(Level(inputs, channels[i], c, heads[i], c.cross_attention[i],
                                        "up" if i else None))
            x_channels = channels[i]
        self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, channels[0], eps=c.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], c.out_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, context: torch.Tensor) -> torch.Tensor:
        check_channels(sample, self.config.in_channels, "the UNet's input sample")
        if context.dim() != 3 or context.shape[-1] != self.config.cross_attention_dim:
            raise ValueError(f"context must have shape (B, M, {self.config.cross_attention_dim}), "
                             f"got {tuple(context.shape)}")
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        t_emb = self.time_embedding(timestep_embedding(t, self.config.block_out_channels[0]).to(sample.dtype))
        x = self.conv_in(sample)
        skips = [x]
        for level in self.down_blocks:
            x, kept = level(x, t_emb, context)
            skips += kept
        x = self.mid_block(x, t_emb, context)
        for level in self.up_blocks:
            x, _ = level(x, t_emb, context, skips)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


# ----------------------------------------------------------------------------------------------------------------
# diffusers

_DOWN = {True: "CrossAttnDownBlock2D", False: "DownBlock2D"}
_UP = {True: "CrossAttnUpBlock2D", False: "UpBlock2D"}
# Settings of UNet2DConditionModel that the course's UNet has as diffusers' defaults, and only those.
_FIXED: dict[str, Any] = dict(
    mid_block_type="UNetMidBlock2DCrossAttn", center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    act_fn="silu", downsample_padding=1, mid_block_scale_factor=1, dropout=0.0, transformer_layers_per_block=1,
    encoder_hid_dim=None, encoder_hid_dim_type=None, class_embed_type=None, addition_embed_type=None,
    dual_cross_attention=False, use_linear_projection=False, only_cross_attention=False, upcast_attention=False,
    resnet_time_scale_shift="default", resnet_skip_time_act=False, resnet_out_scale_factor=1.0,
    time_embedding_type="positional", time_embedding_dim=None, time_embedding_act_fn=None, timestep_post_act=None,
    time_cond_proj_dim=None, conv_in_kernel=3, conv_out_kernel=3, num_class_embeds=None,
    projection_class_embeddings_input_dim=None, class_embeddings_concat=False, cross_attention_norm=None,
    reverse_transformer_layers_per_block=None, attention_type="default", mid_block_only_cross_attention=None,
    addition_time_embed_dim=None)


def _config_from_diffusers(config: Any) -> UNetConfig:
    for key, value in _FIXED.items():
        got = config.get(key, value)
        if isinstance(got, (list, tuple)) and len(set(got)) == 1:
            got = got[0]
        if got != value:
            raise ValueError(f"the course's UNet supports {key}={value!r} only, got {got!r}")
    attention = []
    for kind in config.down_block_types:
        if kind not in _DOWN.values():
            raise ValueError(f"down blocks must be {_DOWN[True]} or {_DOWN[False]}, got {kind}")
        attention.append(kind == _DOWN[True])
    expected_up = [_UP[a] for a in reversed(attention)]
    if list(config.up_block_types) != expected_up:
        raise ValueError(f"up blocks must mirror the down blocks: expected {expected_up}, got "
                         f"{list(config.up_block_types)}")
    if not isinstance(config.layers_per_block, int) or not isinstance(config.cross_attention_dim, int):
        raise ValueError("layers_per_block and cross_attention_dim must be one number for every level")
    heads = config.num_attention_heads or config.attention_head_dim  # the number of heads, despite the name
    sample_size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
    return UNetConfig(in_channels=config.in_channels, out_channels=config.out_channels,
                      block_out_channels=tuple(config.block_out_channels), cross_attention=tuple(attention),
                      layers_per_block=config.layers_per_block,
                      num_heads=heads if isinstance(heads, int) else tuple(heads),
                      norm_num_groups=config.norm_num_groups, norm_eps=config.norm_eps,
                      cross_attention_dim=config.cross_attention_dim, sample_size=sample_size or 8)


def unet_from_diffusers(unet: diffusers.UNet2DConditionModel) -> UNet:
    """The course's :class:`UNet` with the configuration and the weights of a ``UNet2DConditionModel``."""
    model = UNet(_config_from_diffusers(unet.config))
    model.load_state_dict(rename_state_dict(unet.state_dict()), strict=True)
    return model.to(next(unet.parameters()).device)


def unet_to_diffusers(model: UNet) -> diffusers.UNet2DConditionModel:
    """A ``diffusers`` ``UNet2DConditionModel`` with the configuration and the weights of the course's UNet."""
    import diffusers

    c = model.config
    unet = diffusers.UNet2DConditionModel(
        sample_size=c.sample_size, in_channels=c.in_channels, out_channels=c.out_channels,
        down_block_types=tuple(_DOWN[a] for a in c.cross_attention),
        up_block_types=tuple(_UP[a] for a in reversed(c.cross_attention)),
        block_out_channels=c.block_out_channels, layers_per_block=c.layers_per_block,
        attention_head_dim=c.num_heads, norm_num_groups=c.norm_num_groups, norm_eps=c.norm_eps,
        cross_attention_dim=c.cross_attention_dim)
    unet.load_state_dict(rename_state_dict(model.state_dict(), to_course=False), strict=True)
    return unet.to(next(model.parameters()).device)
