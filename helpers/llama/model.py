"""LLaMA in one file: one canonical copy of each component (the chapters derive them; the labs import them).

Numerically the same model as transformers' ``LlamaForCausalLM``; the parameter names are transformers' too
(less the ``model.`` prefix), so weights move between the two by renaming alone.

Symbols follow the papers: d = hidden size, h = heads, h_kv = key/value heads, d_h = d / h (head size),
θ = RoPE base, ε = RMSNorm eps, g = RMSNorm gain. Shapes: B batch, T sequence, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import transformers


# ----------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class LlamaConfig:
    """The fields of ``transformers.LlamaConfig`` that the architecture uses, with the same names."""

    vocab_size: int = 32000
    hidden_size: int = 4096  # d
    intermediate_size: int = 11008  # SwiGLU hidden size
    num_hidden_layers: int = 32
    num_attention_heads: int = 32  # h
    num_key_value_heads: int | None = None  # h_kv; None means h (multi-head attention)
    rms_norm_eps: float = 1e-6  # ε
    rope_theta: float = 10000.0  # θ
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("the head size d/h must be even: RoPE rotates pairs of features")

    @property
    def head_dim(self) -> int:
        """d_h = d / h."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf_config: Any) -> LlamaConfig:
        """Read a ``transformers.LlamaConfig`` (rope θ sits in ``rope_parameters`` in transformers 5)."""
        theta = getattr(hf_config, "rope_theta", None)
        if theta is None:
            theta = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        head_dim = getattr(hf_config, "head_dim", None)
        if head_dim not in (None, hf_config.hidden_size // hf_config.num_attention_heads):
            raise ValueError(f"head_dim={head_dim} other than hidden_size / num_attention_heads is not supported")
        rope = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"RoPE scaling ({rope_type}) is not supported: only the original RoPE")
        return cls(**{name: getattr(hf_config, name) for name in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings")},
            rope_theta=float(theta))

    def to_hf(self) -> transformers.LlamaConfig:
        """The same configuration as a ``transformers.LlamaConfig``."""
        from transformers import LlamaConfig as HFLlamaConfig

        return HFLlamaConfig(**asdict(self), attention_bias=False, mlp_bias=False)


def llama_hidden_dim(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """SwiGLU's hidden size in Meta's code: 2/3 · 4d (same parameters as a 4d GELU MLP), times an optional
    multiplier, rounded up to a multiple of ``multiple_of``. LLaMA-7B: d=4096 → 11008."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


# ----------------------------------------------------------------------------------------------------------------
# Components


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
        """x: (..., d) → (..., d). F.rms_norm computes x · rsqrt(mean(x²) + ε) in one fused pass."""
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class SwiGLU(nn.Module):
    """LLaMA's feed-forward layer (Shazeer, 2020): W_down (SiLU(x W_gate) ⊙ x W_up). x: (..., d) → (..., d)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=False)  # W (Meta: w1)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)  # V (Meta: w3)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)  # W_2 (Meta: w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """θ_i = θ^(-2i/d_h) for i = 0 … d_h/2 − 1: the angle per position of each rotated pair. → (d_h/2,)"""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(m θ_i), sin(m θ_i) in the half-split layout (each angle twice: [θ_0 … θ_{d/2-1}, θ_0 … θ_{d/2-1}]).

    positions m: (T,) → cos, sin: (T, d_h), float32.
    """
    angles = positions.float()[:, None] * inv_freq.float()[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] → [−x2, x1] on the last dimension: the 90° turn of each pair (x_i, x_{i + d/2})."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys by their positions (half-split convention, as transformers).

    x: (B, h, T, d_h); cos, sin: (T, d_h) → (B, h, T, d_h), dtype of x.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


def interleaved_to_half_split(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute the rows of a q or k projection from Meta's interleaved RoPE layout (pairs (2i, 2i+1)) to
    the half-split layout of transformers (pairs (i, i + d_h/2)). weight: (h·d_h, d) → same shape."""
    out_features, in_features = weight.shape
    head_dim = out_features // n_heads
    return (weight.view(n_heads, head_dim // 2, 2, in_features).transpose(1, 2)
            .reshape(out_features, in_features))


def half_split_to_interleaved(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of :func:`interleaved_to_half_split`."""
    out_features, in_features = weight.shape
    head_dim = out_features // n_heads
    return (weight.view(n_heads, 2, head_dim // 2, in_features).transpose(1, 2)
            .reshape(out_features, in_features))


class KVCache:
    """Keys and values of every layer for the positions seen so far, preallocated for ``max_seq_len``.

    k, v: (L, B, h_kv, max_seq_len, d_h). Memory: 2 · L · B · h_kv · max_seq_len · d_h · bytes per value.
    """

    def __init__(self, config: LlamaConfig, batch_size: int, max_seq_len: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_seq_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_seq_len = max_seq_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, h_kv, T, d_h) at positions start_pos … start_pos+T−1; return all keys and values
        up to there: (B, h_kv, start_pos+T, d_h)."""
        end = start_pos + k.shape[2]
        if end > self.max_seq_len:
            raise ValueError(f"the KV cache holds {self.max_seq_len} positions; position {end - 1} does not fit")
        batch = k.shape[0]
        self.k[layer, :batch, :, start_pos:end] = k
        self.v[layer, :batch, :, start_pos:end] = v
        return self.k[layer, :batch, :, :end], self.v[layer, :batch, :, :end]

    def memory_bytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch_size: int = 1,
                   bytes_per_value: int = 2) -> int:
    """Bytes of a KV cache: 2 (k and v) · L · B · h_kv · T · d_h · bytes per value (2 for float16)."""
    return 2 * n_layers * batch_size * n_kv_heads * seq_len * head_dim * bytes_per_value


class Attention(nn.Module):
    """Causal self-attention with RoPE and grouped-query attention (h query heads share h_kv key/value heads:
    h_kv = h is MHA, h_kv = 1 is MQA, anything between is GQA)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                        config.head_dim)
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)  # W_Q
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)  # W_K
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)  # W_V
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)  # W_O

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, start_pos: int = 0) -> torch.Tensor:
        """x: (B, T, d) at positions start_pos … start_pos+T−1 → (B, T, d)."""
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)  # (B, h, T, d_h)
        k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, h_kv, T, d_h)
        v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v, start_pos)
        mask, causal = None, seq > 1
        if causal and k.shape[2] > seq:  # new queries after cached keys: query i sees keys ≤ start_pos + i
            mask = torch.ones(seq, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=k.shape[2] - seq)
            causal = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             enable_gqa=self.n_kv_heads != self.n_heads)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.n_heads * self.head_dim))


class Block(nn.Module):
    """One pre-norm decoder layer: h = x + Attn(RMSNorm(x)); out = h + SwiGLU(RMSNorm(h))."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, start_pos: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, start_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """The whole decoder: token embedding, L blocks, final RMSNorm, and the output projection to the vocabulary."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.register_buffer("inv_freq", rope_frequencies(config.head_dim, config.rope_theta), persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0,
                last_only: bool = False) -> torch.Tensor:
        """tokens: (B, T) token ids at positions start_pos … start_pos+T−1 → logits (B, T, V), or (B, 1, V) for
        the last position only with ``last_only`` (generation needs no more: it saves the output layer's work)."""
        x = decoder_layers(self, tokens, cache, start_pos)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """N, the parameter count (shared tensors counted once)."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.embed_tokens.weight.numel() if exclude_embeddings else total


def decoder_layers(model: nn.Module, tokens: torch.Tensor, cache: KVCache | None = None,
                   start_pos: int = 0) -> torch.Tensor:
    """Embedding, RoPE angles and every block, before the final RMSNorm: tokens (B, T) → hidden states (B, T, d).

    ``model`` is a :class:`Llama` or any module with its ``embed_tokens``, ``inv_freq`` and ``layers`` (a reward
    model's body, say)."""
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (batch, seq), got {tuple(tokens.shape)}")
    x = model.embed_tokens(tokens)
    positions = torch.arange(start_pos, start_pos + tokens.shape[1], device=tokens.device)
    cos, sin = rope_cos_sin(positions, model.inv_freq)
    for i, layer in enumerate(model.layers):
        x = layer(x, cos, sin, cache, i, start_pos)
    return x


# ----------------------------------------------------------------------------------------------------------------
# Building from weights, and transformers interoperability


def llama_from_state_dict(config: LlamaConfig, state: dict[str, torch.Tensor],
                          dtype: torch.dtype | None = None) -> Llama:
    """A :class:`Llama` holding ``state`` (course names; ``lm_head.weight`` may be left out when the embeddings
    are tied), built on the meta device so that nothing is randomly initialised; cast to ``dtype`` if given."""
    state = dict(state)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    with torch.device("meta"):
        model = Llama(config)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.inv_freq = rope_frequencies(config.head_dim, config.rope_theta).to(model.embed_tokens.weight.device)
    return model.to(dtype) if dtype is not None else model


def llama_from_hf(hf_model: transformers.LlamaForCausalLM) -> Llama:
    """The course's model with the weights (and dtype and device) of a transformers ``LlamaForCausalLM``."""
    state = {key.removeprefix("model."): value for key, value in hf_model.state_dict().items()
             if "rotary_emb" not in key}
    model = llama_from_state_dict(LlamaConfig.from_hf(hf_model.config), state, next(hf_model.parameters()).dtype)
    return model.train(hf_model.training)


def llama_to_hf(model: Llama) -> transformers.LlamaForCausalLM:
    """A transformers ``LlamaForCausalLM`` with the course model's weights, dtype and device."""
    from transformers import LlamaForCausalLM

    parameter = next(model.parameters())
    hf_model = LlamaForCausalLM(model.config.to_hf())
    state = {(key if key.startswith("lm_head") else f"model.{key}"): value
             for key, value in model.state_dict().items()}
    hf_model.load_state_dict(state, strict=True)
    return hf_model.to(device=parameter.device, dtype=parameter.dtype).train(model.training)


# ----------------------------------------------------------------------------------------------------------------
# Generation


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose the next token from logits (B, V) → (B,): greedy at temperature 0, else sample from
    softmax(logits / temperature) restricted to the top_k tokens and to the smallest set of probability ≥ top_p."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature ≥ 0 and 0 < top_p ≤ 1, got temperature={temperature}, top_p={top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ranked above each one
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: Llama, tokens: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
             top_p: float = 1.0, top_k: int | None = None, eos_token_id: int | None = None,
             generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
    """Extend tokens (B, T) by up to ``max_new_tokens`` → (B, T + n). With ``use_cache`` each step feeds one new
    token and reads earlier keys and values from a :class:`KVCache`; without it each step re-reads the whole
    sequence. Sequences that produced ``eos_token_id`` are padded with it; generation stops when all have."""
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (batch, seq), got {tuple(tokens.shape)}")
    parameter = next(model.parameters())
    cache = (KVCache(model.config, tokens.shape[0], tokens.shape[1] + max_new_tokens, parameter.device,
                     parameter.dtype) if use_cache else None)
    done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    logits = model(tokens, cache, 0, last_only=True)[:, -1]
    for step in range(max_new_tokens):
        next_token = sample_next(logits, temperature, top_p, top_k, generator)
        if eos_token_id is not None:
            next_token = next_token.masked_fill(done, eos_token_id)
            done |= next_token == eos_token_id
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        if step == max_new_tokens - 1 or bool(done.all()):
            break  # no forward pass for logits that would not be used
        logits = (model(next_token[:, None], cache, tokens.shape[1] - 1) if use_cache
                  else model(tokens, last_only=True))[:, -1]
    return tokens
