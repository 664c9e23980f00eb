"""How good a decoded clip is, and what simpler codecs achieve at the same bitrate.

- SI-SDR (Le Roux et al., 2019): 10 log10(‖αx‖² / ‖αx − x̂‖²) with α = ⟨x̂, x⟩ / ‖x‖² (zero-mean signals): the
  waveform error, blind to overall gain. Higher is better; 0 dB means as much error as signal.
- Mel distance: the mean absolute difference of log-mel spectra in dB, |10 log10 S − 10 log10 Ŝ|, over 64 mel
  bands (window 1024, hop 256), both floored 50 dB below the reference's loudest band: the error a listener hears
  more than the phase. Lower is better.
- Baselines at a bitrate R: μ-law PCM (G.711's companding, μ = 2^b − 1 at b bits a sample) of the clip resampled
  to R / b samples a second, then resampled back. For each clip and each R the best b ∈ 1..8 (by SI-SDR) is
  kept, so the codec meets the strongest of these. Each clip is scaled to its peak first (a few bits of side
  information, not counted).

Shapes: B clips, N samples.
"""

from __future__ import annotations

import math

import torch

from helpers.audiolm.mel import mel_filterbank, mel_spectrogram


def _check_pair(reference: torch.Tensor, estimate: torch.Tensor) -> None:
    if reference.ndim != 2 or reference.shape != estimate.shape:
        raise ValueError(f"expected two (batch, samples) tensors of the same shape, got {tuple(reference.shape)} "
                         f"and {tuple(estimate.shape)}")


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Scale-invariant signal-to-distortion ratio in dB of each clip: (B, N), (B, N) → (B,)."""
    _check_pair(reference, estimate)
    x = reference - reference.mean(-1, keepdim=True)
    y = estimate - estimate.mean(-1, keepdim=True)
    target = (y * x).sum(-1, keepdim=True) / (x.pow(2).sum(-1, keepdim=True) + eps) * x
    return 10 * torch.log10(target.pow(2).sum(-1) / ((y - target).pow(2).sum(-1) + eps) + eps)


def mel_distance(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int = 16000, n_fft: int = 1024,
                 hop: int = 256, n_mels: int = 64, top_db: float = 50.0) -> torch.Tensor:
    """Mean |log-mel difference| in dB of each clip: (B, N), (B, N) → (B,). Both spectra are floored ``top_db``
    below the reference's loudest band, so that noise far below what sounds does not dominate."""
    _check_pair(reference, estimate)
    fb = mel_filterbank(sample_rate, n_fft, n_mels).to(reference)
    window = torch.hann_window(n_fft).to(reference)
    a, b = (10 * torch.log10(mel_spectrogram(x, fb, window, n_fft, hop) + 1e-12) for x in (reference, estimate))
    floor = a.amax(dim=(-2, -1), keepdim=True) - top_db
    return (a.maximum(floor) - b.maximum(floor)).abs().mean(dim=(-2, -1))


def mu_law(x: torch.Tensor, bits: int) -> torch.Tensor:
    """μ-law companding and uniform quantisation to 2^b levels, then back: x in [−1, 1] → x̃ (same shape)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"expected 1 to 16 bits a sample, got {bits}")
    mu = 2**bits - 1
    y = torch.sign(x) * torch.log1p(mu * x.abs().clamp(max=1)) / math.log1p(mu)  # [−1, 1]
    levels = 2**bits
    index = ((y + 1) / 2 * levels).floor().clamp(0, levels - 1)  # b-bit code
    y = (index + 0.5) / levels * 2 - 1  # the middle of its interval
    return torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu


def resample(x: torch.Tensor, length: int) -> torch.Tensor:
    """Band-limited resampling by the Fourier series (``scipy.signal.resample``'s method): (B, N) → (B, length),
    the same duration at length / N times the sample rate; frequencies above the lower Nyquist limit are dropped."""
    n_in = x.shape[-1]
    shared = min(n_in, length)
    spectrum = torch.fft.rfft(x)[..., : shared // 2 + 1].clone()
    if shared % 2 == 0 and length != n_in:  # the unpaired bin at the shared Nyquist frequency
        spectrum[..., shared // 2] *= 2 if length < n_in else 0.5
    return torch.fft.irfft(spectrum, n=length) * (length / n_in)


def pcm_baseline(audio: torch.Tensor, bitrate: float, bits: int, sample_rate: int = 16000) -> torch.Tensor:
    """``audio`` (B, N) sent at ``bitrate`` bits/s as b-bit μ-law PCM at bitrate / b samples a second, decoded."""
    if audio.ndim != 2:
        raise ValueError(f"expected audio of shape (batch, samples), got {tuple(audio.shape)}")
    n = audio.shape[-1]
    low_samples = max(2, round(n / sample_rate * bitrate / bits))
    peak = audio.abs().amax(-1, keepdim=True).clamp(min=1e-9)
    return resample(mu_law(resample(audio / peak, low_samples), bits), n) * peak


def best_pcm_baseline(audio: torch.Tensor, bitrate: float, sample_rate: int = 16000, max_bits: int = 8
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each clip the b ∈ 1..max_bits whose :func:`pcm_baseline` has the highest SI-SDR at ``bitrate``:
    → (decoded audio (B, N), bits (B,))."""
    trials = torch.stack([pcm_baseline(audio, bitrate, b, sample_rate) for b in range(1, max_bits + 1)])
    scores = torch.stack([si_sdr(audio, t) for t in trials])  # (bits, B)
    best = scores.argmax(0)
    return trials[best, torch.arange(audio.shape[0])], best + 1
