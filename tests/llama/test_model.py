"""helpers.llama is numerically transformers' LlamaForCausalLM, and its cached generation is exact."""

import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from helpers.checks import assert_close
from helpers.llama.model import (
    KVCache,
    Llama,
    LlamaConfig,
    generate,
    half_split_to_interleaved,
    interleaved_to_half_split,
    kv_cache_bytes,
    llama_from_hf,
    llama_hidden_dim,
    llama_to_hf,
    sample_next,
)

CONFIGS = [  # (heads, kv heads, layers, tied, eps, theta)
    (4, 4, 2, False, 1e-6, 10000.0),  # MHA
    (4, 1, 2, True, 1e-5, 500000.0),  # MQA, tied embeddings
    (8, 2, 3, False, 1e-6, 10000.0),  # GQA
    (6, 3, 1, True, 1e-2, 1000.0),
]


def _hf_model(heads, kv_heads, layers, tied, eps, theta, seed=0):
    torch.manual_seed(seed)
    config = HFLlamaConfig(vocab_size=97, hidden_size=heads * 8, intermediate_size=56, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=eps,
                           rope_theta=theta, tie_word_embeddings=tied, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # transformers initialises norms to ones; random gains test them too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.2)
    return model


@pytest.mark.parametrize("spec", CONFIGS, ids=lambda s: f"h{s[0]}kv{s[1]}L{s[2]}{'tied' if s[3] else ''}")
def test_round_trip_logits_equal_transformers(spec):
    hf = _hf_model(*spec)
    ours = llama_from_hf(hf)
    assert ours.config.num_key_value_heads == spec[1] and ours.config.tie_word_embeddings == spec[3]
    tokens = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(tokens).logits
        assert_close(ours(tokens), expected, atol=1e-5, rtol=1e-5, name="logits")
        back = llama_to_hf(ours)
        assert_close(back(tokens).logits, expected, atol=1e-5, rtol=1e-5, name="logits after llama_to_hf")
    if spec[3]:
        assert ours.lm_head.weight is ours.embed_tokens.weight
        assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()


def test_gradients_equal_transformers():
    hf = _hf_model(8, 2, 2, False, 1e-6, 10000.0).train()
    ours = llama_from_hf(hf).train()
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    hf(tokens, labels=tokens).loss.backward()
    logits = ours(tokens)
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 97), tokens[:, 1:].reshape(-1)).backward()
    hf_grads = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        key = name if name.startswith("lm_head") else f"model.{name}"
        assert_close(p.grad, hf_grads[key].grad, atol=1e-5, rtol=1e-4, name=f"gradient of {name}")


def test_config_round_trip_and_errors():
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rope_theta=1234.0, tie_word_embeddings=True)
    assert LlamaConfig.from_hf(config.to_hf()) == config
    assert LlamaConfig(num_attention_heads=8, hidden_size=64).num_key_value_heads == 8
    with pytest.raises(ValueError, match="multiple of num_key_value_heads=3"):
        LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        LlamaConfig(hidden_size=30, num_attention_heads=4)


def test_hidden_dim_rule_gives_llama_sizes():
    assert llama_hidden_dim(4096) == 11008  # LLaMA-7B
    assert llama_hidden_dim(5120) == 13824  # 13B
    assert llama_hidden_dim(8192, multiple_of=4096, ffn_dim_multiplier=1.3) == 28672  # Llama 2 70B


def test_rope_weight_permutation_is_invertible_and_matches_meta_layout():
    w = torch.randn(4 * 8, 16)
    assert torch.equal(half_split_to_interleaved(interleaved_to_half_split(w, 4), 4), w)
    # In Meta's layout rows (0, 1) of a head form a pair; after the permutation they are rows (0, d_h / 2).
    moved = interleaved_to_half_split(w, 4)
    assert torch.equal(moved[0], w[0]) and torch.equal(moved[4], w[1]) and torch.equal(moved[8], w[8])


def test_kv_cache_memory_formula():
    # Llama 2 7B: 32 layers, 32 KV heads of 128, 4096 positions, float16: 2 GiB per sequence.
    assert kv_cache_bytes(32, 32, 128, 4096) == 2 * 1024**3
    config = LlamaConfig(vocab_size=10, hidden_size=16, intermediate_size=8, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    cache = KVCache(config, batch_size=2, max_seq_len=5)
    assert cache.memory_bytes() == kv_cache_bytes(3, 2, 4, 5, 2, bytes_per_value=4)
    with pytest.raises(ValueError, match="holds 5 positions"):
        cache.update(0, torch.zeros(2, 2, 6, 4), torch.zeros(2, 2, 6, 4), 0)


def _small_model(seed=0):
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2)).eval()


def test_cached_prefill_in_chunks_equals_one_pass():
    model = _small_model()
    tokens = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(3))
    cache = KVCache(model.config, 2, 12)
    with torch.no_grad():
        chunks = [model(tokens[:, :5], cache, 0), model(tokens[:, 5:6], cache, 5), model(tokens[:, 6:], cache, 6)]
        assert_close(torch.cat(chunks, dim=1), model(tokens), atol=1e-5, rtol=1e-5, name="chunked logits")


def test_greedy_generation_with_cache_equals_without():
    model = _small_model(1)
    prompt = torch.randint(0, 61, (3, 4), generator=torch.Generator().manual_seed(4))
    cached = generate(model, prompt, 20)
    assert cached.shape == (3, 24) and torch.equal(cached[:, :4], prompt)
    assert torch.equal(cached, generate(model, prompt, 20, use_cache=False))


def test_generation_makes_one_forward_pass_per_new_token():
    model = _small_model(3)
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    generate(model, torch.zeros(1, 4, dtype=torch.long), 16)
    hook.remove()
    assert len(calls) == 16  # the prefill gives the first token, then 15 single-token steps


def test_greedy_generation_equals_transformers_generate():
    hf = _hf_model(4, 2, 2, False, 1e-6, 10000.0)
    prompt = torch.randint(0, 97, (1, 5), generator=torch.Generator().manual_seed(5))
    expected = hf.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(llama_from_hf(hf), prompt, 12), expected)


def test_sampling_respects_top_k_top_p_and_eos():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, top_k=2, generator=g).tolist()) == {0, 1}
    assert set(sample_next(logits, 1.0, top_p=0.7, generator=g).tolist()) == {0, 1}  # 0.5 < 0.7 ≤ 0.8
    assert set(sample_next(logits, 1.0, top_p=0.5, generator=g).tolist()) == {0}
    assert sample_next(logits[:1], 0.0).item() == 0
    with pytest.raises(ValueError, match="0 < top_p"):
        sample_next(logits, 1.0, top_p=0.0)
    model = _small_model(2)
    prompt = torch.zeros(2, 3, dtype=torch.long)
    first = generate(model, prompt, 1)[:, -1]
    out = generate(model, prompt, 10, eos_token_id=int(first[0]))
    assert out.shape[1] <= 13 and bool((out[0, 3:] == first[0]).all())
