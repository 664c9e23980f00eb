"""Training a small language model: one canonical copy of the step, the evaluation and the export.

``scripts/llama/pretrain.py`` trains with these through the course's loop (:func:`helpers.common.loop.train_loop`);
Lab 1 asks students to write ``training_step`` and ``evaluate`` themselves and checks them against
:func:`train_step` and :func:`evaluate`. The recipe is LLaMA's (Touvron et al., 2023, §2.3): AdamW with β1 = 0.9,
β2 = 0.95 and weight decay 0.1, a linear warm-up then a cosine decay of the learning rate to 10% of its peak
(:mod:`helpers.common.optim`), gradients clipped to norm 1.0, and bfloat16 autocast on a GPU.
Shapes: B batch, T sequence, V vocabulary, n batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from helpers.common.loop import optimiser_step
from helpers.common.optim import autocast
from helpers.llama.model import llama_to_hf
from helpers.llama.pretraining import CharTokenizer, next_token_loss, random_batch


def train_step(model: nn.Module, optimiser: torch.optim.Optimizer, batch: torch.Tensor, lr: float,
               grad_clip: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch of token ids (B, T): set the learning rate of every parameter group to ``lr``,
    compute the next-token loss (under :func:`autocast`), back-propagate, clip the gradients' global norm to
    ``grad_clip`` and step. Returns (loss, gradient norm before clipping), both detached 0-d float32 tensors."""
    if batch.dim() != 2:
        raise ValueError(f"batch must hold token ids of shape (batch, seq), got {tuple(batch.shape)}")
    with autocast(batch.device):
        loss = next_token_loss(model(batch), batch)
    grad_norm = optimiser_step(model, optimiser, loss, lr, grad_clip)
    return loss.detach().float(), grad_norm


def eval_batches(data: torch.Tensor, n_batches: int, batch_size: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``n_batches`` fixed batches of windows from a 1-D token tensor, drawn with a generator seeded by ``seed``,
    so that every evaluation (and every model) sees the same text → (n, B, T)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([random_batch(data, batch_size, seq_len, generator) for _ in range(n_batches)])


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[torch.Tensor] | torch.Tensor) -> float:
    """The mean next-token loss over ``batches`` (n, B, T), in eval mode and without gradients; the model's
    train/eval mode is restored afterwards. Batches are moved to the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        losses = []
        for batch in batches:
            batch = batch.to(device)
            with autocast(device):
                losses.append(next_token_loss(model(batch), batch).float())
        if not losses:
            raise ValueError("evaluate needs at least one batch")
        return torch.stack(losses).mean().item()
    finally:
        model.train(was_training)


def save_hf(model: nn.Module, folder: Path, tokenizer: CharTokenizer) -> Path:
    """Save a :class:`helpers.llama.Llama` in Hugging Face format (``AutoModelForCausalLM`` loads it) with its
    character alphabet in ``char_tokenizer.json``. A character model has no special tokens, so the configuration
    says none (transformers' defaults, ids 1 and 2, would be ordinary characters here)."""
    folder = Path(folder)
    hf_model = llama_to_hf(model).float().cpu().eval()  # a copy: the course model stays as it is
    for config in (hf_model.config, hf_model.generation_config):
        config.bos_token_id = config.eos_token_id = config.pad_token_id = None
    hf_model.save_pretrained(folder)
    (folder / "char_tokenizer.json").write_text(json.dumps({"alphabet": tokenizer.alphabet}) + "\n")
    return folder


def load_char_tokenizer(folder: Path) -> CharTokenizer:
    """The :class:`CharTokenizer` that :func:`save_hf` wrote next to the model."""
    path = Path(folder) / "char_tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: save the model with helpers.llama.training.save_hf")
    return CharTokenizer(json.loads(path.read_text())["alphabet"])
