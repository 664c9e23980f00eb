"""helpers.llama.pretraining: the next-token loss equals transformers', the mixture adds up, the sampler realises its
proportions and epochs, and the compute of LLaMA-65B's run comes out as the paper reports."""

import math

import numpy as np
import pytest
import torch

from helpers.checks import assert_close
from helpers.llama.model import Llama, LlamaConfig, llama_to_hf
from helpers.llama.pretraining import (
    LLAMA_65B_DAYS,
    LLAMA_65B_GPUS,
    LLAMA_65B_PARAMS,
    LLAMA_65B_TOKENS_PER_GPU_SECOND,
    LLAMA_MIXTURE,
    LLAMA_TOKENS_LARGE,
    LLAMA_TOKENS_SMALL,
    MixtureSampler,
    Source,
    check_proportions,
    cluster_flops,
    epochs,
    gpu_hours,
    model_flops_utilisation,
    next_token_loss,
    perplexity,
    training_days,
    training_flops,
    utilisation_from_throughput,
)


def _tiny_llama(seed=0, kv_heads=2):
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=53, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64))


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_next_token_loss_equals_transformers(kv_heads):
    model = _tiny_llama(kv_heads=kv_heads)
    hf = llama_to_hf(model)
    tokens = torch.randint(0, 53, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(next_token_loss(model(tokens), tokens), hf(tokens, labels=tokens).loss, atol=1e-5, name="loss")


def test_next_token_loss_ignores_padding_like_transformers():
    model = _tiny_llama()
    hf = llama_to_hf(model)
    tokens = torch.randint(0, 53, (2, 9), generator=torch.Generator().manual_seed(2))
    labels = tokens.clone()
    labels[0, 6:] = -100  # the first sequence is 6 tokens long, then padding
    with torch.no_grad():
        got = next_token_loss(model(tokens), labels)
        assert_close(got, hf(tokens, labels=labels).loss, atol=1e-5, name="padded loss")
        # by hand: the mean over the 5 + 8 predicted tokens
        logp = model(tokens)[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None].clamp(min=0))[..., 0]
        mask = labels[:, 1:] != -100
        assert_close(got, -(logp * mask).sum() / mask.sum(), atol=1e-6, name="padded loss by hand")


def test_next_token_loss_of_uniform_logits_is_log_vocab_and_rejects_bad_shapes():
    tokens = torch.randint(0, 50, (2, 7))
    loss = next_token_loss(torch.zeros(2, 7, 50), tokens)
    assert math.isclose(float(loss), math.log(50), rel_tol=1e-6)
    assert math.isclose(perplexity(loss), 50, rel_tol=1e-5)
    with pytest.raises(ValueError, match="need logits"):
        next_token_loss(torch.zeros(2, 6, 50), tokens)


def test_mixture_table_adds_up():
    assert len(LLAMA_MIXTURE) == 7
    check_proportions({s.name: s.proportion for s in LLAMA_MIXTURE})
    assert math.isclose(sum(s.proportion for s in LLAMA_MIXTURE), 1.0, abs_tol=1e-12)
    by_name = {s.name: s for s in LLAMA_MIXTURE}
    assert by_name["CommonCrawl"] == Source("CommonCrawl", 0.67, 1.10, 3300.0)
    assert by_name["Wikipedia"].epochs == 2.45 and by_name["Github"].epochs == 0.64
    with pytest.raises(ValueError, match="sum to 0.9"):
        check_proportions({"a": 0.5, "b": 0.4})
    with pytest.raises(ValueError, match="negative"):
        check_proportions({"a": 1.5, "b": -0.5})


def test_implied_source_sizes_and_epochs():
    wiki = next(s for s in LLAMA_MIXTURE if s.name == "Wikipedia")
    assert math.isclose(wiki.tokens_seen(), 0.045 * 1.4e12)
    assert math.isclose(wiki.unique_tokens(), 0.045 * 1.4e12 / 2.45)  # about 25.7 billion tokens
    assert math.isclose(epochs(wiki.proportion, LLAMA_TOKENS_LARGE, wiki.unique_tokens()), 2.45)
    # the 1.0T-token runs of the 7B and 13B models read every source 1/1.4 as often
    assert math.isclose(epochs(wiki.proportion, LLAMA_TOKENS_SMALL, wiki.unique_tokens()), 2.45 / 1.4)
    total = sum(s.unique_tokens() for s in LLAMA_MIXTURE)
    assert 1.25e12 < total < 1.28e12


