"""A GPT-2-style decoder (Radford et al., 2019): the baseline that LLaMA's recipe is measured against.

What differs from :mod:`helpers.llama`, one design choice each (LLaMA paper, §2.2):

- LayerNorm (mean and variance, gain γ and bias β) instead of RMSNorm. It sits **before** each sub-layer
  (pre-norm), as in GPT-2 §2.3, with a final LayerNorm after the last block; LLaMA took pre-normalisation from
  GPT-3, so the ablation compares the normalisation function, not its place.
- A 4d GELU MLP, W_2 GELU(x W_1 + b_1) + b_2, instead of SwiGLU.
- Learned absolute positions (a table of ``n_positions`` vectors added to the token embeddings) instead of RoPE.
- Biases in every linear layer; residual projections initialised with std 0.02 / sqrt(2L) (GPT-2 §2.3).

Parameter names are those of transformers' ``GPT2LMHeadModel`` less its ``transformer.`` prefix, so
:func:`gpt2_to_hf` moves weights across by renaming and transposing (transformers stores them as ``Conv1D``, (in, out)).
Shapes: B batch, T sequence, V vocabulary, d hidden size, L layers, h heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import transformers

    from helpers.llama.model import LlamaConfig


@dataclass
class GPT2Config:
    """The fields of ``transformers.GPT2Config`` that the architecture uses (with LLaMA-style names)."""

    vocab_size: int = 50257
    n_positions: int = 1024  # the longest sequence: rows of the position table
    hidden_size: int = 768  # d
    num_hidden_layers: int = 12  # L
    num_attention_heads: int = 12  # h
    intermediate_size: int | None = None  # MLP hidden size; None means 4d
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0  # on embeddings, attention weights and residual branches (GPT-2 used 0.1)
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by "
                             f"num_attention_heads={self.num_attention_heads}")

    def to_hf(self) -> transformers.GPT2Config:
        """The same configuration as a ``transformers.GPT2Config`` (tanh GELU, which GPT-2 calls ``gelu_new``)."""
        from transformers import GPT2Config as HFGPT2Config

        p = self.dropout
        return HFGPT2Config(vocab_size=self.vocab_size, n_positions=self.n_positions, n_embd=self.hidden_size,
                            n_layer=self.num_hidden_layers, n_head=self.num_attention_heads,
                            n_inner=self.intermediate_size, layer_norm_epsilon=self.layer_norm_eps,
                            activation_function="gelu_new", resid_pdrop=p, embd_pdrop=p, attn_pdrop=p,
                            tie_word_embeddings=self.tie_word_embeddings, bos_token_id=None, eos_token_id=None)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused q, k, v projection (``c_attn``). x: (B, T, d) → (B, T, d)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.n_heads, self.dropout = config.num_attention_heads, config.dropout
        d = config.hidden_size
        self.c_attn = nn.Linear(d, 3 * d)  # [W_Q | W_K | W_V] and their biases
        self.c_proj = nn.Linear(d, d)  # W_O
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, d = x.shape
        q, k, v = (t.view(batch, seq, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, h, T, d_h)
                   for t in self.c_attn(x).split(d, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(out.transpose(1, 2).reshape(batch, seq, d)))


class MLP(nn.Module):
    """The feed-forward layer: W_2 GELU(x W_1 + b_1) + b_2 with the tanh GELU of GPT-2. x: (..., d) → (..., d)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size)  # W_1: d → 4d
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size)  # W_2: 4d → d
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """One pre-LayerNorm layer: h = x + Attn(LN_1(x)); out = h + MLP(LN_2(h))."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """Token and position embeddings, L blocks, a final LayerNorm, the output projection. tokens (B, T) → (B, T, V)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)  # token embeddings
        self.wpe = nn.Embedding(config.n_positions, config.hidden_size)  # learned absolute positions
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # residual projections: std 0.02 / sqrt(2L), GPT-2 §2.3
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.num_hidden_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T) with T ≤ n_positions → logits (B, T, V)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (batch, seq), got {tuple(tokens.shape)}")
        if tokens.shape[1] > self.config.n_positions:
            raise ValueError(f"a sequence of {tokens.shape[1]} tokens is longer than the "
                             f"{self.config.n_positions} learned positions (n_positions)")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.wte(tokens) + self.wpe(positions))  # (B, T, d)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def num_parameters(self) -> int:
        """N, the parameter count (shared tensors counted once)."""
        return sum(p.numel() for p in self.parameters())


def gpt2_like(config: LlamaConfig, n_positions: int, dropout: float = 0.0) -> GPT2Config:
    """The GPT-2 counterpart of a LLaMA configuration: the same vocabulary, width d, depth L, heads h and
    embedding tying, a 4d GELU MLP and ``n_positions`` learned positions. With h_kv = h and LLaMA's SwiGLU
    hidden size ≈ 8d/3 the two have nearly the same parameter count (the position table and biases are extra)."""
    return GPT2Config(vocab_size=config.vocab_size, n_positions=n_positions, hidden_size=config.hidden_size,
                      num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                      layer_norm_eps=1e-5, dropout=dropout, tie_word_embeddings=config.tie_word_embeddings)


def gpt2_to_hf(model: GPT2) -> transformers.GPT2LMHeadModel:
    """A transformers ``GPT2LMHeadModel`` with this model's weights, dtype, device and train/eval mode."""
    from transformers import GPT2LMHeadModel

    parameter = next(model.parameters())
    hf_model = GPT2LMHeadModel(model.config.to_hf())
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("weight") and any(part in key for part in ("c_attn", "c_proj", "c_fc")):
            value = value.t()  # nn.Linear stores (out, in); transformers' Conv1D stores (in, out)
        state[key if key.startswith("lm_head") else f"transformer.{key}"] = value
    hf_model.load_state_dict(state, strict=True)
    return hf_model.to(device=parameter.device, dtype=parameter.dtype).train(model.training)
