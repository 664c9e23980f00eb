"""The first stage of latent diffusion: a KL-regularised autoencoder (Rombach et al., 2022, §3).

The encoder E maps an image x (B, 3, H, W) in [-1, 1] to the moments of a diagonal Gaussian q(z | x) =
N(μ, σ²) over latents z (B, L, H/f, W/f), f = 2^(levels − 1); the decoder D maps z back to an image. Training
minimises a reconstruction loss plus a small weight times KL(q(z | x) ‖ N(0, I)), which keeps the latent space
smooth and its scale bounded without squeezing information out of it. Diffusion then runs on z · s, where the
scale s = 1 / std(z) makes the latents unit-variance: the noise schedule assumes data of about that scale.
(Stable Diffusion's s = 0.18215 was measured on its own autoencoder; a new autoencoder needs its own.)

Same structure and parameter names as ``diffusers``' ``AutoencoderKL`` (down ``DownEncoderBlock2D``, up
``UpDecoderBlock2D``): residual blocks without a time embedding and with GroupNorm ε = 1e-6, a one-head
self-attention in the middle, and downsampling that pads only the right and bottom edge before a stride-2 conv.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from helpers.zero123.layers import Attention, Downsample, MidBlock, ResBlock, Upsample, rename_state_dict
from helpers.zero123.validate import check_images, check_latents

if TYPE_CHECKING:
    import diffusers

NORM_EPS = 1e-6
LOGVAR_RANGE = (-30.0, 20.0)  # log σ² is clamped to this range (as latent diffusion does) before exp


@dataclass
class AutoencoderConfig:
    in_channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 64)  # one entry per resolution
    layers_per_block: int = 1  # residual blocks per encoder level (the decoder has one more)
    latent_channels: int = 4  # L
    norm_num_groups: int = 8
    sample_size: int = 32  # H = W of the images

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        if self.sample_size % self.downsampling_factor:
            raise ValueError(f"sample_size={self.sample_size} must be divisible by the downsampling factor "
                             f"{self.downsampling_factor}")

    @property
    def downsampling_factor(self) -> int:
        """f: each level but the last halves H and W."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        """h = w = H / f."""
        return self.sample_size // self.downsampling_factor


class Posterior:
    """q(z | x) = N(μ, diag σ²), from the encoder's 2L channels [μ, log σ²] (B, 2L, h, w)."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = μ + σ ⊙ ε, ε ~ N(0, I) (the reparameterisation trick: gradients reach μ and σ)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        """μ, the most likely latent (Zero-1-to-3 encodes its input view this way)."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²), summed over each latent → (B,)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=[1, 2, 3])


class VAEAttention(Attention):
    """One-head self-attention over the h·w positions of a feature map, GroupNorm first, plus the input."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__(channels, heads=1, bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.group_norm(x).view(B, C, H * W).transpose(1, 2)
        return x + super().forward(h).transpose(1, 2).reshape(B, C, H, W)


class Stage(nn.Module):
    """Residual blocks at one resolution, then an (asymmetric) downsampler, an upsampler or nothing."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, resample: str | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(in_channels if i == 0 else out_channels, out_channels, None, groups,
                                               NORM_EPS) for i in range(layers)])
        self.downsample = Downsample(out_channels, asymmetric=True) if resample == "down" else None
        self.upsample = Upsample(out_channels) if resample == "up" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return self.upsample(x) if self.upsample is not None else x


