"""Zero-1-to-3's denoiser, whole: ε_θ(x_t, t, e(x_c), z_c, π), and its training loss.

The pieces come from their own modules: the UNet (``unet``), the stand-in image encoder, pose-CLIP and the latent
concatenation (``conditioning``), the noise schedule and guidance (``scheduler``). Symbols: x_t the noisy target
latent (B, L, h, w), t the step, x_c the input view (B, 3, S, S), e(x_c) its embedding (B, D), z_c its latent
(B, L, h, w), π the relative pose (B, 4), c = W [e; π] the context token (B, 1, D).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from helpers.zero123.conditioning import DROP_RATE, ImageEncoder, PoseProjection, concat_input_latent, condition_dropout
from helpers.zero123.scheduler import NoiseSchedule, classifier_free_guidance
from helpers.zero123.unet import UNet

NULL_CONTEXTS = ("training", "zero123")
LOSS_WEIGHTINGS = ("epsilon", "min-snr", "truncated-snr")


class Zero123(nn.Module):
    """The whole denoiser ε_θ(x_t, t, e(x_c), z_c, π): image encoder, pose projection and an 8-channel UNet."""

    def __init__(self, unet: UNet, image_encoder: ImageEncoder) -> None:
        super().__init__()
        c = unet.config
        if image_encoder.embed_dim != c.cross_attention_dim:
            raise ValueError(f"the image embedding's width {image_encoder.embed_dim} must equal the UNet's "
                             f"cross_attention_dim {c.cross_attention_dim}")
        if c.in_channels != 2 * c.out_channels:
            raise ValueError(f"the UNet must take the noisy latent and the input view's latent (in_channels = "
                             f"2 × out_channels), got in_channels={c.in_channels}, out_channels={c.out_channels}")
        self.unet, self.image_encoder = unet, image_encoder
        self.projection = PoseProjection(c.cross_attention_dim)

    def context(self, input_image: torch.Tensor, pose: torch.Tensor,
                drop_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """c = W [e; π] (B, 1, D), with e = 0 where ``drop_embedding`` (B,) is true."""
        embedding = self.image_encoder(input_image)
        if drop_embedding is not None:
            embedding = embedding * (~drop_embedding).to(embedding.dtype)[:, None]
        return self.projection(embedding, pose)

    def null_context(self, pose: torch.Tensor, kind: str = "training") -> torch.Tensor:
        """The unconditional context token (B, 1, D): ``training`` W [0; π], what dropout fed the model;
        ``zero123`` zeros, what Zero-1-to-3's sampling code feeds it."""
        if kind == "zero123":
            return pose.new_zeros(pose.shape[0], 1, self.projection.embed_dim)
        if kind == "training":
            return self.projection(pose.new_zeros(pose.shape[0], self.projection.embed_dim), pose)
        raise ValueError(f"kind must be one of {NULL_CONTEXTS}, got {kind!r}")

    def forward(self, noisy_latent: torch.Tensor, timestep: torch.Tensor | float, context: torch.Tensor,
                input_latent: torch.Tensor) -> torch.Tensor:
        """ε_θ([x_t; z_c], t, c): (B, L, h, w) → (B, L, h, w)."""
        return self.unet(concat_input_latent(noisy_latent, input_latent), timestep, context)

    def guided_noise(self, noisy_latent: torch.Tensor, timestep: torch.Tensor | float, context: torch.Tensor,
                     input_latent: torch.Tensor, null_context: torch.Tensor, scale: float) -> torch.Tensor:
        """ε̃ = ε_θ(x_t, ∅) + s (ε_θ(x_t, c, z_c) − ε_θ(x_t, ∅)), ∅ = (``null_context``, zero latent), both branches
        in one batch of 2B; s = 1 runs the conditional branch alone."""
        if scale == 1.0:
            return self(noisy_latent, timestep, context, input_latent)
        both = self(torch.cat([noisy_latent, noisy_latent]), timestep, torch.cat([null_context, context]),
                    torch.cat([torch.zeros_like(input_latent), input_latent]))
        unconditional, conditional = both.chunk(2)
        return classifier_free_guidance(unconditional, conditional, scale)

    def denoiser(self, input_image: torch.Tensor, input_latent: torch.Tensor, pose: torch.Tensor,
                 scale: float = 3.0, null: str = "training") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """ε̃(x, t) for :func:`helpers.zero123.scheduler.sample`: the conditions are encoded once."""
        context, null_context = self.context(input_image, pose), self.null_context(pose, null)
        return lambda x, t: self.guided_noise(x, t, context, input_latent, null_context, scale)


def loss_weights(scheduler: NoiseSchedule, kind: str = "epsilon", gamma: float = 5.0) -> torch.Tensor:
    """w_t (T,) that multiplies the ε loss at step t. With SNR(t) = ᾱ_t / (1 − ᾱ_t), the ε loss is SNR(t) times the
    error on x_0, so each choice sets how much a mistake about the clean latent costs at each step:

    - ``epsilon``: w = 1, latent diffusion's (and Zero-1-to-3's) simple loss; x_0 errors weigh SNR(t), next to
      nothing at the noisy steps where the conditions decide what is drawn;
    - ``min-snr``: w = min(SNR, γ) / SNR (Hang et al., 2023): x_0 errors weigh min(SNR, γ), the clean steps capped;
    - ``truncated-snr``: w = max(SNR, 1) / SNR (Salimans & Ho, 2022): x_0 errors weigh at least 1 at every step.
    """
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    if kind == "epsilon":
        return torch.ones_like(snr)
    if kind == "min-snr":
        return snr.clamp(max=gamma) / snr
    if kind == "truncated-snr":
        return snr.clamp(min=1.0) / snr
    raise ValueError(f"kind must be one of {LOSS_WEIGHTINGS}, got {kind!r}")


def denoising_loss(model: Zero123, scheduler: NoiseSchedule, target_latent: torch.Tensor, input_image: torch.Tensor,
                   input_latent: torch.Tensor, pose: torch.Tensor, drop_rate: float = DROP_RATE,
                   generator: torch.Generator | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Latent diffusion's loss ‖ε − ε_θ(x_t, t, c, z_c)‖² with t ~ U{0 … T − 1}, ε ~ N(0, I), x_t = q(x_t | z), and
    conditions dropped at random; each example's squared error weighted by ``weights[t]`` (:func:`loss_weights`;
    None: 1). target_latent z (B, L, h, w), scaled; input_image (B, 3, S, S); input_latent z_c (B, L, h, w);
    pose π (B, 4). Draws, in this order: t, ε, the dropout draws."""
    B, device = target_latent.shape[0], target_latent.device
    gen_device = generator.device if generator is not None else device
    t = torch.randint(0, scheduler.num_train_timesteps, (B,), generator=generator, device=gen_device).to(device)
    noise = torch.randn(target_latent.shape, generator=generator, device=gen_device).to(device)
    drop_embedding, drop_latent = condition_dropout(B, drop_rate, generator, device)
    context = model.context(input_image, pose, drop_embedding)
    kept_latent = input_latent * (~drop_latent).to(input_latent.dtype)[:, None, None, None]
    prediction = model(scheduler.add_noise(target_latent, noise, t), t, context, kept_latent)
    if weights is None:
        return F.mse_loss(prediction, noise)
    per_example = (prediction - noise).pow(2).flatten(1).mean(1)
    return (weights.to(device, per_example.dtype)[t] * per_example).mean()
