"""Residual vector quantisation (RVQ), Algorithm 1 of SoundStream, with EMA codebooks as ``vector_quantize_pytorch``.

One quantiser q_i holds a codebook of K vectors e_1 … e_K in R^D. RVQ quantises the residual left by the levels
before it: r_1 = x, i_q = argmin_k ‖r_q − e_k‖, r_{q+1} = r_q − e_{i_q}, and x̂ = Σ_q e_{i_q} over Q levels. Each
level adds log2 K bits per frame. Training (van den Oord et al., 2017; Razavi et al., 2019):

- commitment loss β ‖r − sg[e_i]‖² per level (the encoder commits to its codes);
- codebooks are not learned by gradient but as exponential moving averages (decay γ) of the vectors assigned to
  them: N_k ← γ N_k + (1 − γ) n_k, m_k ← γ m_k + (1 − γ) Σ_{r → k} r, e_k = m_k / Ñ_k with Laplace-smoothed counts
  Ñ_k = (N_k + ε) / (Σ N + K ε) · Σ N;
- k-means initialisation from the first batch; dead codes (N_k < threshold) replaced by random residuals of the batch;
- quantiser dropout: during training only the first n ∈ [cutoff + 1, Q] levels are used, so one model serves every
  bitrate from 1 to Q levels.

Gradients pass to the encoder with the straight-through estimator (``vector_quantize_pytorch`` uses the rotation
trick by default: the same forward values, other gradients). Shapes: B batch, T frames, D dimension, Q levels.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from helpers.audiolm import kmeans

if TYPE_CHECKING:
    import vector_quantize_pytorch


def bitrate(sample_rate: int, hop: int, levels: int, codebook_size: int) -> float:
    """Bits per second of an RVQ code: frames/s × levels × log2 K (SoundStream at 24 kHz, hop 320, 8 × 1024: 6 kbps)."""
    return sample_rate / hop * levels * math.log2(codebook_size)


class VectorQuantizer(nn.Module):
    """One level: a codebook of K vectors in R^D with EMA updates, k-means init and dead-code replacement."""

    def __init__(self, dim: int, codebook_size: int, decay: float = 0.8, eps: float = 1e-5,
                 commitment_weight: float = 1.0, kmeans_init: bool = False, kmeans_iters: int = 10,
                 threshold_ema_dead_code: float = 0.0) -> None:
        super().__init__()
        self.codebook_size, self.decay, self.eps = codebook_size, decay, eps
        self.commitment_weight, self.kmeans_iters = commitment_weight, kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        codebook = torch.zeros(codebook_size, dim) if kmeans_init else nn.init.kaiming_uniform_(
            torch.empty(1, codebook_size, dim))[0]
        self.register_buffer("codebook", codebook)  # e_k: (K, D)
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # N_k
        self.register_buffer("embed_sum", codebook.clone())  # m_k
        self.register_buffer("initted", torch.tensor(not kmeans_init))

    def nearest(self, r: torch.Tensor) -> torch.Tensor:
        """(N, D) → (N,) index of the nearest code."""
        return kmeans.nearest(r, self.codebook)

    def smooth_codebook(self) -> None:
        """e_k = m_k / Ñ_k with Laplace-smoothed counts."""
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def kmeans_init(self, r: torch.Tensor) -> None:
        """Codebook from ``kmeans_iters`` Lloyd rounds on the first batch, started from K of its vectors."""
        centroids, counts = kmeans.lloyd(r, kmeans.sample_rows(r, self.codebook_size), self.kmeans_iters)
        self.embed_sum.copy_(centroids * counts[:, None])
        self.cluster_size.copy_(counts)
        self.smooth_codebook()
        self.initted.fill_(True)

    @torch.no_grad()
    def ema_update(self, r: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step on the batch's residuals r: (N, D) and their codes (N,); then replace dead codes."""
        onehot = F.one_hot(indices, self.codebook_size).to(r.dtype)  # (N, K)
        self.cluster_size.lerp_(onehot.sum(0), 1 - self.decay)
        self.embed_sum.lerp_(onehot.T @ r, 1 - self.decay)
        self.smooth_codebook()
        dead = self.cluster_size < self.threshold_ema_dead_code
        if dead.any():
            if int(dead.sum()) > r.shape[0]:  # fewer residuals than dead codes: replace a random subset now
                keep = dead.nonzero()[:, 0][torch.randperm(int(dead.sum()))[: r.shape[0]]]
                dead = torch.zeros_like(dead).index_fill_(0, keep, True)
            fresh = kmeans.sample_rows(r, int(dead.sum()))
            self.codebook[dead] = fresh
            self.cluster_size[dead] = self.threshold_ema_dead_code
            self.embed_sum[dead] = fresh * self.threshold_ema_dead_code

    def forward(self, r: torch.Tensor, freeze_codebook: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """r: (B, T, D) → (quantised (B, T, D), indices (B, T), commitment loss β‖r − sg[e]‖² (0 in eval))."""
        flat = r.detach().reshape(-1, r.shape[-1]).float()
        if not bool(self.initted):  # as vector_quantize_pytorch: the first batch seen, in training or not
            self.kmeans_init(flat)
        indices = self.nearest(flat)
        quantized = self.codebook[indices].reshape(r.shape).to(r.dtype)
        loss = r.new_zeros(())
        if self.training:
            loss = F.mse_loss(quantized.detach(), r) * self.commitment_weight
            quantized = r + (quantized - r).detach()  # straight-through: the encoder gets the decoder's gradient
            if not freeze_codebook:
                self.ema_update(flat, indices)
        return quantized, indices.reshape(r.shape[:-1]), loss


class ResidualVQ(nn.Module):
    """Q quantisers applied to successive residuals; optional projections when the codebook dimension differs."""

    def __init__(self, dim: int, codebook_size: int, num_quantizers: int, codebook_dim: int | None = None,
                 quantize_dropout: bool = False, quantize_dropout_cutoff_index: int = 0, **quantizer_kwargs) -> None:
        super().__init__()
        codebook_dim = codebook_dim or dim
        self.dim, self.codebook_size, self.num_quantizers = dim, codebook_size, num_quantizers
        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        self.layers = nn.ModuleList(VectorQuantizer(codebook_dim, codebook_size, **quantizer_kwargs)
                                    for _ in range(num_quantizers))
        self.quantize_dropout = quantize_dropout and num_quantizers > 1
        self.quantize_dropout_cutoff_index = quantize_dropout_cutoff_index

    def forward(self, x: torch.Tensor, freeze_codebook: bool = False, levels: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, T, D) → (x̂ (B, T, D), indices (B, T, Q), losses (Q,)).

        ``levels`` uses the first n levels only; in training with quantiser dropout n is drawn from
        [cutoff + 1, Q]. Unused levels get index −1 and loss 0."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x of shape (batch, frames, {self.dim}), got {tuple(x.shape)}")
        n = levels or self.num_quantizers
        if self.training and self.quantize_dropout and levels is None:
            n = random.randrange(self.quantize_dropout_cutoff_index, self.num_quantizers) + 1
        residual = self.project_in(x)
        quantized = torch.zeros_like(residual)
        indices = torch.full((*x.shape[:-1], self.num_quantizers), -1, dtype=torch.long, device=x.device)
        losses = [x.new_zeros(())] * self.num_quantizers
        for q, layer in enumerate(self.layers[:n]):
            level, indices[..., q], losses[q] = layer(residual, freeze_codebook)
            residual = residual - level
            quantized = quantized + level
        return self.project_out(quantized), indices, torch.stack(losses)

    def codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Per-level code vectors e_{i_q}: indices (B, T, q ≤ Q) → (q, B, T, codebook_dim); index −1 gives 0."""
        if indices.ndim != 3 or indices.shape[-1] > self.num_quantizers:
            raise ValueError(f"expected indices of shape (batch, frames, levels ≤ {self.num_quantizers}), "
                             f"got {tuple(indices.shape)}")
        if indices.dtype not in (torch.long, torch.int32) or ((indices < -1) | (indices >= self.codebook_size)).any():
            raise ValueError(f"expected integer code ids in [0, {self.codebook_size}) (or -1 for a dropped level), "
                             f"got {indices.dtype} values in [{int(indices.min())}, {int(indices.max())}]")
        levels = zip(self.layers, indices.long().unbind(-1), strict=False)  # the first q levels
        return torch.stack([torch.where(i[..., None] >= 0, layer.codebook[i.clamp(min=0)], 0.0) for layer, i in levels])

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """x̂ = Σ_q e_{i_q} from codes: (B, T, q ≤ Q) → (B, T, D). Fewer levels than Q give a coarser x̂."""
        return self.project_out(self.codes(indices).sum(0))


def rvq_from_reference(rvq: vector_quantize_pytorch.ResidualVQ) -> ResidualVQ:
    """The course's RVQ with the codebooks (and EMA state, projections, settings) of a ``ResidualVQ``."""
    first = rvq.layers[0]
    book = first._codebook
    if getattr(first, "heads", 1) != 1 or book.use_cosine_sim or book.learnable_codebook:
        raise ValueError("expected a ResidualVQ with one head, Euclidean distances and EMA codebooks")
    codebook_dim = rvq.codebook_dim if rvq.has_projections else None
    dim = rvq.project_in.in_features if rvq.has_projections else rvq.codebook_dim
    ours = ResidualVQ(dim, rvq.codebook_size, rvq.num_quantizers, codebook_dim=codebook_dim,
                      quantize_dropout=rvq.quantize_dropout,
                      quantize_dropout_cutoff_index=rvq.quantize_dropout_cutoff_index, decay=book.decay,
                      eps=book.eps, commitment_weight=first.commitment_weight, kmeans_iters=book.kmeans_iters,
                      threshold_ema_dead_code=book.threshold_ema_dead_code)
    state = {}
    for q, layer in enumerate(rvq.layers):
        cb = layer._codebook
        state |= {f"layers.{q}.codebook": cb.embed[0], f"layers.{q}.cluster_size": cb.cluster_size[0],
                  f"layers.{q}.embed_sum": cb.embed_avg[0], f"layers.{q}.initted": cb.initted}
    if rvq.has_projections:
        state |= {f"project_{d}.{p}": t for d in ("in", "out")
                  for p, t in getattr(rvq, f"project_{d}").state_dict().items()}
    ours.load_state_dict(state)
    return ours.train(rvq.training)


