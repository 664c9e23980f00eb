"""Zero-1-to-3 (Liu et al., 2023): a latent diffusion model that draws an object from a new viewpoint, given one view
of it and the relative camera pose. Start with ``model.py`` (the whole denoiser and its loss); its parts and the
names below are importable from here too (``from helpers.zero123 import Zero123, UNet, DDIM``).

- ``scheduler``: the forward process, DDPM and DDIM steps, classifier-free guidance, the sampling loop.
- ``unet``: the conditional UNet ε_θ(x_t, t, c). ``layers``: pieces it shares with the autoencoder.
- ``autoencoder``: the KL autoencoder (latent diffusion's first stage) and its latent scale.
- ``camera``: spherical cameras, the relative pose [Δθ, sin Δφ, cos Δφ, Δr], Zero-1-to-3's camera sampling.
- ``conditioning``: the stand-in image encoder, pose-CLIP, the concatenated input latent, condition dropout.
- ``validate``: one-sentence checks of images and latents.
- ``views`` (the data: objects rendered from 12 cameras each), ``metrics`` (PSNR, SSIM, on the object's box too,
  sharpness) and ``runs`` (Lab 5's training and evaluation; only notebooks and scripts import it).
Each part equals its ``diffusers`` counterpart (``*_from_diffusers`` / ``*_to_diffusers``).
"""

from helpers.zero123.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    Posterior,
    autoencoder_from_diffusers,
    autoencoder_loss,
    autoencoder_to_diffusers,
    latent_scale_factor,
)
from helpers.zero123.camera import (
    FOV_DEGREES,
    RADIUS_RANGE,
    camera_from_extrinsics,
    relative_pose,
    sample_cameras,
    to_cartesian,
    to_spherical,
)
from helpers.zero123.conditioning import (
    ImageEncoder,
    PoseProjection,
    concat_input_latent,
    condition_dropout,
    widen_conv_in,
)
from helpers.zero123.model import Zero123, denoising_loss, loss_weights
from helpers.zero123.scheduler import (
    DDIM,
    DDPM,
    ZERO123,
    ZERO123_DDIM,
    NoiseSchedule,
    classifier_free_guidance,
    sample,
    scheduler_from_diffusers,
    scheduler_to_diffusers,
)
from helpers.zero123.unet import UNet, UNetConfig, unet_from_diffusers, unet_to_diffusers

__all__ = [
    "DDIM", "DDPM", "FOV_DEGREES", "RADIUS_RANGE", "ZERO123", "ZERO123_DDIM", "Autoencoder", "AutoencoderConfig",
    "ImageEncoder", "NoiseSchedule", "PoseProjection", "Posterior", "UNet", "UNetConfig", "Zero123",
    "autoencoder_from_diffusers", "autoencoder_loss", "autoencoder_to_diffusers", "camera_from_extrinsics",
    "classifier_free_guidance", "concat_input_latent", "condition_dropout", "denoising_loss", "latent_scale_factor",
    "loss_weights",
    "relative_pose", "sample", "sample_cameras", "scheduler_from_diffusers", "scheduler_to_diffusers",
    "to_cartesian", "to_spherical", "unet_from_diffusers", "unet_to_diffusers", "widen_conv_in",
]
