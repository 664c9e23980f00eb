"""The optimiser, the learning-rate schedule and the mixed precision every system of the course trains with.

LLaMA's recipe (Touvron et al., 2023, §2.3), which MAE and SAM's runs reuse with their own numbers: AdamW with
β = (0.9, 0.95) and weight decay on the matrices only, a linear warm-up then a cosine decay, bfloat16 autocast on a GPU.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


def adamw(model: nn.Module, lr: float, weight_decay: float = 0.1,
          betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with LLaMA's β and weight decay on the matrices (linear layers, embeddings) only: norm gains and
    biases are not decayed towards zero. Shared tensors (tied embeddings) appear once."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def cosine_lr(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Linear warm-up to ``max_lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at ``total_steps``
    (LLaMA: 2000 warm-up steps, final rate 10% of the maximum)."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on a CUDA device (matrix products in bf16, reductions in float32); nothing elsewhere,
    so a CPU run computes in float32 and repeats bit for bit."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
