"""LLaMA (Touvron et al., 2023) and Llama 2-Chat, built from scratch. Start with ``model.py``: the whole model in
one file, numerically equal to transformers' ``LlamaForCausalLM``; its names are importable from here too
(``from helpers.llama import Llama, LlamaConfig, RMSNorm``).

- ``model``: RMSNorm, SwiGLU, RoPE, grouped-query attention with a KV cache, the model, ``generate``.
- ``pretraining``: the next-token loss, the seven-source data mixture, the compute of a run, tokenizers.
- ``training``: the training step, the evaluation and the export that Lab 1 checks against.
- ``shakespeare``: the Shakespeare corpus (``python data/llama/shakespeare.py``). ``gpt2``: the baseline.
- ``chat``: the chat template, SFT on answers only, reward models and the margin loss (Llama 2-Chat).
- ``preferences``: Lab 2's prompts, rule-labelled preferences. ``smollm2``: real pretrained weights (GGUF).
"""

from helpers.llama.model import (
    Attention,
    Block,
    KVCache,
    Llama,
    LlamaConfig,
    RMSNorm,
    SwiGLU,
    apply_rope,
    decoder_layers,
    generate,
    half_split_to_interleaved,
    interleaved_to_half_split,
    kv_cache_bytes,
    llama_from_hf,
    llama_from_state_dict,
    llama_hidden_dim,
    llama_to_hf,
    rope_cos_sin,
    rope_frequencies,
    rotate_half,
    sample_next,
)

__all__ = ["Attention", "Block", "KVCache", "Llama", "LlamaConfig", "RMSNorm", "SwiGLU", "apply_rope",
           "decoder_layers", "generate", "half_split_to_interleaved", "interleaved_to_half_split", "kv_cache_bytes",
           "llama_from_hf", "llama_from_state_dict", "llama_hidden_dim", "llama_to_hf", "rope_cos_sin",
           "rope_frequencies", "rotate_half", "sample_next"]
