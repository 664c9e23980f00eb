"""Semantic tokens (AudioLM §3.1): an intermediate layer of a masked-prediction model, normalised per dimension,
clustered with k-means; a frame's token is the id of its nearest centroid.

AudioLM takes w2v-BERT's layer 7 (XL, 600 M parameters) and 1024 centroids at 25 Hz. The course trains a small
encoder with w2v-BERT's masked-language-model objective in HuBERT's form: spans of input frames are replaced by a
learned mask vector, and the encoder predicts, at the masked frames, a discrete target of each frame (the k-means
cluster of its features, as in HuBERT's first iteration). Being trained to infer what is hidden from its context,
each layer's vector summarises the frame's neighbourhood.

What the encoder reads (``SemanticConfig.features``): w2v-BERT reads log-mel spectra and learns from 60,000 hours to
ignore who speaks. A small model trained for a minute on an hour of music does not learn to ignore the instrument
(measured in chapter 4: with log-mel input its tokens tell the timbre apart as well as acoustic tokens do), so by
default the course's encoder reads a **chromagram**, the energy of each of the 12 pitch classes in a frame (log of
the frame's normalised chroma): the musical counterpart of a phonetic front end, which keeps the notes and drops
most of the timbre. ``features="log_mel"`` gives the w2v-BERT-like input.

Shapes: B batch, N samples, T frames, M mel bands, d model width, K clusters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from helpers.audiolm import kmeans
from helpers.audiolm.mel import mel_filterbank, mel_spectrogram


@dataclass
class SemanticConfig:
    sample_rate: int = 16000
    hop: int = 640  # 25 frames/s at 16 kHz, AudioLM's semantic rate
    features: str = "chroma"  # or "log_mel"
    n_fft: int = 2048  # the STFT's window (2048 samples = 128 ms resolves the semitones of the bass)
    n_mels: int = 64  # M (log_mel features)
    dim: int = 128  # d
    layers: int = 4
    heads: int = 4
    targets: int = 64  # clusters of the log-mel targets
    max_frames: int = 512
    mask_prob: float = 0.065  # chance that a frame starts a masked span (HuBERT's p)
    mask_span: int = 5  # l

    def __post_init__(self) -> None:
        if self.features not in ("chroma", "log_mel"):
            raise ValueError(f"expected features 'chroma' or 'log_mel', got {self.features!r}")

    @property
    def feature_dim(self) -> int:
        """Numbers per frame: 12 pitch classes, or M mel bands."""
        return 12 if self.features == "chroma" else self.n_mels


def _check_audio(audio: torch.Tensor) -> None:
    if audio.ndim != 2:
        raise ValueError(f"expected audio of shape (batch, samples), got {tuple(audio.shape)}")


def log_mel(audio: torch.Tensor, config: SemanticConfig) -> torch.Tensor:
    """log(mel + 1e-5) frames of audio (B, N) → (B, N // hop, M): frame t covers samples around t · hop."""
    _check_audio(audio)
    fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels).to(audio.device)
    mel = mel_spectrogram(audio, fb, torch.hann_window(config.n_fft, device=audio.device), config.n_fft, config.hop)
    return (mel + 1e-5).log().transpose(1, 2)[:, : audio.shape[1] // config.hop]


def log_chroma(audio: torch.Tensor, config: SemanticConfig, fmin: float = 60.0, fmax: float = 2000.0
               ) -> torch.Tensor:
    """log(c / Σc + 1e-3) of each frame's pitch-class energy c (12,): audio (B, N) → (B, N // hop, 12), frame t
    centred on sample t · hop. STFT bins in [fmin, fmax] add their power to the pitch class of their frequency."""
    _check_audio(audio)
    window = torch.hann_window(config.n_fft, device=audio.device)
    power = torch.stft(audio, config.n_fft, config.hop, window=window, return_complex=True).abs().pow(2)  # (B, F, T)
    freqs = torch.fft.rfftfreq(config.n_fft, 1 / config.sample_rate)
    used = (freqs >= fmin) & (freqs <= fmax)
    classes = (12 * torch.log2(freqs[used] / 440.0) + 69).round().long() % 12
    chroma = power[:, used].transpose(1, 2) @ F.one_hot(classes, 12).to(power)  # (B, T, 12)
    chroma = chroma / (chroma.sum(-1, keepdim=True) + 1e-12)
    return (chroma + 1e-3).log()[:, : audio.shape[1] // config.hop]


def frame_features(audio: torch.Tensor, config: SemanticConfig) -> torch.Tensor:
    """The encoder's input: audio (B, N) → (B, N // hop, feature_dim), chroma or log-mel (``config.features``)."""
    return log_chroma(audio, config) if config.features == "chroma" else log_mel(audio, config)


def span_mask(batch: int, frames: int, prob: float, span: int, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """(B, T) bool: each frame starts a masked span of ``span`` frames with probability ``prob`` (spans may overlap)."""
    starts = (torch.rand(batch, frames, generator=generator) < prob).float()
    covered = F.max_pool1d(F.pad(starts[:, None], (span - 1, 0)), span, stride=1)  # a start in the last span frames
    return covered[:, 0].bool()


class MaskedPredictor(nn.Module):
    """A bidirectional Transformer encoder over log-mel frames that predicts each masked frame's target id."""

    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        self.config = c = config
        self.project = nn.Linear(c.feature_dim, c.dim)
        self.mask_embedding = nn.Parameter(torch.randn(c.dim) * 0.02)
        self.position = nn.Parameter(torch.randn(c.max_frames, c.dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(c.dim, c.heads, 4 * c.dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.targets)

    def hidden_states(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """features (B, T, M) → [input to layer 1, output of layer 1, …, output of layer L], each (B, T, d)."""
        if features.ndim != 3 or features.shape[-1] != self.config.feature_dim:
            raise ValueError(f"expected features of shape (batch, frames, {self.config.feature_dim}), "
                             f"got {tuple(features.shape)}")
        if features.shape[1] > self.config.max_frames:
            raise ValueError(f"the encoder holds {self.config.max_frames} frames, got {features.shape[1]}")
        x = self.project(features)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        states = [x := x + self.position[: x.shape[1]]]
        for layer in self.layers:
            states.append(x := layer(x))
        return states

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, T, M), mask (B, T) → target logits (B, T, K_targets)."""
        return self.head(self.norm(self.hidden_states(features, mask)[-1]))


def masked_prediction_loss(model: MaskedPredictor, features: torch.Tensor, targets: torch.Tensor,
                           mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the targets (B, T) at the masked frames only."""
    logits = model(features, mask)
    return F.cross_entropy(logits[mask], targets[mask])


class Standardizer(nn.Module):
    """Per-dimension normalisation (x − μ) / σ fitted on a set of vectors, as scikit-learn's ``StandardScaler``
    (population σ; a constant dimension keeps σ = 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit(self, x: torch.Tensor) -> Standardizer:
        """x: (N, D)."""
        self.mean = x.mean(0)
        std = x.std(0, correction=0)
        self.scale = torch.where(std > 0, std, torch.ones_like(std))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class SemanticTokenizer(nn.Module):
    """audio → log-mel → the encoder's layer ``layer`` → standardised → id of the nearest of K centroids."""

    def __init__(self, encoder: MaskedPredictor, layer: int, centroids: torch.Tensor, standardizer: Standardizer
                 ) -> None:
        super().__init__()
        self.encoder, self.layer, self.standardizer = encoder, layer, standardizer
        self.register_buffer("centroids", centroids)

    @property
    def vocab_size(self) -> int:
        return self.centroids.shape[0]

    @torch.no_grad()
    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, N) → standardised embeddings (B, T, d)."""
        self.encoder.eval()
        hidden = self.encoder.hidden_states(frame_features(audio, self.encoder.config))[self.layer]
        return self.standardizer(hidden)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, N) → semantic tokens (B, N // hop)."""
        x = self.embed(audio)
        return kmeans.nearest(x.reshape(-1, x.shape[-1]), self.centroids).reshape(x.shape[:2])


@torch.no_grad()
def fit_tokenizer(encoder: MaskedPredictor, audio: torch.Tensor, layer: int, clusters: int, iters: int = 50,
                  generator: torch.Generator | None = None, lloyd: Callable = kmeans.lloyd) -> SemanticTokenizer:
    """Standardise layer ``layer``'s embeddings of audio (B, N) and run Lloyd's k-means from ``clusters`` of them
    (``lloyd(x, initial_centroids, iters) → (centroids, counts)``: the course's, or yours)."""
    encoder.eval()
    hidden = encoder.hidden_states(frame_features(audio, encoder.config))[layer]
    flat = hidden.reshape(-1, hidden.shape[-1])
    standardizer = Standardizer(flat.shape[-1]).fit(flat)
    x = standardizer(flat)
    centroids, _ = lloyd(x, kmeans.sample_rows(x, clusters, generator), iters)
    return SemanticTokenizer(encoder, layer, centroids, standardizer)
