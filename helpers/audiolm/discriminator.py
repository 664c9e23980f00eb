"""SoundStream's discriminators: waveform discriminators at three scales and a complex-valued STFT discriminator.

- Waveform discriminator (MelGAN's, Kumar et al., 2019): a conv of kernel 15, then strided grouped convs (kernel 41,
  stride 4) with LeakyReLU(0.1), then two convs to one logit per position. Scales 1, 1/2, 1/4 of the audio
  (average pooling of kernel 4, stride 2 between them).
- STFT discriminator (SoundStream, Fig. 4): the complex STFT (window W = 1024, hop H = 256) goes through complex
  convolutions with residual units (ModReLU between two 3 × 3 convs) and (frequency, time) strides, down to one
  complex logit per position whose modulus is the score.

Each returns its logits and the activations of its layers (for the feature-matching loss). Defaults are
``audiolm_pytorch.SoundStream``'s. Shapes: B batch, N samples, F frequency bins, T frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from helpers.audiolm.weights import copy_in_order

if TYPE_CHECKING:
    import audiolm_pytorch


class WaveDiscriminator(nn.Module):
    """(B, 1, N) → (logits (B, 1, N / 4^L), [activations of the L strided layers])."""

    def __init__(self, channels: int = 16, layers: int = 4, groups: Sequence[int] = (4, 16, 64, 256),
                 max_channels: int = 1024) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, channels, 15, padding=7)
        widths = [channels]
        for _ in range(layers):
            widths.append(min(widths[-1] * 4, max_channels))
        self.layers = nn.ModuleList(nn.Conv1d(a, b, 41, stride=4, padding=20, groups=g)
                                    for a, b, g in zip(widths[:-1], widths[1:], groups[:layers], strict=True))
        self.head = nn.Conv1d(widths[-1], widths[-1], 5, padding=2)
        self.logits = nn.Conv1d(widths[-1], 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.1)
            features.append(x)
        return self.logits(F.leaky_relu(self.head(x), 0.1)), features


class ComplexConv2d(nn.Module):
    """A 2-D convolution with complex weights, stored as real tensors (..., 2) holding (real, imaginary)."""

    def __init__(self, chan_in: int, chan_out: int, kernel: int | tuple[int, int], stride: int | tuple = 1,
                 padding: int | tuple = 0) -> None:
        super().__init__()
        conv = nn.Conv2d(chan_in, chan_out, kernel, dtype=torch.complex64)  # PyTorch's initialisation
        self.weight = nn.Parameter(torch.view_as_real(conv.weight.detach()).clone())
        self.bias = nn.Parameter(torch.view_as_real(conv.bias.detach()).clone())
        self.stride, self.padding = stride, padding

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        weight, bias = torch.view_as_complex(self.weight), torch.view_as_complex(self.bias)
        return F.conv2d(z.to(weight.dtype), weight, bias, stride=self.stride, padding=self.padding)


class ModReLU(nn.Module):
    """ReLU on the modulus, phase kept: relu(|z| + b) · e^{i arg z} (Arjovsky et al., 2016)."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(z.abs() + self.b) * torch.exp(1j * z.angle())


class ComplexResidualBlock(nn.Module):
    """z + conv(ModReLU(conv(z))) at C_in channels, then a strided complex conv to C_out channels."""

    def __init__(self, chan_in: int, chan_out: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = ComplexConv2d(chan_in, chan_in, 3, padding=1)
        self.act = ModReLU()
        self.conv2 = ComplexConv2d(chan_in, chan_in, 3, padding=1)
        kernel = tuple(s + 2 for s in stride)
        self.down = ComplexConv2d(chan_in, chan_out, kernel, stride=stride, padding=tuple(k // 2 for k in kernel))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.down(z + self.conv2(self.act(self.conv1(z))))


class STFTDiscriminator(nn.Module):
    """(B, 1, N) → (|logits| (B, 1, F', T'), [complex activations after the stem and each block])."""

    def __init__(self, channels: int = 32, strides: Sequence[tuple[int, int]] = ((1, 2), (2, 2)) * 3,
                 channel_mults: Sequence[int] = (1, 2, 4, 4, 8, 8), n_fft: int = 1024, hop_length: int = 256,
                 win_length: int = 1024, normalized: bool = False) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length, self.normalized = n_fft, hop_length, win_length, normalized
        widths = [channels] + [channels * m for m in channel_mults]
        self.stem = ComplexConv2d(1, channels, 7, padding=3)
        self.blocks = nn.ModuleList(ComplexResidualBlock(a, b, tuple(s))
                                    for s, a, b in zip(strides, widths[:-1], widths[1:], strict=True))
        self.logits = ComplexConv2d(widths[-1], 1, (16, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        window = torch.hann_window(self.win_length, device=x.device)
        z = torch.stft(x[:, 0], self.n_fft, hop_length=self.hop_length, win_length=self.win_length, window=window,
                       normalized=self.normalized, return_complex=True)[:, None]  # (B, 1, F, T)
        features = [z := self.stem(z)]
        for block in self.blocks:
            features.append(z := block(z))
        return self.logits(z).abs(), features


class Discriminators(nn.Module):
    """The STFT discriminator and one waveform discriminator per scale (1, 1/2, 1/4 …)."""

    def __init__(self, scales: int = 3, wave: dict | None = None, stft: dict | None = None) -> None:
        super().__init__()
        self.stft = STFTDiscriminator(**(stft or {}))
        self.waves = nn.ModuleList(WaveDiscriminator(**(wave or {})) for _ in range(scales))

    def forward(self, audio: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """audio (B, N) → [(logits, features)] for the STFT discriminator, then each scale."""
        if audio.ndim != 2:
            raise ValueError(f"expected audio of shape (batch, samples), got {tuple(audio.shape)}")
        x = audio[:, None]
        outputs = [self.stft(x)]
        for k, wave in enumerate(self.waves):
            if k:
                x = F.avg_pool1d(x, 4, stride=2, padding=2)
            outputs.append(wave(x))
        return outputs


def discriminators_from_reference(soundstream: audiolm_pytorch.SoundStream) -> Discriminators:
    """The course's discriminators with the weights of a ``SoundStream``'s (default discriminator sizes and scales
    1, 1/2, 1/4; its STFT discriminator's own settings)."""
    ref = soundstream.stft_discriminator
    scales = tuple(soundstream.discr_multi_scales)
    if any(s1 / s2 != 2 for s1, s2 in zip(scales[:-1], scales[1:], strict=False)):
        raise ValueError(f"expected discriminator scales that halve, got {scales}")
    ours = Discriminators(len(scales), stft=dict(
        channels=ref.init_conv.weight.shape[0], n_fft=ref.n_fft, hop_length=ref.hop_length,
        win_length=ref.win_length, normalized=ref.stft_normalized,
        strides=[layer[1].stride for layer in ref.layers],
        channel_mults=[layer[1].weight.shape[0] // ref.init_conv.weight.shape[0] for layer in ref.layers]))
    for a, b in [(ref, ours.stft), *zip(soundstream.discriminators, ours.waves, strict=True)]:
        copy_in_order(a, b)
    return ours
