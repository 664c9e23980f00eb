"""The building blocks that the denoising UNet and the KL autoencoder share.

Shapes: B batch, C channels, H × W spatial size, N = H·W positions, M context tokens, D context width.
Parameter names are ``diffusers``' own where the structure is the same, so that a state dict moves between the two
by the few renamings in :data:`DIFFUSERS_RENAMES` (diffusers nests a few layers one level deeper).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

# diffusers' name → the course's name (applied in order; the inverse goes back).
DIFFUSERS_RENAMES: tuple[tuple[str, str], ...] = (
    (".downsamplers.0.", ".downsample."),
    (".upsamplers.0.", ".upsample."),
    (".to_out.0.", ".to_out."),
    (".ff.net.0.proj.", ".ff.proj."),
    (".ff.net.2.", ".ff.out."),
    (".time_embedding.linear_1.", ".time_embedding.0."),
    (".time_embedding.linear_2.", ".time_embedding.2."),
)


def rename_state_dict(state: dict[str, torch.Tensor], to_course: bool = True) -> dict[str, torch.Tensor]:
    """A diffusers state dict with the course's names (``to_course``), or the course's with diffusers' names."""
    pairs = [(re.escape(a), b) if to_course else (re.escape(b), a) for a, b in DIFFUSERS_RENAMES]
    renamed = {}
    for key, value in state.items():
        key = "." + key
        for pattern, replacement in pairs:
            key = re.sub(pattern, replacement, key)
        renamed[key[1:]] = value
    return renamed


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the diffusion step (Vaswani et al.'s positions, as DDPM uses them): t (B,) → (B, dim),
    [cos(t ω_k), sin(t ω_k)] with ω_k = max_period^(−k / (dim/2)), k = 0 … dim/2 − 1 (cosines first)."""
    half = dim // 2
    omega = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t[:, None].float() * omega[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(embedding, (0, 1)) if dim % 2 else embedding


class ResBlock(nn.Module):
    """Residual block: h = conv₁(SiLU(GN(x))) [+ W_t SiLU(t_emb)], out = skip(x) + conv₂(SiLU(GN(h))).

    x (B, C_in, H, W) → (B, C_out, H, W); the time embedding (B, D_t) is added per channel when ``time_channels``
    is given (the UNet's blocks; the autoencoder's have none). ``skip`` is a 1×1 conv when C_in ≠ C_out.
    """

    def __init__(self, in_channels: int, out_channels: int, time_channels: int | None = None, groups: int = 32,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(time_channels, out_channels) if time_channels is not None else None
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(t_emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 conv. The UNet pads one pixel on every side; the autoencoder pads only
    right and bottom (``asymmetric``, as latent diffusion's first stage does): the same size, other pixels."""

    def __init__(self, channels: int, asymmetric: bool = False) -> None:
        super().__init__()
        self.asymmetric = asymmetric
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if asymmetric else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)) if self.asymmetric else x)


class Upsample(nn.Module):
    """Double H and W (nearest neighbour; or reach ``size``, the skip connection's), then a 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest") if size else F.interpolate(x, scale_factor=2.0)
        return self.conv(x)


class Attention(nn.Module):
    """Multi-head attention softmax(Q Kᵀ / √d_h) V with Q = x W_q, K = c W_k, V = c W_v (c = ``context``, or x itself
    for self-attention), h heads of size d_h = C / h, then W_o. x (B, N, C), context (B, M, D) → (B, N, C)."""

    def __init__(self, dim: int, heads: int = 1, context_dim: int | None = None, bias: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"the width {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=bias)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=bias)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        B, N, C = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, L, C) → (B, h, L, d_h)
            return t.view(B, -1, self.heads, C // self.heads).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(B, N, C))


class MidBlock(nn.Module):
    """The bottleneck: ResBlock → attention → ResBlock at the lowest resolution."""

    def __init__(self, channels: int, attention: nn.Module, time_channels: int | None, groups: int,
                 eps: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(channels, channels, time_channels, groups, eps) for _ in range(2)])
        self.attentions = nn.ModuleList([attention])

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.resnets[0](x, t_emb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, t_emb)