class Encoder(nn.Module):
    """x (B, 3, H, W) → [μ, log σ²] (B, 2L, H/f, W/f)."""

    def __init__(self, c: AutoencoderConfig) -> None:
        super().__init__()
        channels, levels = c.block_out_channels, len(c.block_out_channels)
        self.conv_in = nn.Conv2d(c.in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            Stage(channels[max(i - 1, 0)], channels[i], c.layers_per_block, c.norm_num_groups,
                  "down" if i < levels - 1 else None) for i in range(levels)])
        self.mid_block = MidBlock(channels[-1], VAEAttention(channels[-1], c.norm_num_groups), None,
                                  c.norm_num_groups, NORM_EPS)
        self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, channels[-1], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(channels[-1], 2 * c.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for stage in self.down_blocks:
            x = stage(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    """z (B, L, h, w) → x̂ (B, 3, h·f, w·f)."""

    def __init__(self, c: AutoencoderConfig) -> None:
        super().__init__()
        channels, levels = c.block_out_channels[::-1], len(c.block_out_channels)
        self.conv_in = nn.Conv2d(c.latent_channels, channels[0], 3, padding=1)
        self.mid_block = MidBlock(channels[0], VAEAttention(channels[0], c.norm_num_groups), None,
                                  c.norm_num_groups, NORM_EPS)
        self.up_blocks = nn.ModuleList([
            Stage(channels[max(i - 1, 0)], channels[i], c.layers_per_block + 1, c.norm_num_groups,
                  "up" if i < levels - 1 else None) for i in range(levels)])
        self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, channels[-1], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(channels[-1], c.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for stage in self.up_blocks:
            x = stage(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Autoencoder(nn.Module):
    """E and D with latent diffusion's 1×1 convs around the latent (``quant_conv``, ``post_quant_conv``)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)

    def encode(self, images: torch.Tensor) -> Posterior:
        """images (B, 3, H, W) in [-1, 1] → q(z | x) over latents (B, L, h, w)."""
        check_images(images, self.config.sample_size, self.config.in_channels)
        return Posterior(self.quant_conv(self.encoder(images)))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, L, h, w) (unscaled: divide by the scale factor first) → images (B, 3, H, W)."""
        check_latents(latents, self.config.latent_channels, self.config.latent_size, "the decoder's latents")
        return self.decoder(self.post_quant_conv(latents))

    def forward(self, images: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, Posterior]:
        """Reconstruct: (x̂, q(z | x)), decoding a sample of q (or its mean)."""
        posterior = self.encode(images)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior


def chroma(images: torch.Tensor) -> torch.Tensor:
    """The colour of each pixel without its grey level: x − mean over the channels, (B, C, H, W)."""
    return images - images.mean(dim=1, keepdim=True)


def autoencoder_loss(model: Autoencoder, images: torch.Tensor, kl_weight: float = 1e-4,
                     generator: torch.Generator | None = None,
                     chroma_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean squared reconstruction error per pixel + ``kl_weight`` · KL per image element (+ ``chroma_weight`` · the
    squared error of the colour alone, :func:`chroma`: a pixel loss learns grey levels long before hues, and a
    perceptual loss, which would weigh colour more, needs pretrained weights). → (loss, its parts)."""
    reconstruction, posterior = model(images, sample_posterior=True, generator=generator)
    mse = F.mse_loss(reconstruction, images)
    kl = posterior.kl().mean() / images[0].numel()
    loss, parts = mse + kl_weight * kl, {"mse": mse.item(), "kl": kl.item()}
    if chroma_weight:
        colour = F.mse_loss(chroma(reconstruction), chroma(images))
        loss, parts["chroma"] = loss + chroma_weight * colour, colour.item()
    return loss, parts


@torch.no_grad()
def latent_scale_factor(model: Autoencoder, images: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """s = 1 / std(z) over a batch of sampled latents z ~ q(z | x), as latent diffusion measures it."""
    return 1.0 / model.encode(images).sample(generator).flatten().std().item()


# ----------------------------------------------------------------------------------------------------------------
# diffusers


def autoencoder_from_diffusers(vae: diffusers.AutoencoderKL) -> Autoencoder:
    """The course's :class:`Autoencoder` with the configuration and weights of a ``diffusers`` ``AutoencoderKL``."""
    c = vae.config
    expected = dict(act_fn="silu", use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True)
    for key, value in expected.items():
        if c.get(key, value) != value:
            raise ValueError(f"the course's autoencoder supports {key}={value!r} only, got {c.get(key)!r}")
    if set(c.down_block_types) != {"DownEncoderBlock2D"} or set(c.up_block_types) != {"UpDecoderBlock2D"}:
        raise ValueError("the course's autoencoder has DownEncoderBlock2D and UpDecoderBlock2D blocks only")
    sample_size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
    model = Autoencoder(AutoencoderConfig(in_channels=c.in_channels, block_out_channels=tuple(c.block_out_channels),
                                          layers_per_block=c.layers_per_block, latent_channels=c.latent_channels,
                                          norm_num_groups=c.norm_num_groups, sample_size=sample_size))
    if c.out_channels != c.in_channels:
        raise ValueError(f"out_channels={c.out_channels} must equal in_channels={c.in_channels}")
    model.load_state_dict(rename_state_dict(vae.state_dict()), strict=True)
    return model.to(next(vae.parameters()).device)


def autoencoder_to_diffusers(model: Autoencoder, scaling_factor: float | None = None) -> diffusers.AutoencoderKL:
    """A ``diffusers`` ``AutoencoderKL`` with the course's configuration and weights (and its latent scale)."""
    import diffusers

    c = model.config
    levels = len(c.block_out_channels)
    vae = diffusers.AutoencoderKL(
        in_channels=c.in_channels, out_channels=c.in_channels, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=c.block_out_channels,
        layers_per_block=c.layers_per_block, latent_channels=c.latent_channels, norm_num_groups=c.norm_num_groups,
        sample_size=c.sample_size, **({} if scaling_factor is None else {"scaling_factor": scaling_factor}))
    vae.load_state_dict(rename_state_dict(model.state_dict(), to_course=False), strict=True)
    return vae.to(next(model.parameters()).device)
