"""LLaMA's components, one canonical copy each (the chapters derive them; the labs import them).

Symbols follow the papers: d = hidden size, ε = eps, g = the RMSNorm gain (``weight``).
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019), as LLaMA applies it before each sub-layer.

    y = x / sqrt(mean(x²) + ε) · g, over the last dimension of size d. Statistics are taken in float32
    and the result is cast back to the input's dtype, as in transformers' ``LlamaRMSNorm``; the parameter
    is named ``weight`` so the two share a state dict.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d) → (..., d)."""
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
