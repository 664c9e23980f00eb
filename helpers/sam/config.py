"""SAM's sizes in one place (:class:`SamConfig`) and the shape check every box uses.

Symbols: S = input side (``img_size``, 1024), p = patch size (16), e = S / p (side of the image embedding, 64),
D = ViT width (``encoder_embed_dim``), C = prompt/decoder width (``prompt_embed_dim``, 256), h = heads,
d_h = head size. Shapes: B images or prompts, N tokens, M = masks per prompt (1 + ``num_multimask_outputs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import segment_anything


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


def check_shape(name: str, tensor: torch.Tensor, expected: str, ok: bool) -> None:
    """Raise a ValueError that names the expected shape when ``ok`` is False."""
    if not ok:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(tensor.shape)}")
