"""Mel spectrograms as torchaudio's ``MelSpectrogram`` computes them with its defaults (periodic Hann window, centred
reflect-padded STFT, power 2, HTK mel scale, unnormalised triangular filters), written here so that the course needs
no torchaudio. Shapes: B batch, N samples, F = n_fft / 2 + 1 frequency bins, M mel bands, T frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def hz_to_mel(hz: float) -> float:
    """The HTK mel scale: m = 2595 log10(1 + f / 700)."""
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular filters, equally spaced on the HTK mel scale, over the n_fft // 2 + 1 STFT bins. → (F, M).

    Filter m rises linearly from centre m−1 to centre m and falls to centre m+1 (centres in Hz, unnormalised)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    bins = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)  # the frequency of each STFT bin, Hz
    centres_mel = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    centres = 700.0 * (10.0 ** (centres_mel / 2595.0) - 1.0)  # (M + 2,) Hz: the edges and the M centres
    width = centres.diff()  # (M + 1,)
    offset = centres[None, :] - bins[:, None]  # (F, M + 2): centre minus bin frequency
    rising = -offset[:, :-2] / width[:-1]
    falling = offset[:, 2:] / width[1:]
    return torch.minimum(rising, falling).clamp(min=0)


def mel_spectrogram(audio: torch.Tensor, filterbank: torch.Tensor, window: torch.Tensor, n_fft: int,
                    hop_length: int, normalized: bool = False) -> torch.Tensor:
    """Power mel spectrogram of a centred, reflect-padded STFT: (..., N) → (..., M, T), T = N // hop + 1.

    ``normalized`` divides the STFT by the window's L2 norm (torchaudio's ``normalized=True``)."""
    batch_shape = audio.shape[:-1]
    spec = torch.stft(audio.reshape(-1, audio.shape[-1]), n_fft, hop_length=hop_length, win_length=window.shape[0],
                      window=window, center=True, pad_mode="reflect", return_complex=True)
    if normalized:
        spec = spec / window.pow(2).sum().sqrt()
    power = spec.abs().pow(2)  # (B, F, T)
    mel = (power.transpose(-1, -2) @ filterbank).transpose(-1, -2)
    return mel.reshape(*batch_shape, *mel.shape[-2:])


class MultiScaleMel(torch.nn.Module):
    """The mel spectrograms at window lengths 2^p for p in ``powers`` (hop = window / 4), as SoundStream sets them:
    n_fft = max(``n_fft``, window), ``n_mels`` bands each."""

    def __init__(self, sample_rate: int, powers: Sequence[int] = tuple(range(6, 12)), n_fft: int = 512,
                 n_mels: int = 64, normalized: bool = False) -> None:
        super().__init__()
        self.windows = [2**p for p in powers]
        self.n_ffts = [max(n_fft, w) for w in self.windows]
        self.normalized = normalized
        for i, (w, nf) in enumerate(zip(self.windows, self.n_ffts, strict=True)):
            self.register_buffer(f"window{i}", torch.hann_window(w), persistent=False)
            self.register_buffer(f"filters{i}", mel_filterbank(sample_rate, nf, n_mels), persistent=False)

    def forward(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """(..., N) → one (..., M, T_s) power mel spectrogram per scale."""
        scales = enumerate(zip(self.windows, self.n_ffts, strict=True))
        return [mel_spectrogram(audio, getattr(self, f"filters{i}"), getattr(self, f"window{i}"), nf, w // 4,
                                self.normalized) for i, (w, nf) in scales]