def test_sampler_realises_proportions_and_epochs():
    n = 200_000
    sampler = MixtureSampler.from_sources(LLAMA_MIXTURE, total_sequences=n, seed=0)
    index = sampler.sample(n)
    assert index.shape == (n,) and index.min() >= 0 and index.max() < 7
    assert int(sampler.counts.sum()) == n
    realised, passes = sampler.realised_proportions, sampler.epochs
    for s in LLAMA_MIXTURE:
        sd = math.sqrt(s.proportion * (1 - s.proportion) / n)  # binomial standard deviation of the share
        assert abs(realised[s.name] - s.proportion) < 5 * sd, s.name
        assert abs(passes[s.name] - s.epochs) / s.epochs < 0.05, s.name


def test_sampler_is_seeded_and_validates():
    a = MixtureSampler({"x": 0.3, "y": 0.7}, {"x": 3, "y": 7}, seed=5).sample(50)
    b = MixtureSampler({"x": 0.3, "y": 0.7}, {"x": 3, "y": 7}, seed=5).sample(50)
    assert np.array_equal(a, b)
    one = MixtureSampler({"only": 1.0}, {"only": 4})
    assert set(one.sample(10).tolist()) == {0} and one.epochs == {"only": 2.5}
    with pytest.raises(ValueError, match="sizes are given"):
        MixtureSampler({"x": 1.0}, {"y": 3})
    with pytest.raises(ValueError, match="at least one sequence"):
        MixtureSampler({"x": 1.0}, {"x": 0})


def test_stream_reads_each_source_in_epochs():
    data = {"prose": [f"p{i}" for i in range(4)], "code": [f"c{i}" for i in range(2)]}
    sampler = MixtureSampler({"prose": 0.5, "code": 0.5}, {"prose": 4, "code": 2}, seed=1)
    stream = sampler.stream(data)
    drawn = [next(stream) for _ in range(40)]
    prose = [item for name, item in drawn if name == "prose"]
    assert all(item[0] == name[0] for name, item in drawn)  # each item comes from the source named with it
    for start in range(0, len(prose) - len(prose) % 4, 4):  # every complete pass holds each sequence once
        assert sorted(prose[start:start + 4]) == data["prose"]
    assert math.isclose(sampler.epochs["prose"], len(prose) / 4)
    with pytest.raises(ValueError, match="holds 3 sequences"):
        next(MixtureSampler({"prose": 1.0}, {"prose": 4}).stream({"prose": ["a", "b", "c"]}))


def test_six_n_d_for_llama_65b():
    c = training_flops(LLAMA_65B_PARAMS, LLAMA_TOKENS_LARGE)
    assert math.isclose(c, 6 * 65.2e9 * 1.4e12) and math.isclose(c, 5.4768e23)


def test_cluster_peak_and_utilisation_of_the_65b_run():
    peak = cluster_flops(LLAMA_65B_GPUS, LLAMA_65B_DAYS)
    assert math.isclose(peak, 312e12 * 2048 * 21 * 86_400)  # about 1.16e24 FLOPs
    mfu = model_flops_utilisation(LLAMA_65B_PARAMS, LLAMA_TOKENS_LARGE, LLAMA_65B_GPUS, LLAMA_65B_DAYS)
    assert 0.46 < mfu < 0.48
    assert math.isclose(utilisation_from_throughput(LLAMA_65B_PARAMS, 380), 6 * 65.2e9 * 380 / 312e12)
    assert math.isclose(gpu_hours(2048, 21), 1_032_192)


def test_days_from_the_reported_throughput():
    days = training_days(LLAMA_TOKENS_LARGE, LLAMA_65B_TOKENS_PER_GPU_SECOND, LLAMA_65B_GPUS)
    assert round(days, 1) == 20.8
    assert math.isclose(days, 1.4e12 / (380 * 2048) / 86_400)
