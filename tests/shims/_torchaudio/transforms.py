"""Stand-in for ``torchaudio.transforms`` (tests only; see ``__init__.py``): ``MelSpectrogram`` with torchaudio's
defaults (periodic Hann window, centred reflect-padded STFT, power 2, HTK mel scale, no filter normalisation)."""

import torch
from transformers.audio_utils import mel_filter_bank


class MelSpectrogram(torch.nn.Module):
    """(..., samples) → (..., n_mels, samples // hop_length + 1)."""

    def __init__(self, sample_rate=16000, n_fft=400, win_length=None, hop_length=None, f_min=0.0, f_max=None,
                 pad=0, n_mels=128, window_fn=torch.hann_window, power=2.0, normalized=False, wkwargs=None,
                 center=True, pad_mode="reflect", onesided=None, norm=None, mel_scale="htk"):
        super().__init__()
        if (pad, power, center, pad_mode, norm, mel_scale) != (0, 2.0, True, "reflect", None, "htk"):
            raise NotImplementedError("the test stand-in for torchaudio computes the power-2 HTK mel spectrogram of "
                                      "a centred, reflect-padded STFT only")
        self.n_fft, self.win_length = n_fft, win_length or n_fft
        self.hop_length, self.normalized = hop_length or self.win_length // 2, normalized
        self.register_buffer("window", window_fn(self.win_length, **(wkwargs or {})))
        bank = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=f_min,
                               max_frequency=sample_rate / 2 if f_max is None else f_max, sampling_rate=sample_rate,
                               norm=None, mel_scale="htk")
        self.register_buffer("fb", torch.tensor(bank, dtype=torch.float32))  # (n_fft // 2 + 1, n_mels)

    def forward(self, waveform):
        shape = waveform.shape
        spec = torch.stft(waveform.reshape(-1, shape[-1]), self.n_fft, self.hop_length, self.win_length,
                          self.window, center=True, pad_mode="reflect", return_complex=True)
        if self.normalized:  # torchaudio's normalized=True divides by the window's L2 norm (torch.stft's would not)
            spec = spec / self.window.pow(2).sum().sqrt()
        mel = (spec.abs().pow(2).transpose(-1, -2) @ self.fb).transpose(-1, -2)
        return mel.reshape(*shape[:-1], *mel.shape[-2:])
