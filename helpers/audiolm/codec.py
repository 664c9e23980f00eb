"""A SoundStream-like neural audio codec: causal convolutional encoder, residual vector quantiser, mirrored decoder.

SoundStream (Zeghidour et al., 2021), as ``audiolm_pytorch.SoundStream`` builds it without its local attention:

    encoder   audio (B, 1, N) → causal conv 7 → L blocks [3 residual units (dilations 1, 3, 9), strided conv
              (kernel 2s, stride s)] → causal conv 3 → (B, D, T) with T = N / H, hop H = Π s
    RVQ       (B, T, D) → Q codes per frame (helpers.audiolm.rvq)
    decoder   causal conv 7 → L blocks [transposed conv (kernel 2s, stride s), 3 residual units] → causal conv 7

Every convolution is causal: it pads d (k − 1) + 1 − s samples on the left only (reflected), so frame t sees no
sample after its own. Channels double as the time resolution falls (C · m_l in block l). Shapes: B batch,
N samples, T frames, D code dimension, Q levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from helpers.audiolm.compat import require_audiolm_pytorch
from helpers.audiolm.rvq import ResidualVQ, copy_to_reference, rvq_from_reference
from helpers.audiolm.weights import copy_in_order

if TYPE_CHECKING:
    import audiolm_pytorch


@dataclass
class CodecConfig:
    """SoundStream's sizes with ``audiolm_pytorch``'s names where they exist (its defaults, for 16 kHz audio)."""

    sample_rate: int = 16000
    channels: int = 32  # C
    strides: tuple[int, ...] = (2, 4, 5, 8)  # s_l; hop H = Π s_l = 320 samples = 20 ms
    channel_mults: tuple[int, ...] = (2, 4, 8, 16)  # m_l
    codebook_dim: int = 512  # D
    codebook_size: int = 1024  # K
    num_quantizers: int = 8  # Q
    dilations: tuple[int, ...] = (1, 3, 9)
    ema_decay: float = 0.95  # γ
    commitment_weight: float = 1.0  # β
    kmeans_init: bool = True
    threshold_ema_dead_code: float = 2.0  # SoundStream fixes 2 (and k-means init)
    quantize_dropout: bool = True
    quantize_dropout_cutoff_index: int = 1  # training uses at least cutoff + 1 levels

    @property
    def hop(self) -> int:
        """H: samples per frame."""
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop


class CausalConv1d(nn.Conv1d):
    """A 1-D convolution that pads d (k − 1) + 1 − s samples on the left (reflected) and none on the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.dilation[0] * (self.kernel_size[0] - 1) + 1 - self.stride[0]
        return super().forward(F.pad(x, (left, 0), mode="reflect"))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Upsampling by s: a transposed convolution (kernel 2s) cut to s · T_in samples, which keeps it causal."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., : x.shape[-1] * self.stride[0]]


