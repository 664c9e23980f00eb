"""Semantic tokens (AudioLM §3.1): an intermediate layer of a masked-prediction model, normalised per dimension,
clustered with k-means; a frame's token is the id of its nearest centroid.

AudioLM takes w2v-BERT's layer 7 (XL, 600 M parameters) and 1024 centroids at 25 Hz. The course trains a small
encoder with w2v-BERT's masked-language-model objective in HuBERT's form: spans of input frames are replaced by a
learned mask vector, and the encoder predicts, at the masked frames, a discrete target of each frame (here the
k-means cluster of its log-mel spectrum). Being trained to infer what is hidden from its context, its middle layers
keep what the context predicts (pitch, harmony, phones) more than the sound's exact texture.

Shapes: B batch, N samples, T frames, M mel bands, d model width, K clusters.
"""

from __future__ import annotations

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
    n_fft: int = 1024
    n_mels: int = 64  # M
    dim: int = 128  # d
    layers: int = 4
    heads: int = 4
    targets: int = 64  # clusters of the log-mel targets
    max_frames: int = 512
    mask_prob: float = 0.065  # chance that a frame starts a masked span (HuBERT's p)
    mask_span: int = 5  # l


def log_mel(audio: torch.Tensor, config: SemanticConfig) -> torch.Tensor:
    """log(mel + 1e-5) frames of audio (B, N) → (B, N // hop, M): frame t covers samples around t · hop."""
    if audio.ndim != 2:
        raise ValueError(f"expected audio of shape (batch, samples), got {tuple(audio.shape)}")
    fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels).to(audio.device)
    mel = mel_spectrogram(audio, fb, torch.hann_window(config.n_fft, device=audio.device), config.n_fft, config.hop)
    return (mel + 1e-5).log().transpose(1, 2)[:, : audio.shape[1] // config.hop]


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
        self.project = nn.Linear(c.n_mels, c.dim)
        self.mask_embedding = nn.Parameter(torch.randn(c.dim) * 0.02)
        self.position = nn.Parameter(torch.randn(c.max_frames, c.dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(c.dim, c.heads, 4 * c.dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.targets)

    def hidden_states(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """features (B, T, M) → [input to layer 1, output of layer 1, …, output of layer L], each (B, T, d)."""
        if features.ndim != 3 or features.shape[-1] != self.config.n_mels:
            raise ValueError(f"expected features of shape (batch, frames, {self.config.n_mels}), "
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
        hidden = self.encoder.hidden_states(log_mel(audio, self.encoder.config))[self.layer]
        return self.standardizer(hidden)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, N) → semantic tokens (B, N // hop)."""
        x = self.embed(audio)
        return kmeans.nearest(x.reshape(-1, x.shape[-1]), self.centroids).reshape(x.shape[:2])


@torch.no_grad()
def fit_tokenizer(encoder: MaskedPredictor, audio: torch.Tensor, layer: int, clusters: int, iters: int = 50,
                  generator: torch.Generator | None = None) -> SemanticTokenizer:
    """Standardise layer ``layer``'s embeddings of audio (B, N) and run Lloyd's k-means from ``clusters`` of them."""
    encoder.eval()
    hidden = encoder.hidden_states(log_mel(audio, encoder.config))[layer]
    flat = hidden.reshape(-1, hidden.shape[-1])
    standardizer = Standardizer(flat.shape[-1]).fit(flat)
    x = standardizer(flat)
    centroids, _ = kmeans.lloyd(x, kmeans.sample_rows(x, clusters, generator), iters)
    return SemanticTokenizer(encoder, layer, centroids, standardizer)
