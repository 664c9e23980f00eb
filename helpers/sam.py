"""SAM in one file: one canonical copy of each box of the Segment Anything Model (the chapters derive them;
the labs import them).

Kirillov et al., 2023, "Segment Anything", §3 (the model) and appendix A (its details). Numerically the same
model as ``segment_anything.modeling.Sam``, and the parameter names are the same (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``), so weights move between the two with ``load_state_dict`` alone:
:func:`sam_from_reference` and :func:`sam_to_reference`.

Symbols: S = input side (``img_size``, 1024), p = patch size (16), e = S / p (side of the image embedding, 64),
D = ViT width (``encoder_embed_dim``), C = prompt/decoder width (``prompt_embed_dim``, 256), h = heads,
d_h = head size. Shapes: B images or prompts, N tokens, M = masks per prompt (1 + ``num_multimask_outputs``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import segment_anything


# ----------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class SamConfig:
    """Every size of SAM in one place. The defaults are ViT-B (``build_sam_vit_b``); :meth:`vit_l`, :meth:`vit_h`."""

    img_size: int = 1024  # S: the padded square the image encoder sees
    patch_size: int = 16  # p
    in_chans: int = 3
    encoder_embed_dim: int = 768  # D
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_mlp_ratio: float = 4.0
    encoder_window_size: int = 14  # windowed attention on 14×14 patches; 0: every block global
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)  # the blocks with global attention
    encoder_use_abs_pos: bool = True
    encoder_use_rel_pos: bool = True
    encoder_qkv_bias: bool = True
    encoder_norm_eps: float = 1e-6
    prompt_embed_dim: int = 256  # C: the neck's output, every prompt token and the decoder's width
    mask_in_chans: int = 16  # channels of the mask downscaler (appendix A: 4 then 16)
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2  # token↔image attention works at C / 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, ...] = (123.675, 116.28, 103.53)  # ImageNet statistics on the 0–255 scale
    pixel_std: tuple[float, ...] = (58.395, 57.12, 57.375)

    def __post_init__(self) -> None:
        self.encoder_global_attn_indexes = tuple(int(i) for i in self.encoder_global_attn_indexes)
        self.pixel_mean, self.pixel_std = tuple(self.pixel_mean), tuple(self.pixel_std)
        problems = []
        if self.img_size % self.patch_size:
            problems.append(f"img_size={self.img_size} must be a multiple of patch_size={self.patch_size}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            problems.append(f"encoder_embed_dim={self.encoder_embed_dim} must be divisible by "
                            f"encoder_num_heads={self.encoder_num_heads}")
        if any(not 0 <= i < self.encoder_depth for i in self.encoder_global_attn_indexes):
            problems.append(f"encoder_global_attn_indexes={self.encoder_global_attn_indexes} must lie in "
                            f"0..{self.encoder_depth - 1}")
        if self.prompt_embed_dim % 8 or self.prompt_embed_dim % 2:
            problems.append(f"prompt_embed_dim={self.prompt_embed_dim} must be a multiple of 8 (upscaling to C/8)")
        if (self.prompt_embed_dim // self.attention_downsample_rate) % self.decoder_num_heads:
            problems.append(f"prompt_embed_dim / attention_downsample_rate = "
                            f"{self.prompt_embed_dim // self.attention_downsample_rate} must be divisible by "
                            f"decoder_num_heads={self.decoder_num_heads}")
        if self.mask_in_chans % 4:
            problems.append(f"mask_in_chans={self.mask_in_chans} must be a multiple of 4")
        if len(self.pixel_mean) != self.in_chans or len(self.pixel_std) != self.in_chans:
            problems.append(f"pixel_mean and pixel_std need in_chans={self.in_chans} values each")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def image_embedding_size(self) -> int:
        """e = S / p: the image embedding is C × e × e (256 × 64 × 64 for SAM)."""
        return self.img_size // self.patch_size

    @property
    def mask_input_size(self) -> int:
        """4e: the side of a mask prompt (and of the low-resolution masks the decoder predicts)."""
        return 4 * self.image_embedding_size

    @classmethod
    def vit_b(cls) -> SamConfig:
        """SAM ViT-B (91M parameters in the image encoder)."""
        return cls()

    @classmethod
    def vit_l(cls) -> SamConfig:
        """SAM ViT-L."""
        return cls(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                   encoder_global_attn_indexes=(5, 11, 17, 23))

    @classmethod
    def vit_h(cls) -> SamConfig:
        """SAM ViT-H, the model of the paper."""
        return cls(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                   encoder_global_attn_indexes=(7, 15, 23, 31))

    @classmethod
    def from_reference(cls, ref: segment_anything.modeling.Sam) -> SamConfig:
        """Read the configuration off the modules of a ``segment_anything.modeling.Sam`` of any size."""
        encoder, prompt, decoder = ref.image_encoder, ref.prompt_encoder, ref.mask_decoder
        blocks, transformer = list(encoder.blocks), decoder.transformer
        windows = {block.window_size for block in blocks if block.window_size > 0}
        if len(windows) > 1:
            raise ValueError(f"the windowed blocks use different window sizes {sorted(windows)}")
        for block in blocks:
            if not isinstance(block.mlp.act, nn.GELU) or not isinstance(block.norm1, nn.LayerNorm):
                raise ValueError("only the GELU / LayerNorm image encoder of segment_anything's builders is supported")
        patch = encoder.patch_embed.proj
        config = cls(
            img_size=encoder.img_size, patch_size=patch.kernel_size[0], in_chans=patch.in_channels,
            encoder_embed_dim=patch.out_channels, encoder_depth=len(blocks),
            encoder_num_heads=blocks[0].attn.num_heads,
            encoder_mlp_ratio=blocks[0].mlp.lin1.out_features / patch.out_channels,
            encoder_window_size=min(windows) if windows else 0,  # 0: no windows, every block global
            encoder_global_attn_indexes=tuple(i for i, b in enumerate(blocks) if b.window_size == 0 and windows),
            encoder_use_abs_pos=encoder.pos_embed is not None, encoder_use_rel_pos=blocks[0].attn.use_rel_pos,
            encoder_qkv_bias=blocks[0].attn.qkv.bias is not None, encoder_norm_eps=blocks[0].norm1.eps,
            prompt_embed_dim=prompt.embed_dim, mask_in_chans=prompt.mask_downscaling[3].out_channels,
            decoder_depth=len(transformer.layers), decoder_num_heads=transformer.num_heads,
            decoder_mlp_dim=transformer.mlp_dim,
            attention_downsample_rate=transformer.embedding_dim // transformer.final_attn_token_to_image.internal_dim,
            num_multimask_outputs=decoder.num_multimask_outputs, iou_head_depth=decoder.iou_prediction_head.num_layers,
            iou_head_hidden_dim=decoder.iou_prediction_head.layers[0].out_features
            if decoder.iou_prediction_head.num_layers > 1 else 256,
            pixel_mean=_shortest(ref.pixel_mean), pixel_std=_shortest(ref.pixel_std),
        )
        e = config.image_embedding_size
        if tuple(prompt.input_image_size) != (config.img_size,) * 2 or tuple(prompt.image_embedding_size) != (e, e):
            raise ValueError(f"the prompt encoder expects a {prompt.input_image_size} input with a "
                             f"{prompt.image_embedding_size} embedding; the image encoder gives "
                             f"({config.img_size}, {config.img_size}) and ({e}, {e})")
        return config


def _shortest(values: torch.Tensor) -> tuple[float, ...]:
    """float32 values as the shortest decimals that read back to them (123.67500305 → 123.675)."""
    return tuple(float(str(np.float32(v))) for v in values.flatten().tolist())


def _check_shape(name: str, tensor: torch.Tensor, expected: str, ok: bool) -> None:
    """Raise a ValueError that names the expected shape when ``ok`` is False."""
    if not ok:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(tensor.shape)}")


# ----------------------------------------------------------------------------------------------------------------
# Shared pieces


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of a (B, C, H, W) map, at every pixel (the neck, the mask
    downscaler and the upscaler use it; appendix A)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation between: the transformer MLP (GELU in the ViT, ReLU in the decoder)."""

    def __init__(self, dim: int, hidden_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between: the hypernetwork MLPs and the IoU head of the decoder."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        sizes = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.num_layers = num_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == self.num_layers - 1 else F.relu(layer(x))
        return x


# ----------------------------------------------------------------------------------------------------------------
# Image encoder: an MAE-pretrained ViT with windowed attention and a few global blocks, then a neck (§3, app. A)


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
        _check_shape("image_encoder input", x, f"(B, {self.in_chans}, {S}, {S}) (normalised and padded images)",
                     x.dim() == 4 and tuple(x.shape[1:]) == (self.in_chans, S, S))
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


# ----------------------------------------------------------------------------------------------------------------
# Prompt encoder: points and boxes become sparse tokens, a mask becomes a dense map (§3, appendix A)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features (Tancik et al., 2020): a point u = (x, y) in [0, 1]² maps to
    [sin(2π (2u − 1) G), cos(2π (2u − 1) G)] with a fixed Gaussian G (``positional_encoding_gaussian_matrix``,
    2 × C/2), so nearby points get similar codes at every scale. Computed in float32, even under autocast."""

    def __init__(self, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] as (x, y) → (..., C)."""
        with torch.autocast(device_type=coords.device.type, enabled=False):
            coords = 2 * coords - 1
            coords = coords @ self.positional_encoding_gaussian_matrix
            coords = 2 * math.pi * coords
            return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """The code of every cell centre of an h × w grid: (C, h, w) (the image embedding's positions)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return self.encode(torch.stack([grid_x, grid_y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) pixel coordinates (x, y) in an image of ``image_size`` = (H, W) → (B, N, C)."""
        scale = torch.tensor([image_size[1], image_size[0]], device=coords.device)
        return self.encode((coords / scale).to(torch.float))


class PromptEncoder(nn.Module):
    """The prompt encoder box.

    Sparse prompts → tokens (B, N, C): a point is its positional code plus a learnt embedding for foreground
    (label 1, ``point_embeddings[1]``) or background (label 0, ``point_embeddings[0]``); a box is two tokens,
    its corners' codes plus learnt "top-left" / "bottom-right" embeddings (``point_embeddings[2]``, ``[3]``).
    Label −1 marks padding: a learnt ``not_a_point_embed`` and no position. Without a box, one padding
    token is appended to the points, as segment_anything does (the paper does not say so).
    Dense prompt → map (B, C, e, e): a mask at 4e × 4e goes through two 2×2 stride-2 convolutions (C_m/4 then
    C_m channels, layer norm and GELU after each) and a 1×1 convolution to C; no mask → ``no_mask_embed``
    at every position."""

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        C, e, m = config.prompt_embed_dim, config.image_embedding_size, config.mask_in_chans
        self.embed_dim = C
        self.image_embedding_size = (e, e)
        self.input_image_size = (config.img_size, config.img_size)
        self.mask_input_size = (4 * e, 4 * e)
        self.pe_layer = PositionEmbeddingRandom(C // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, C) for _ in range(4))  # neg, pos, top-left, bottom-right
        self.not_a_point_embed = nn.Embedding(1, C)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, m // 4, kernel_size=2, stride=2), LayerNorm2d(m // 4), nn.GELU(),
            nn.Conv2d(m // 4, m, kernel_size=2, stride=2), LayerNorm2d(m), nn.GELU(),
            nn.Conv2d(m, C, kernel_size=1))
        self.no_mask_embed = nn.Embedding(1, C)

    def get_dense_pe(self) -> torch.Tensor:
        """The positional code of the image embedding's grid: (1, C, e, e)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel (i, j) is the square [i, i+1): encode its centre
        if pad:
            points = torch.cat([points, torch.zeros_like(points[:, :1])], dim=1)
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        embedding = torch.where(labels == -1, self.not_a_point_embed.weight, embedding)  # padding: no position
        embedding = embedding + torch.where(labels == 0, self.point_embeddings[0].weight, 0.0)
        return embedding + torch.where(labels == 1, self.point_embeddings[1].weight, 0.0)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # (x1, y1), (x2, y2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        return embedding + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """points: ((B, N, 2) pixel coordinates x, y in the S × S input frame, (B, N) labels in {1, 0, −1});
        boxes: (B, 4) as (x1, y1, x2, y2); masks: (B, 1, 4e, 4e) logits. Any may be None.
        Returns sparse tokens (B, N', C) and the dense map (B, C, e, e)."""
        sizes = []
        if points is not None:
            coords, labels = points
            _check_shape("point_coords", coords, "(B, N, 2)", coords.dim() == 3 and coords.shape[-1] == 2)
            _check_shape("point_labels", labels, f"(B, N) = {tuple(coords.shape[:2])}",
                         labels.shape == coords.shape[:2])
            sizes.append(coords.shape[0])
        if boxes is not None:
            _check_shape("boxes", boxes, "(B, 4) as (x1, y1, x2, y2)",
                         boxes.dim() in (2, 3) and boxes.shape[-1] == 4 and boxes.numel() == 4 * boxes.shape[0])
            sizes.append(boxes.shape[0])
        if masks is not None:
            _check_shape("mask_inputs", masks, f"(B, 1, {self.mask_input_size[0]}, {self.mask_input_size[1]})",
                         masks.dim() == 4 and tuple(masks.shape[1:]) == (1, *self.mask_input_size))
            sizes.append(masks.shape[0])
        if len(set(sizes)) > 1:
            raise ValueError(f"points, boxes and masks must hold the same number B of prompts, got {sizes}")
        B = sizes[0] if sizes else 1
        device = self.no_mask_embed.weight.device

        tokens = [torch.empty(B, 0, self.embed_dim, device=device)]
        if points is not None:
            tokens.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            tokens.append(self._embed_boxes(boxes))
        sparse = torch.cat(tokens, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(B, -1, *self.image_embedding_size)
        return sparse, dense


# ----------------------------------------------------------------------------------------------------------------
# Mask decoder: a two-way transformer between output/prompt tokens and the image embedding (§3, appendix A)


class DecoderAttention(nn.Module):
    """Multi-head attention whose queries, keys and values are projected to C / ``downsample_rate`` features
    (appendix A: C/2 = 128 in the cross-attentions, for speed), then back to C. q: (B, Nq, C), k, v: (B, Nk, C)."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the internal width {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.reshape(B, N, self.num_heads, -1).transpose(1, 2)  # (B, h, N, d_h)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, Nq, Nk)
        out = torch.softmax(scores, dim=-1) @ v
        B, _, Nq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, Nq, self.internal_dim))


class TwoWayAttentionBlock(nn.Module):
    """One decoder layer, four steps (appendix A, Fig. 14), each with a residual and a post-norm:
    (1) self-attention of the tokens, (2) tokens → image cross-attention, (3) an MLP on each token,
    (4) image → tokens cross-attention, which updates the image embedding. The prompt tokens' original
    embedding (``query_pe``) and the image's positional code (``key_pe``) are re-added before every
    attention; the first layer's self-attention replaces the tokens instead (they already carry it)."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = DecoderAttention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = DecoderAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = DecoderAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries: tokens (B, N, C); keys: the flattened image embedding (B, e·e, C)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way layers, then a final tokens → image attention and layer norm."""

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.depth, self.embedding_dim, self.num_heads, self.mlp_dim = depth, embedding_dim, num_heads, mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, i == 0)
            for i in range(depth))
        self.final_attn_token_to_image = DecoderAttention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding, image_pe: (B, C, e, e); point_embedding: tokens (B, N, C).
        Returns the tokens (B, N, C) and the image embedding (B, e·e, C), both updated."""
        image_embedding = image_embedding.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        queries, keys = point_embedding, image_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)
        q, k = queries + point_embedding, keys + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys


class MaskDecoder(nn.Module):
    """The mask decoder box.

    Tokens = [IoU token, M mask tokens, prompt tokens] go through the two-way transformer with the image
    embedding (plus the dense prompt). The image embedding is upscaled 4× by two transposed convolutions
    (C → C/4 → C/8 channels); each mask token passes through its own 3-layer MLP (a hypernetwork) to C/8
    weights, and a mask is the dot product of those weights with every upscaled pixel: (B, M, 4e, 4e).
    The IoU token's MLP head predicts each mask's IoU. Multimask output (ambiguity, §3) returns masks
    1..M−1; single output returns mask 0."""

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        C = self.transformer_dim = config.prompt_embed_dim
        self.transformer = TwoWayTransformer(config.decoder_depth, C, config.decoder_num_heads,
                                             config.decoder_mlp_dim, config.attention_downsample_rate)
        self.num_multimask_outputs = config.num_multimask_outputs
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, C)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, C)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(C, C // 4, kernel_size=2, stride=2), LayerNorm2d(C // 4), nn.GELU(),
            nn.ConvTranspose2d(C // 4, C // 8, kernel_size=2, stride=2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(C, C, C // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(C, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns mask logits (B, M', 4e, 4e) and predicted IoUs (B, M'), M' = M − 1 or 1."""
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings)
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou_pred[:, chosen]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor,
                      dense_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All M masks and IoUs. image_embeddings: (1, C, e, e) shared by the B prompts, or (B, C, e, e)."""
        B, C = sparse_prompt_embeddings.shape[0], self.transformer_dim
        _check_shape("image_embeddings", image_embeddings, f"(1, {C}, e, e) or (B={B}, {C}, e, e)",
                     image_embeddings.dim() == 4 and image_embeddings.shape[0] in (1, B)
                     and image_embeddings.shape[1] == C)
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(B, -1, -1), sparse_prompt_embeddings], dim=1)

        src = image_embeddings.expand(B, -1, -1, -1) + dense_prompt_embeddings
        pos_src = image_pe.expand(B, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out, mask_tokens_out = hs[:, 0, :], hs[:, 1:1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))  # (B, C/8, 4e, 4e)
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=1)  # (B, M, C/8)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)


# ----------------------------------------------------------------------------------------------------------------
# Pre- and post-processing: resize the long side to S, normalise, pad; masks back to the original size


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """The (h, w) an image of (height, width) gets when its long side is resized to ``long_side`` (rounded)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """An (H, W, 3) uint8 image resized bilinearly (PIL) so that its long side is ``long_side``, as
    ``segment_anything``'s ``ResizeLongestSide.apply_image`` does."""
    from PIL import Image

    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8):
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {getattr(image, 'shape', type(image))} "
                         f"{getattr(image, 'dtype', '')}")
    h, w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def transform_coords(coords: np.ndarray | torch.Tensor, original_size: Sequence[int],
                     long_side: int) -> np.ndarray | torch.Tensor:
    """Point coordinates (..., 2) as (x, y) in the original image → the resized image's frame."""
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, long_side)
    coords = coords.to(torch.float).clone() if isinstance(coords, torch.Tensor) else np.array(coords, dtype=float)
    coords[..., 0] = coords[..., 0] * (new_w / old_w)
    coords[..., 1] = coords[..., 1] * (new_h / old_h)
    return coords


