"""SoundStream's generator losses: time-domain reconstruction, multi-scale mel reconstruction, hinge and feature losses.

Eq. (4)–(5) of the SoundStream paper (Zeghidour et al., 2021), as ``audiolm_pytorch.SoundStream`` computes them:
for each window length s = 2^6 … 2^11, with hop s/4 and α_s = sqrt(s/2),

    L_rec = Σ_s  Σ_t ‖S_t^s(x) − S_t^s(x̂)‖_1  +  α_s Σ_t ‖log S_t^s(x) − log S_t^s(x̂)‖_2

(sums over mel bins, means over frames and the batch), S^s the power mel spectrogram. The mel spectrogram is
torchaudio's ``MelSpectrogram`` with its defaults (written here so the course needs no torchaudio).
Shapes: B batch, N samples, F frequency bins, M mel bands, T frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from helpers.audiolm.discriminator import Discriminators
from helpers.audiolm.mel import MultiScaleMel


def multiscale_mel_loss(mels: MultiScaleMel, audio: torch.Tensor, recon: torch.Tensor,
                        eps: float = 1e-20) -> torch.Tensor:
    """L_rec of eq. (5): Σ_s [ mean_t ‖S − Ŝ‖_1 + α_s mean_t ‖log S − log Ŝ‖_2 ], α_s = sqrt(s / 2)."""
    loss = audio.new_zeros(())
    for window, real, fake in zip(mels.windows, mels(audio), mels(recon), strict=True):
        l1 = (real - fake).abs().sum(dim=-2).mean()
        log_l2 = torch.linalg.vector_norm(real.clamp(min=eps).log() - fake.clamp(min=eps).log(), dim=-2).mean()
        loss = loss + l1 + math.sqrt(window / 2) * log_l2
    return loss


def log_mel_loss(mels: MultiScaleMel, audio: torch.Tensor, recon: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean over the scales of mean |log(S + ε) − log(Ŝ + ε)|: the spectral term of the course's reconstruction loss
    (a plain L1 of log-mel spectra, which trains faster at small scale than eq. (5)'s power-domain L1)."""
    pairs = zip(mels(audio), mels(recon), strict=True)
    return torch.stack([((a + eps).log() - (b + eps).log()).abs().mean() for a, b in pairs]).mean()


def reconstruction_loss(mels: MultiScaleMel, audio: torch.Tensor, recon: torch.Tensor, commitment: torch.Tensor,
                        wave_weight: float = 100.0) -> dict[str, torch.Tensor]:
    """The course's codec loss without discriminators (Lab 4): wave_weight · L1(x̂, x) + log-mel L1 + Σ_q
    commitment. The large weight on the waveform term is what makes the phase, and so the SI-SDR, improve within a
    few hundred steps; the log-mel term takes care of the quiet bands. → {"wave", "mel", "commitment", "total"}."""
    losses = {"wave": F.l1_loss(recon, audio), "mel": log_mel_loss(mels, audio, recon),
              "commitment": commitment.sum()}
    losses["total"] = wave_weight * losses["wave"] + losses["mel"] + losses["commitment"]
    return losses


def hinge_discriminator_loss(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: mean(relu(1 + D(x̂))) + mean(relu(1 − D(x))), as one mean over the batch."""
    return (F.relu(1 + fake_logits) + F.relu(1 - real_logits)).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial loss: −mean(D(x̂))."""
    return -fake_logits.mean()


def feature_matching_loss(real_features: Sequence[torch.Tensor], fake_features: Sequence[torch.Tensor]) -> list:
    """L1 distance between the discriminator's intermediate activations on real and on decoded audio, one per layer
    (complex activations: mean modulus of the difference)."""
    return [F.l1_loss(r, f) for r, f in zip(real_features, fake_features, strict=True)]


@dataclass
class LossWeights:
    """SoundStream's weights of its generator losses (``audiolm_pytorch`` defaults)."""

    recon: float = 1.0  # time-domain MSE
    multi_spectral: float = 1e-5  # L_rec, eq. (5)
    adversarial: float = 1.0
    feature: float = 100.0


def generator_losses(discriminators: Discriminators, mels: MultiScaleMel, audio: torch.Tensor, recon: torch.Tensor,
                     commit_losses: torch.Tensor, weights: LossWeights | None = None) -> dict[str, torch.Tensor]:
    """The codec's losses for audio (B, N) and its reconstruction (B, N), as ``SoundStream.forward`` combines them.

    adversarial: mean over the discriminators of −mean D(x̂); feature: mean over every discriminator layer of
    ‖D_l(x) − D_l(x̂)‖_1; total = Σ weight · loss + Σ_q commitment loss."""
    weights = weights or LossWeights()
    real, fake = discriminators(audio), discriminators(recon)
    losses = {
        "recon": F.mse_loss(audio, recon),
        "multi_spectral": multiscale_mel_loss(mels, audio, recon),
        "adversarial": torch.stack([hinge_generator_loss(logits) for logits, _ in fake]).mean(),
        "feature": torch.stack([loss for (_, r), (_, f) in zip(real, fake, strict=True)
                                for loss in feature_matching_loss(r, f)]).mean(),
        "commitment": commit_losses.sum(),
    }
    losses["total"] = sum(getattr(weights, name) * losses[name] for name in
                          ("recon", "multi_spectral", "adversarial", "feature")) + losses["commitment"]
    return losses


def discriminator_loss(discriminators: Discriminators, audio: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """The discriminators' hinge loss on real audio and detached reconstructions, as SoundStream sums it: the STFT
    discriminator's plus the mean of the waveform discriminators'."""
    real, fake = discriminators(audio), discriminators(recon.detach())
    per_discriminator = [hinge_discriminator_loss(f, r) for (f, _), (r, _) in zip(fake, real, strict=True)]
    return per_discriminator[0] + torch.stack(per_discriminator[1:]).mean()
