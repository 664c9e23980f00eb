"""helpers.llama.gpt2 is numerically transformers' GPT2LMHeadModel, and matches a LLaMA's parameter count."""

import pytest
import torch
from transformers import GPT2LMHeadModel

from helpers.checks import assert_close
from helpers.llama.gpt2 import GPT2, GPT2Config, gpt2_like, gpt2_to_hf
from helpers.llama.model import Llama, LlamaConfig, llama_hidden_dim

torch.set_num_threads(1)


def _model(tied=False, layers=2, heads=4, dim=32, seed=0, dropout=0.0, inner=None):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=53, n_positions=24, hidden_size=dim, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=inner, dropout=dropout,
                        tie_word_embeddings=tied)
    model = GPT2(config).eval()
    with torch.no_grad():  # biases and LayerNorm parameters start at 0 and 1: random values test them too
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)  # LayerNorm gains near 1, biases near 0
    return model


@pytest.mark.parametrize("tied,layers,heads,inner", [(False, 2, 4, None), (True, 3, 2, None), (False, 1, 8, 40)])
def test_logits_equal_transformers_gpt2(tied, layers, heads, inner):
    model = _model(tied, layers, heads, inner=inner)
    hf = gpt2_to_hf(model)
    assert isinstance(hf, GPT2LMHeadModel) and not hf.training
    g = torch.Generator().manual_seed(1)
    for shape in [(1, 1), (2, 7), (3, 24)]:
        tokens = torch.randint(0, 53, shape, generator=g)
        with torch.no_grad():
            assert_close(model(tokens), hf(tokens).logits, name=f"logits {shape}", atol=1e-5, rtol=1e-5)
    assert model.num_parameters() == hf.num_parameters()


def test_gradients_equal_transformers():
    model = _model(seed=2)
    hf = gpt2_to_hf(model)
    tokens = torch.randint(0, 53, (2, 11), generator=torch.Generator().manual_seed(3))
    model(tokens).square().mean().backward()
    hf(tokens).logits.square().mean().backward()
    assert_close(model.h[0].attn.c_attn.weight.grad, hf.transformer.h[0].attn.c_attn.weight.grad.t(),
                 name="grad of c_attn", atol=1e-6, rtol=1e-4)
    assert_close(model.wpe.weight.grad, hf.transformer.wpe.weight.grad, name="grad of wpe", atol=1e-6, rtol=1e-4)


def test_is_causal_and_uses_positions():
    model = _model(seed=4)
    tokens = torch.randint(0, 53, (1, 10), generator=torch.Generator().manual_seed(5))
    changed = tokens.clone()
    changed[0, 6] = (changed[0, 6] + 1) % 53
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert_close(a[:, :6], b[:, :6], name="logits before the changed token")
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    same = torch.full((1, 5), 7)  # the same token everywhere: only the position tells them apart
    with torch.no_grad():
        out = model(same)
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_dropout_only_in_training_mode():
    model = _model(dropout=0.5, seed=6)
    tokens = torch.randint(0, 53, (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(model.eval()(tokens), model(tokens))
        assert not torch.allclose(model.train()(tokens), model.eval()(tokens))


def test_errors_name_the_expected_shape():
    model = _model()
    with pytest.raises(ValueError, match=r"shape \(batch, seq\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="longer than the 24 learned positions"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible by num_attention_heads=5"):
        GPT2Config(hidden_size=32, num_attention_heads=5)


def test_residual_projections_are_scaled_at_initialisation():
    torch.manual_seed(8)
    model = GPT2(GPT2Config(vocab_size=50, n_positions=16, hidden_size=256, num_hidden_layers=8,
                            num_attention_heads=4))
    assert model.h[0].mlp.c_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)  # 0.02 / sqrt(2L)
    assert model.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert float(model.h[0].mlp.c_fc.bias.detach().abs().max()) == 0.0


@pytest.mark.parametrize("dim,layers,heads,seq", [(128, 4, 4, 128), (384, 6, 6, 256), (32, 2, 4, 32)])
def test_gpt2_like_has_about_the_parameters_of_the_llama(dim, layers, heads, seq):
    config = LlamaConfig(vocab_size=84, hidden_size=dim, intermediate_size=llama_hidden_dim(dim, multiple_of=32),
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=seq)
    gpt2_config = gpt2_like(config, n_positions=seq)
    assert gpt2_config.intermediate_size == 4 * dim and not gpt2_config.tie_word_embeddings
    llama, gpt2 = Llama(config), GPT2(gpt2_config)
    assert abs(gpt2.num_parameters() / llama.num_parameters() - 1) < 0.02


def test_tied_embeddings_share_one_tensor():
    tied, untied = _model(tied=True), _model(tied=False)
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.num_parameters() - tied.num_parameters() == 53 * 32  # V · d counted once