def transform_boxes(boxes: np.ndarray | torch.Tensor, original_size: Sequence[int],
                    long_side: int) -> np.ndarray | torch.Tensor:
    """Boxes (B, 4) as (x1, y1, x2, y2) in the original image → the resized image's frame."""
    return transform_coords(boxes.reshape(-1, 2, 2), original_size, long_side).reshape(-1, 4)


def prepare_image(image: np.ndarray, img_size: int) -> torch.Tensor:
    """An (H, W, 3) uint8 RGB image → the (3, h, w) float tensor that :meth:`Sam.forward` takes as ``"image"``
    (long side resized to ``img_size``; pixel values still 0–255)."""
    return torch.from_numpy(resize_longest_side(image, img_size)).permute(2, 0, 1).float()


def sam_preprocess(image: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
                   img_size: int) -> torch.Tensor:
    """(…, 3, h, w) with h, w ≤ S → normalised per channel, zero-padded at the bottom and right to (…, 3, S, S)."""
    x = (image - pixel_mean) / pixel_std
    h, w = x.shape[-2:]
    return F.pad(x, (0, img_size - w, 0, img_size - h))


def postprocess_masks(masks: torch.Tensor, input_size: Sequence[int], original_size: Sequence[int],
                      img_size: int) -> torch.Tensor:
    """Mask logits (B, M, 4e, 4e) → upscale to S × S, crop the padding to ``input_size`` (the resized image's
    (h, w)), upscale to ``original_size`` (H, W): (B, M, H, W). Bilinear throughout."""
    masks = F.interpolate(masks, (img_size, img_size), mode="bilinear", align_corners=False)
    masks = masks[..., : int(input_size[0]), : int(input_size[1])]
    return F.interpolate(masks, tuple(int(s) for s in original_size), mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------------------------
# The whole model


class Sam(nn.Module):
    """Segment Anything (§3, Fig. 4): image encoder → image embedding (once per image); prompt encoder →
    prompt tokens; mask decoder → masks and their predicted IoU. Logits above ``mask_threshold`` are the mask.

    Unlike segment_anything's ``Sam.forward``, :meth:`forward` keeps gradients (wrap it in ``torch.no_grad()``
    for inference). The attributes and methods that ``segment_anything.SamPredictor`` calls have the same names
    and arguments, so a predictor can drive this model directly too."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoderViT(config)
        self.prompt_encoder = PromptEncoder(config)
        self.mask_decoder = MaskDecoder(config)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise and pad: see :func:`sam_preprocess`."""
        return sam_preprocess(x, self.pixel_mean, self.pixel_std, self.image_encoder.img_size)

    def postprocess_masks(self, masks: torch.Tensor, input_size: Sequence[int],
                          original_size: Sequence[int]) -> torch.Tensor:
        """Back to the original size: see :func:`postprocess_masks`."""
        return postprocess_masks(masks, input_size, original_size, self.image_encoder.img_size)

    def decode(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               mask_inputs: torch.Tensor | None = None,
               multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts (in the S × S input frame) on embedded images → low-resolution mask logits (B, M', 4e, 4e)
        and IoU predictions (B, M'). image_embeddings: (1, C, e, e) for B prompts on one image, or (B, C, e, e)."""
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels come together")
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
        return self.mask_decoder(image_embeddings=image_embeddings, image_pe=self.prompt_encoder.get_dense_pe(),
                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                 multimask_output=multimask_output)

    def forward(self, batched_input: list[dict[str, Any]], multimask_output: bool) -> list[dict[str, torch.Tensor]]:
        """Masks for a batch of images, each with its own prompts (as segment_anything's ``Sam.forward``).

        Each record: ``"image"`` (3, h, w), long side resized to S (:func:`prepare_image`), pixel values 0–255;
        ``"original_size"`` (H, W); optional ``"point_coords"`` (B, N, 2) with ``"point_labels"`` (B, N),
        ``"boxes"`` (B, 4), ``"mask_inputs"`` (B, 1, 4e, 4e), prompts in the resized frame
        (:func:`transform_coords`). Each result: ``"masks"`` (B, M', H, W) bool, ``"iou_predictions"`` (B, M'),
        ``"low_res_logits"`` (B, M', 4e, 4e)."""
        S = self.image_encoder.img_size
        for i, record in enumerate(batched_input):
            image = record["image"]
            _check_shape(f"batched_input[{i}]['image']", image,
                         f"({self.image_encoder.in_chans}, h, w) with h, w ≤ {S} (long side resized to {S})",
                         image.dim() == 3 and image.shape[0] == self.image_encoder.in_chans
                         and max(image.shape[1:]) <= S)
        images = torch.stack([self.preprocess(record["image"]) for record in batched_input])
        embeddings = self.image_encoder(images)

        outputs = []
        for record, embedding in zip(batched_input, embeddings, strict=True):
            low_res, iou = self.decode(embedding[None], record.get("point_coords"), record.get("point_labels"),
                                       record.get("boxes"), record.get("mask_inputs"), multimask_output)
            masks = self.postprocess_masks(low_res, record["image"].shape[-2:], record["original_size"])
            outputs.append({"masks": masks > self.mask_threshold, "iou_predictions": iou, "low_res_logits": low_res})
        return outputs


# ----------------------------------------------------------------------------------------------------------------
# Weights to and from segment_anything


def sam_from_reference(ref: segment_anything.modeling.Sam) -> Sam:
    """The course's :class:`Sam` with the configuration and weights of a ``segment_anything.modeling.Sam``."""
    model = Sam(SamConfig.from_reference(ref))
    model.load_state_dict(ref.state_dict())
    parameter = next(ref.parameters())
    return model.to(device=parameter.device, dtype=parameter.dtype).train(ref.training)


def sam_to_reference(model: Sam) -> segment_anything.modeling.Sam:
    """A ``segment_anything.modeling.Sam`` with the same configuration and weights, e.g. for ``SamPredictor`` or
    ``SamAutomaticMaskGenerator``. Needs segment_anything and torchvision (segment_anything imports it)."""
    try:
        from segment_anything.modeling import ImageEncoderViT as RefImageEncoder
        from segment_anything.modeling import MaskDecoder as RefMaskDecoder
        from segment_anything.modeling import PromptEncoder as RefPromptEncoder
        from segment_anything.modeling import Sam as RefSam
        from segment_anything.modeling import TwoWayTransformer as RefTwoWayTransformer
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == "torchvision":
            raise ImportError("segment_anything imports torchvision, which is not installed: "
                              "pip install torchvision (the build that matches your torch)") from error
        raise ImportError("sam_to_reference needs Meta's segment_anything: pip install segment-anything") from error
    c, e = model.config, model.config.image_embedding_size
    ref = RefSam(
        image_encoder=RefImageEncoder(
            img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.encoder_embed_dim,
            depth=c.encoder_depth, num_heads=c.encoder_num_heads, mlp_ratio=c.encoder_mlp_ratio,
            out_chans=c.prompt_embed_dim, qkv_bias=c.encoder_qkv_bias,
            norm_layer=partial(nn.LayerNorm, eps=c.encoder_norm_eps), use_abs_pos=c.encoder_use_abs_pos,
            use_rel_pos=c.encoder_use_rel_pos, window_size=c.encoder_window_size,
            global_attn_indexes=c.encoder_global_attn_indexes),
        prompt_encoder=RefPromptEncoder(embed_dim=c.prompt_embed_dim, image_embedding_size=(e, e),
                                        input_image_size=(c.img_size, c.img_size), mask_in_chans=c.mask_in_chans),
        mask_decoder=RefMaskDecoder(
            transformer_dim=c.prompt_embed_dim,
            transformer=RefTwoWayTransformer(depth=c.decoder_depth, embedding_dim=c.prompt_embed_dim,
                                             num_heads=c.decoder_num_heads, mlp_dim=c.decoder_mlp_dim,
                                             attention_downsample_rate=c.attention_downsample_rate),
            num_multimask_outputs=c.num_multimask_outputs, iou_head_depth=c.iou_head_depth,
            iou_head_hidden_dim=c.iou_head_hidden_dim),
        pixel_mean=list(c.pixel_mean), pixel_std=list(c.pixel_std))
    ref.load_state_dict(model.state_dict())
    parameter = next(model.parameters())
    return ref.to(device=parameter.device, dtype=parameter.dtype).train(model.training)