def rvq_to_reference(ours: ResidualVQ, **kwargs) -> vector_quantize_pytorch.ResidualVQ:
    """A ``vector_quantize_pytorch.ResidualVQ`` holding this RVQ's codebooks and EMA state (``kwargs`` go to it)."""
    from vector_quantize_pytorch import ResidualVQ as Reference

    first = ours.layers[0]
    codebook_dim = first.codebook.shape[1]
    ref = Reference(dim=ours.dim, codebook_size=ours.codebook_size, num_quantizers=ours.num_quantizers,
                    codebook_dim=codebook_dim if codebook_dim != ours.dim else None, decay=first.decay,
                    eps=first.eps, commitment_weight=first.commitment_weight,
                    threshold_ema_dead_code=first.threshold_ema_dead_code, quantize_dropout=ours.quantize_dropout,
                    quantize_dropout_cutoff_index=ours.quantize_dropout_cutoff_index, **kwargs)
    copy_to_reference(ours, ref)
    return ref.train(ours.training)


@torch.no_grad()
def copy_to_reference(ours: ResidualVQ, ref: vector_quantize_pytorch.ResidualVQ) -> None:
    """Write this RVQ's codebooks, EMA state and projections into a ``ResidualVQ`` of the same sizes."""
    for mine, layer in zip(ours.layers, ref.layers, strict=True):
        cb = layer._codebook
        cb.embed.copy_(mine.codebook[None]), cb.embed_avg.copy_(mine.embed_sum[None])
        cb.cluster_size.copy_(mine.cluster_size[None]), cb.initted.fill_(bool(mine.initted))
    if not isinstance(ours.project_in, nn.Identity):
        ref.project_in.load_state_dict(ours.project_in.state_dict())
        ref.project_out.load_state_dict(ours.project_out.state_dict())
