"""How Zero-1-to-3 tells the denoiser which object and which viewpoint: two paths into one UNet.

1. "pose-CLIP" (cross-attention): the input view's image embedding e (B, D) is concatenated with the relative pose
   π = [Δθ, sin Δφ, cos Δφ, Δr] (B, 4) and projected back to D by a linear layer W (Zero-1-to-3's ``cc_projection``,
   initialised as the identity on e's part and with zero bias, so the pretrained model first sees the plain CLIP
   embedding). The result is one context token c = W [e; π] (B, 1, D) that every cross-attention layer reads.
2. Concatenation (channels): the input view's latent z_c (B, 4, h, w) is stacked on the noisy latent x_t, so the
   UNet takes 8 channels: [x_t; z_c]. Zero-1-to-3 widened Stable Diffusion's first conv from 4 to 8 input channels
   with the new weights set to zero (:func:`widen_conv_in`), so training starts from the pretrained model.

Classifier-free guidance needs an unconditional model too: training drops conditions at random (Zero-1-to-3's rates,
``uncond = 0.05``): with r ~ U(0, 1), the embedding e is zeroed when r < 0.10 and the latent z_c when
0.05 ≤ r < 0.15, i.e. embedding alone 5 %, both 5 %, latent alone 5 % (:func:`condition_dropout`). The pose stays.
At sampling time Zero-1-to-3's released code forms the unconditional branch differently from training: a zero
latent, and a context token of zeros after the projection (training saw W [0; π], not 0).
``helpers.zero123.model.Zero123.null_context`` offers both.

No CLIP weights can be had offline here: :class:`ImageEncoder`, a small convolutional encoder trained with the
denoiser, stands in for CLIP's image tower. (CLIP brings an embedding learned from 400 million image-text pairs:
what the object is and its semantics; the small encoder learns only what the training renders need.)
"""

from __future__ import annotations

import torch
from torch import nn

from helpers.zero123.camera import check_relative_pose
from helpers.zero123.validate import check_images, check_latents

POSE_DIM = 4  # [Δθ, sin Δφ, cos Δφ, Δr]
DROP_RATE = 0.05  # Zero-1-to-3's `uncond`


class ImageEncoder(nn.Module):
    """The stand-in for CLIP's image encoder: images (B, 3, S, S) in [-1, 1] → embeddings e (B, D).
    Stride-2 convs with GroupNorm and SiLU, then a linear map of the flattened features."""

    def __init__(self, embed_dim: int = 64, channels: tuple[int, ...] = (32, 64, 128), image_size: int = 32,
                 groups: int = 8) -> None:
        super().__init__()
        self.image_size, self.embed_dim = image_size, embed_dim
        layers: list[nn.Module] = []
        c_in, size = 3, image_size
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(groups, c), nn.SiLU()]
            c_in, size = c, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in * size * size, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.image_size, name="the image encoder's input views")
        return self.proj(self.features(images).flatten(1))


class PoseProjection(nn.Module):
    """"pose-CLIP": c = W [e; π] + b, (B, D) and (B, 4) → one context token (B, 1, D). W starts as [I | W_π] with
    W_π PyTorch's default initialisation, b = 0 (Zero-1-to-3's ``cc_projection``)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.proj = nn.Linear(embed_dim + POSE_DIM, embed_dim)
        with torch.no_grad():
            self.proj.weight[:, :embed_dim].copy_(torch.eye(embed_dim))
            self.proj.bias.zero_()

    def forward(self, embedding: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        if embedding.dim() != 2 or embedding.shape[-1] != self.embed_dim:
            raise ValueError(f"image embeddings must have shape (B, {self.embed_dim}), got {tuple(embedding.shape)}")
        check_relative_pose(pose)
        return self.proj(torch.cat([embedding, pose.to(embedding.dtype)], dim=-1))[:, None, :]


def concat_input_latent(noisy_latent: torch.Tensor, input_latent: torch.Tensor) -> torch.Tensor:
    """[x_t; z_c]: (B, L, h, w) and (B, L, h, w) → (B, 2L, h, w), the noisy latent first (Zero-1-to-3's order)."""
    if noisy_latent.dim() != 4:
        raise ValueError(f"the noisy latent must have shape (B, L, h, w), got {tuple(noisy_latent.shape)}")
    check_latents(input_latent, noisy_latent.shape[1], name="the input view's latent")
    if input_latent.shape != noisy_latent.shape:
        raise ValueError(f"the input view's latent {tuple(input_latent.shape)} must have the noisy latent's shape "
                         f"{tuple(noisy_latent.shape)}")
    return torch.cat([noisy_latent, input_latent], dim=1)


def widen_conv_in(conv: nn.Conv2d, extra_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` that takes ``extra_channels`` more input channels, their weights zero: on any input its
    output equals the original conv's on the first channels (how Zero-1-to-3 turns a 4-channel UNet into 8)."""
    wider = nn.Conv2d(conv.in_channels + extra_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, :conv.in_channels].copy_(conv.weight)
        if conv.bias is not None:
            wider.bias.copy_(conv.bias)
    return wider


def condition_dropout(batch_size: int, rate: float = DROP_RATE, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Which examples lose which condition: (drop the embedding, drop the input latent), two (B,) bool masks.
    r ~ U(0, 1): embedding when r < 2·rate, latent when rate ≤ r < 3·rate (each alone ``rate``, both ``rate``)."""
    r = torch.rand(batch_size, generator=generator, device=generator.device if generator else device).to(device)
    return r < 2 * rate, (r >= rate) & (r < 3 * rate)