class ResidualUnit(nn.Module):
    """x + ELU(conv_1×1(ELU(causal conv_7, dilation d (x)))). (B, C, N) → (B, C, N)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(channels, channels, 7, dilation=dilation)
        self.pointwise = CausalConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.elu(self.pointwise(F.elu(self.conv(x))))


class EncoderBlock(nn.Module):
    """Residual units at C_in channels, then a strided causal conv: (B, C_in, N) → (B, C_out, N / s)."""

    def __init__(self, chan_in: int, chan_out: int, stride: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.units = nn.Sequential(*(ResidualUnit(chan_in, d) for d in dilations))
        self.down = CausalConv1d(chan_in, chan_out, 2 * stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.units(x))


class DecoderBlock(nn.Module):
    """Upsampling by s, then residual units: (B, C_in, T) → (B, C_out, s T)."""

    def __init__(self, chan_in: int, chan_out: int, stride: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.up = CausalConvTranspose1d(chan_in, chan_out, 2 * stride, stride=stride)
        self.units = nn.Sequential(*(ResidualUnit(chan_out, d) for d in dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(self.up(x))


class Codec(nn.Module):
    """Encoder, RVQ and decoder. ``tokenize`` audio → codes, ``decode`` codes → audio, ``forward`` for training."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = c = config
        widths = [c.channels] + [c.channels * m for m in c.channel_mults]
        pairs = list(zip(widths[:-1], widths[1:], c.strides, strict=True))
        self.encoder = nn.Sequential(
            CausalConv1d(1, c.channels, 7),
            *(EncoderBlock(a, b, s, c.dilations) for a, b, s in pairs),
            CausalConv1d(widths[-1], c.codebook_dim, 3))
        self.rvq = ResidualVQ(c.codebook_dim, c.codebook_size, c.num_quantizers, decay=c.ema_decay,
                              commitment_weight=c.commitment_weight, kmeans_init=c.kmeans_init,
                              threshold_ema_dead_code=c.threshold_ema_dead_code, quantize_dropout=c.quantize_dropout,
                              quantize_dropout_cutoff_index=c.quantize_dropout_cutoff_index)
        self.decoder = nn.Sequential(
            CausalConv1d(c.codebook_dim, widths[-1], 7),
            *(DecoderBlock(b, a, s, c.dilations) for a, b, s in reversed(pairs)),
            CausalConv1d(c.channels, 1, 7))

    @property
    def min_samples(self) -> int:
        """The shortest input the convolutions can take: a reflected padding of p samples needs more than p samples
        at its layer's resolution (whole frames)."""
        need, jump = 1, 1
        for module in self.encoder.modules():
            if isinstance(module, CausalConv1d):
                d, k, s = module.dilation[0], module.kernel_size[0], module.stride[0]
                need = max(need, (d * (k - 1) + 2 - s) * jump)
                jump *= s
        for module in self.decoder.modules():
            if isinstance(module, CausalConvTranspose1d):
                jump //= module.stride[0]
            elif isinstance(module, CausalConv1d):
                need = max(need, (module.dilation[0] * (module.kernel_size[0] - 1) + 1) * jump)
        return -(-need // self.config.hop) * self.config.hop

    def whole_frames(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Check audio (B, N) and the sample rate; cut to whole frames (B, T · H), as SoundStream does."""
        if sample_rate is not None and sample_rate != self.config.sample_rate:
            raise ValueError(f"this codec was built for {self.config.sample_rate} Hz audio, got {sample_rate} Hz")
        if audio.ndim != 2:
            raise ValueError(f"expected audio of shape (batch, samples), got {tuple(audio.shape)}")
        hop = self.config.hop
        if audio.shape[-1] < self.min_samples:
            raise ValueError(f"expected at least {self.min_samples} samples ({self.min_samples // hop} frames: the "
                             f"causal convolutions' reflected padding needs them), got {audio.shape[-1]} samples")
        return audio[:, : audio.shape[-1] // hop * hop]  # whole frames only, as SoundStream cuts them

    def encode(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """audio (B, N) → continuous embeddings (B, T, D), T = N // H (a trailing part frame is dropped)."""
        return self.encoder(self.whole_frames(audio, sample_rate)[:, None]).transpose(1, 2)

    def forward(self, audio: torch.Tensor, levels: int | None = None, sample_rate: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """audio (B, N) → (reconstruction (B, N'), codes (B, T, Q), commitment losses (Q,)), N' = T · H."""
        quantized, codes, losses = self.rvq(self.encode(audio, sample_rate), levels=levels)
        return self.decoder(quantized.transpose(1, 2))[:, 0], codes, losses

    @torch.no_grad()
    def tokenize(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """audio (B, N) → codes (B, T, Q) in eval mode (what ``SoundStream.tokenize`` returns for one RVQ group)."""
        self.eval()
        return self.rvq(self.encode(audio, sample_rate))[1]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T, q ≤ Q) → audio (B, T · H); fewer levels decode at a lower bitrate."""
        return self.decoder(self.rvq.decode(codes).transpose(1, 2))[:, 0]


# ----------------------------------------------------------------------------------------------------------------
# audiolm_pytorch.SoundStream ↔ Codec


def _reference_config(soundstream: audiolm_pytorch.SoundStream) -> CodecConfig:
    kwargs = soundstream.configs
    if kwargs.get("use_local_attn", True) or kwargs.get("rq_groups", 1) != 1 or kwargs.get("squeeze_excite") or \
            kwargs.get("use_gate_loop_layers") or kwargs.get("input_channels", 1) != 1 or \
            kwargs.get("use_lookup_free_quantizer") or kwargs.get("use_finite_scalar_quantizer") or \
            kwargs.get("pad_mode", "reflect") != "reflect":
        raise ValueError("expected a SoundStream built with use_local_attn=False, rq_groups=1, one input channel, "
                         "an RVQ and the default convolutions")
    rvq = soundstream.rq.rvqs[0]
    book = rvq.layers[0]._codebook
    return CodecConfig(
        sample_rate=soundstream.target_sample_hz, channels=kwargs.get("channels", 32),
        strides=tuple(soundstream.strides), channel_mults=tuple(kwargs.get("channel_mults", (2, 4, 8, 16))),
        codebook_dim=soundstream.codebook_dim, codebook_size=soundstream.codebook_size,
        num_quantizers=soundstream.num_quantizers,
        dilations=tuple(kwargs.get("enc_cycle_dilations", (1, 3, 9))), ema_decay=book.decay,
        commitment_weight=rvq.layers[0].commitment_weight, kmeans_init=True,
        threshold_ema_dead_code=book.threshold_ema_dead_code, quantize_dropout=rvq.quantize_dropout,
        quantize_dropout_cutoff_index=rvq.quantize_dropout_cutoff_index)


def codec_from_reference(soundstream: audiolm_pytorch.SoundStream) -> Codec:
    """The course's codec with the weights and codebooks of an ``audiolm_pytorch.SoundStream`` (no local attention,
    one RVQ group)."""
    config = _reference_config(soundstream)
    if tuple(soundstream.configs.get("dec_cycle_dilations", (1, 3, 9))) != config.dilations:
        raise ValueError("expected the same dilations in the encoder and the decoder")
    codec = Codec(config)
    copy_in_order(soundstream.encoder, codec.encoder)
    copy_in_order(soundstream.decoder, codec.decoder)
    codec.rvq = rvq_from_reference(soundstream.rq.rvqs[0])
    return codec.train(soundstream.training)


def soundstream_kwargs(config: CodecConfig) -> dict:
    """The ``audiolm_pytorch.SoundStream`` arguments that build this codec's network."""
    return dict(channels=config.channels, strides=config.strides, channel_mults=config.channel_mults,
                codebook_dim=config.codebook_dim, codebook_size=config.codebook_size,
                rq_num_quantizers=config.num_quantizers, rq_ema_decay=config.ema_decay,
                rq_commitment_weight=config.commitment_weight, enc_cycle_dilations=config.dilations,
                dec_cycle_dilations=config.dilations, target_sample_hz=config.sample_rate, use_local_attn=False,
                quantize_dropout_cutoff_index=config.quantize_dropout_cutoff_index)


def codec_to_reference(codec: Codec, **kwargs) -> audiolm_pytorch.SoundStream:
    """An ``audiolm_pytorch.SoundStream`` with this codec's encoder, codebooks and decoder (its discriminators are
    freshly initialised; ``kwargs`` go to its constructor)."""
    soundstream = require_audiolm_pytorch().SoundStream(**soundstream_kwargs(codec.config) | kwargs)
    copy_in_order(codec.encoder, soundstream.encoder)
    copy_in_order(codec.decoder, soundstream.decoder)
    copy_to_reference(codec.rvq, soundstream.rq.rvqs[0])
    return soundstream.train(codec.training)
