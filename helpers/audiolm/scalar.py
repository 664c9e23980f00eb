"""Quantisers without a codebook to look up, which the deck's SoundStream options name (``use_lookup_free_quantizer``,
``use_finite_scalar_quantizer``): each dimension of a frame is quantised on its own, and the integer id is read off
the per-dimension values.

- Lookup-free quantisation (LFQ; Yu et al., 2023, MAGVIT-v2): each of d dimensions is replaced by its sign, ±1; the
  id is the binary number of the signs (first dimension most significant), so K = 2^d and there is nothing to store
  or search. Training adds an entropy loss so that all codes get used (not written here).
- Finite scalar quantisation (FSQ; Mentzer et al., 2023): dimension i is squashed by tanh into L_i levels and
  rounded; the id is the mixed-radix number of the level indices (first dimension least significant), so
  K = Π L_i. No commitment loss, no EMA, no dead codes.

Both pass gradients straight through the rounding. Shapes: (..., d) frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def lfq(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z (..., d) → (codes ±1 (..., d), ids (...,) in [0, 2^d)), as ``vector_quantize_pytorch.LFQ`` without
    projections (a value of exactly 0 counts as negative)."""
    codes = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
    bits = 2 ** torch.arange(z.shape[-1] - 1, -1, -1, device=z.device)
    return z + (codes - z).detach(), ((codes > 0).long() * bits).sum(-1)


def fsq(z: torch.Tensor, levels: Sequence[int], eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """z (..., d) with d = len(levels) → (codes in [−1, 1] (..., d), ids (...,) in [0, Π L_i)), as
    ``vector_quantize_pytorch.FSQ`` (levels of 3 or more; an even L is shifted by half a step so that it has L
    values)."""
    if z.shape[-1] != len(levels) or min(levels) < 3:
        raise ValueError(f"expected {len(levels)} dimensions (one per level) and levels ≥ 3, got z of shape "
                         f"{tuple(z.shape)} and levels {tuple(levels)}")
    L = torch.tensor(levels, device=z.device)
    half = (L - 1) * (1 + eps) / 2
    offset = torch.where(L % 2 == 0, 0.5, 0.0)
    bounded = torch.tanh(z + torch.atanh(offset / half)) * half - offset  # in (−L/2, L/2)
    rounded = bounded + (bounded.round() - bounded).detach()
    width = L // 2
    codes = rounded / width  # in [−1, 1]
    basis = torch.cumprod(torch.cat([L.new_ones(1), L[:-1]]), 0)
    ids = ((codes.detach() * width + width) * basis).sum(-1).round().long()
    return codes, ids
