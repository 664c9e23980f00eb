"""AudioLM's three token transformers, each a LLaMA decoder (helpers.llama) over one stream of
:class:`~helpers.audiolm.tokens.TokenLayout` ids, and the three inference modes.

- semantic stage: p(s_t | s_<t)                        long-term structure (which notes, which words)
- coarse stage:   p(c_j | s_all, c_<j), levels 1..Q′    the sound, conditioned on the whole semantic sequence
- fine stage:     p(f_j | c_all, f_<j), levels Q′+1..Q  detail, conditioned on the coarse codes

Sampling restricts each acoustic position to the K ids of its RVQ level. The modes (AudioLM §4):
unconditional (semantic tokens sampled too), acoustic generation for given semantic tokens, and continuation of a
prompt (its semantic and acoustic tokens are the prefix of each stage).

``audiolm_pytorch``'s Semantic/Coarse/FineTransformer are other networks (T5-style relative position bias, LayerNorm,
GEGLU, learned start tokens, separate semantic/coarse/fine embeddings and per-level output matrices, K + 1 outputs per
level), so their wrappers cannot run these weights: the course uses their token layout (checked in the tests), not
their architecture. Shapes: B batch, T acoustic frames, T_s semantic frames, Q′ coarse levels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from helpers.audiolm.tokens import TokenLayout
from helpers.llama.model import KVCache, Llama, LlamaConfig, sample_next


def stage_model(layout: TokenLayout, dim: int, layers: int, heads: int, context: int) -> Llama:
    """A LLaMA decoder over the layout's vocabulary with room for ``context`` positions (SwiGLU width 8d/3, rounded)."""
    hidden = 32 * -(-(8 * dim // 3) // 32)
    return Llama(LlamaConfig(vocab_size=layout.vocab_size, hidden_size=dim, intermediate_size=hidden,
                             num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=context))


def next_token_loss(model: Llama, sequence: torch.Tensor, target_start: int) -> torch.Tensor:
    """Cross-entropy of predicting ``sequence[:, target_start:]`` (B, L), each token from those before it (the
    conditioning part before ``target_start`` is read, not predicted)."""
    _check_context(model, sequence.shape[1], 0)
    logits = model(sequence[:, :-1])[:, target_start - 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), sequence[:, target_start:].reshape(-1))


def _check_context(model: Llama, prompt: int, new: int) -> None:
    context = model.config.max_position_embeddings
    if prompt + new > context:
        raise ValueError(f"the model's context holds {context} tokens, got a prompt of {prompt} tokens plus {new} "
                         f"to generate")


@torch.no_grad()
def generate(model: Llama, prefix: torch.Tensor, new_tokens: int, allowed: Callable[[int], tuple[int, int]],
             temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """Sample ``new_tokens`` after prefix (B, P) → (B, new_tokens); token i is drawn among ids [lo, hi) =
    ``allowed(i)`` (greedy at temperature 0). One new token per step, earlier keys and values from a KV cache."""
    if prefix.ndim != 2:
        raise ValueError(f"expected a prefix of shape (batch, tokens), got {tuple(prefix.shape)}")
    _check_context(model, prefix.shape[1], new_tokens)
    was_training = model.training
    model.eval()
    weight = next(model.parameters())
    cache = KVCache(model.config, prefix.shape[0], prefix.shape[1] + new_tokens, weight.device, weight.dtype)
    logits = model(prefix, cache, 0, last_only=True)[:, -1]
    out = []
    for i in range(new_tokens):
        lo, hi = allowed(i)
        token = sample_next(logits[:, lo:hi], temperature, top_k=top_k, generator=generator) + lo
        out.append(token)
        if i < new_tokens - 1:
            logits = model(token[:, None], cache, prefix.shape[1] + i)[:, -1]
    model.train(was_training)
    return torch.stack(out, dim=1) if out else prefix.new_zeros(prefix.shape[0], 0)


@dataclass
class Hierarchy:
    """The three stages, their shared layout, and how many acoustic frames there are per semantic frame."""

    semantic: Llama
    coarse: Llama
    fine: Llama
    layout: TokenLayout
    frames_per_semantic: int = 1  # r = T / T_s
    fine_window: int | None = None  # frames per fine-stage chunk (AudioLM: 3 s); None: the whole clip at once

    def sample_semantic(self, frames: int, prompt: torch.Tensor | None = None, batch: int = 1,
                        **sampling) -> torch.Tensor:
        """Semantic tokens (B, frames): the prompt (B, t) then frames − t sampled ones."""
        lay = self.layout
        prompt = torch.zeros(batch, 0, dtype=torch.long) if prompt is None else prompt
        new = generate(self.semantic, lay.semantic_sequence(prompt), frames - prompt.shape[1],
                       lambda i: (0, lay.semantic_size), **sampling)
        return torch.cat([prompt, new], dim=1)

    def sample_coarse(self, semantic: torch.Tensor, prompt: torch.Tensor | None = None, **sampling) -> torch.Tensor:
        """Coarse codes (B, T, Q′), T = r · T_s, given all semantic tokens (B, T_s) and the prompt's (B, t, Q′)."""
        lay, q = self.layout, self.layout.coarse_quantizers
        prompt = semantic.new_zeros(semantic.shape[0], 0, q) if prompt is None else prompt
        frames = semantic.shape[1] * self.frames_per_semantic - prompt.shape[1]
        start = prompt.shape[1] * q
        new = generate(self.coarse, lay.coarse_sequence(semantic, prompt), frames * q,
                       lambda i: lay.allowed(start + i, 0, q), **sampling)
        return torch.cat([prompt, lay.codes_from_ids(new, 0, q)], dim=1)

    def sample_fine(self, coarse: torch.Tensor, prompt: torch.Tensor | None = None, **sampling) -> torch.Tensor:
        """Fine codes (B, T, Q − Q′) given all coarse codes (B, T, Q′) and the prompt's fine codes (B, t, Q − Q′).

        With ``fine_window`` = W the frames are cut into chunks of W, each sampled from its own coarse codes only
        (AudioLM's fine stage works on 3-second chunks: fine detail is local), the prompt's frames kept."""
        lay = self.layout
        first, q = lay.coarse_quantizers, lay.num_quantizers - lay.coarse_quantizers
        prompt = coarse.new_zeros(coarse.shape[0], 0, q) if prompt is None else prompt
        if q == 0:
            return prompt
        window = self.fine_window or coarse.shape[1]
        chunks = []
        for start in range(0, coarse.shape[1], window):
            chunk = coarse[:, start:start + window]
            known = prompt[:, start:start + window]  # the prompt's fine codes in this chunk, if any
            offset = known.shape[1] * q
            new = generate(self.fine, lay.fine_sequence(chunk, known), (chunk.shape[1] - known.shape[1]) * q,
                           lambda i, offset=offset: lay.allowed(offset + i, first, q), **sampling)
            chunks.append(torch.cat([known, lay.codes_from_ids(new, first, q)], dim=1))
        return torch.cat(chunks, dim=1)

    def acoustic(self, semantic: torch.Tensor, prompt_codes: torch.Tensor | None = None, **sampling) -> torch.Tensor:
        """Acoustic generation: all Q levels of codes (B, r · T_s, Q) for given semantic tokens (B, T_s)."""
        q = self.layout.coarse_quantizers
        coarse_prompt = fine_prompt = None
        if prompt_codes is not None:
            self._check_codes(prompt_codes)
            coarse_prompt, fine_prompt = prompt_codes[..., :q], prompt_codes[..., q:]
        coarse = self.sample_coarse(semantic, coarse_prompt, **sampling)
        return torch.cat([coarse, self.sample_fine(coarse, fine_prompt, **sampling)], dim=-1)

    def unconditional(self, semantic_frames: int, batch: int = 1, **sampling) -> torch.Tensor:
        """Codes (B, r · semantic_frames, Q) from nothing: semantic, then coarse, then fine tokens sampled."""
        return self.acoustic(self.sample_semantic(semantic_frames, batch=batch, **sampling), **sampling)

    def continuation(self, prompt_semantic: torch.Tensor, prompt_codes: torch.Tensor, semantic_frames: int,
                     **sampling) -> torch.Tensor:
        """Continue a prompt given as its semantic tokens (B, t_s) and codes (B, r · t_s, Q) to semantic_frames
        semantic frames: codes (B, r · semantic_frames, Q) whose first frames are the prompt's."""
        self._check_codes(prompt_codes)
        if prompt_codes.shape[1] != prompt_semantic.shape[1] * self.frames_per_semantic:
            raise ValueError(f"expected {self.frames_per_semantic} acoustic frames per semantic frame, got "
                             f"{prompt_codes.shape[1]} for {prompt_semantic.shape[1]}")
        semantic = self.sample_semantic(semantic_frames, prompt_semantic, **sampling)
        return self.acoustic(semantic, prompt_codes, **sampling)

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.ndim != 3 or codes.shape[-1] != self.layout.num_quantizers:
            raise ValueError(f"expected codes of shape (batch, frames, {self.layout.num_quantizers}), "
                             f"got {tuple(codes.shape)}")
