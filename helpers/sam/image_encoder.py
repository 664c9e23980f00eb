"""The image encoder box: an MAE-pretrained ViT with windowed attention, a few global blocks and a neck
(Kirillov et al., 2023, §3 and appendix A). (B, 3, S, S) → image embedding (B, C, e, e)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helpers.sam.config import SamConfig, check_shape
from helpers.sam.layers import LayerNorm2d, MLPBlock


class PatchEmbed(nn.Module):
    """Cut the image into p × p patches and project each to D features: (B, 3, S, S) → (B, e, e, D)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # channels last: the blocks work on (B, H, W, D)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, D) → (B · nW, window, window, D): zero-pad H and W up to multiples of ``window``, then cut
    into non-overlapping windows. Also returns the padded size (Hp, Wp)."""
    B, H, W, D = x.shape
    pad_h, pad_w = -H % window, -W % window
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window, window, Wp // window, window, D).transpose(2, 3)
    return x.reshape(-1, window, window, D), (Hp, Wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`window_partition`: (B · nW, window, window, D) → (B, H, W, D), padding removed."""
    (Hp, Wp), (H, W) = padded, size
    B = windows.shape[0] // ((Hp // window) * (Wp // window))
    x = windows.view(B, Hp // window, Wp // window, window, window, -1).transpose(2, 3)
    return x.reshape(B, Hp, Wp, -1)[:, :H, :W, :].contiguous()


def relative_position_table(size: int, table: torch.Tensor) -> torch.Tensor:
    """R[i, j] = table[i − j + size − 1]: the embedding of the offset from key j to query i along one axis,
    (size, size, d_h). A table learnt for another size (2·size − 1 rows expected) is resized linearly."""
    length = 2 * size - 1
    if table.shape[0] != length:
        table = F.interpolate(table.T[None], size=length, mode="linear")[0].T
    offsets = torch.arange(size, device=table.device)
    return table[offsets[:, None] - offsets[None, :] + size - 1]


def add_decomposed_rel_pos(scores: torch.Tensor, q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                           size: tuple[int, int]) -> torch.Tensor:
    """Decomposed relative positions (MViTv2, Li et al. 2022), as ViTDet and SAM use them: the score of query
    (y, x) for key (y', x') gains q·R_h[y, y'] + q·R_w[x, x'].

    scores: (B', H·W, H·W) with B' = batch × heads; q: (B', H·W, d_h); returns scores of the same shape."""
    H, W = size
    Rh, Rw = relative_position_table(H, rel_pos_h), relative_position_table(W, rel_pos_w)
    r_q = q.reshape(q.shape[0], H, W, -1)
    rel_h = torch.einsum("byxc,ykc->byxk", r_q, Rh)  # (B', H, W, H): bias by key row
    rel_w = torch.einsum("byxc,xkc->byxk", r_q, Rw)  # (B', H, W, W): bias by key column
    scores = scores.view(-1, H, W, H, W) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return scores.view(-1, H * W, H * W)


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, D) grid of patches, with decomposed relative positions.

    ``input_size`` is the grid it attends over (the window, or the whole e × e grid in a global block): it sizes
    the relative-position tables R_h (``rel_pos_h``) and R_w (``rel_pos_w``), each (2·size − 1, d_h)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, use_rel_pos: bool = False,
                 input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5  # 1 / √d_h
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, D = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)  # each (B·h, H·W, d_h)
        scores = (q * self.scale) @ k.transpose(-2, -1)  # (B·h, H·W, H·W)
        if self.use_rel_pos:
            scores = add_decomposed_rel_pos(scores, q, self.rel_pos_h, self.rel_pos_w, (H, W))
        out = scores.softmax(dim=-1) @ v
        out = out.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, D)
        return self.proj(out)


class Block(nn.Module):
    """A pre-norm ViT block: x + Attn(LN(x)), then x + MLP(LN(x)). With ``window_size`` > 0 the attention runs
    inside non-overlapping windows (cheap at 64 × 64 patches); with 0 it is global (appendix A, after ViTDet)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, use_rel_pos: bool = False, window_size: int = 0,
                 input_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos,
                              input_size if window_size == 0 else (window_size, window_size))
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut, x = x, self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1:3]
            windows, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(windows), self.window_size, padded, (H, W))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """The image encoder box: patches → ViT blocks → neck. (B, 3, S, S) → image embedding (B, C, e, e).

    The neck (appendix A): a 1×1 convolution down to C channels and a 3×3 convolution, each followed by a
    layer norm. ``pos_embed`` is a learnt absolute position embedding (1, e, e, D)."""

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        c, D, e = config, config.encoder_embed_dim, config.image_embedding_size
        self.img_size = c.img_size
        self.in_chans = c.in_chans
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, D)
        self.pos_embed = nn.Parameter(torch.zeros(1, e, e, D)) if c.encoder_use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(D, c.encoder_num_heads, c.encoder_mlp_ratio, c.encoder_qkv_bias, c.encoder_norm_eps,
                  c.encoder_use_rel_pos, 0 if i in c.encoder_global_attn_indexes else c.encoder_window_size, (e, e))
            for i in range(c.encoder_depth))
        C = c.prompt_embed_dim
        self.neck = nn.Sequential(
            nn.Conv2d(D, C, kernel_size=1, bias=False), LayerNorm2d(C),
            nn.Conv2d(C, C, kernel_size=3, padding=1, bias=False), LayerNorm2d(C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        S = self.img_size
        check_shape("image_encoder input", x, f"(B, {self.in_chans}, {S}, {S}) (normalised and padded images)",
                     x.dim() == 4 and tuple(x.shape[1:]) == (self.in_chans, S, S))
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
