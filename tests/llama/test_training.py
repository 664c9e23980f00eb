"""helpers.llama.training: the reference step clips and schedules, evaluate restores the mode, the export
round-trips."""

import copy
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, get_cosine_with_min_lr_schedule_with_warmup

from helpers.checks import assert_close
from helpers.common.optim import adamw, autocast, cosine_lr
from helpers.llama.gpt2 import GPT2, GPT2Config
from helpers.llama.model import Llama, LlamaConfig, generate, llama_to_hf
from helpers.llama.pretraining import CharTokenizer, next_token_loss
from helpers.llama.training import eval_batches, evaluate, load_char_tokenizer, save_hf, train_step

torch.set_num_threads(1)


def _llama(seed=0, tied=False):
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=31, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                             tie_word_embeddings=tied))


def _tokens(shape, seed=1):
    return torch.randint(0, 31, shape, generator=torch.Generator().manual_seed(seed))


def test_adamw_decays_matrices_only_and_uses_llamas_betas():
    model = _llama(tied=True)
    optimiser = adamw(model, 1e-3)
    decayed, plain = optimiser.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0 and decayed["betas"] == (0.9, 0.95)
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_train_step_is_adamw_with_clipping_by_hand():
    model = _llama()
    reference = copy.deepcopy(model)
    batch = _tokens((3, 9))
    loss, norm = train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), batch, lr=0.5, grad_clip=0.01)
    # by hand: the loss, its gradient, the global norm, the clipped SGD update
    expected_loss = llama_to_hf(reference)(input_ids=batch, labels=batch).loss.detach()
    grads = torch.autograd.grad(next_token_loss(reference(batch), batch), list(reference.parameters()))
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert_close(loss, expected_loss, name="loss", atol=1e-6)
    assert_close(norm, total, name="gradient norm before clipping", atol=1e-6)
    scale = min(1.0, 0.01 / (total.item() + 1e-6))
    for p, q, g in zip(model.parameters(), reference.parameters(), grads, strict=True):
        assert_close(p.detach(), (q - 0.5 * scale * g).detach(), name="parameter after a clipped SGD step", atol=1e-7)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert clipped.item() == pytest.approx(0.01, rel=1e-4)


def test_train_step_sets_the_learning_rate_and_learns():
    model = _llama(seed=2)
    optimiser = adamw(model, lr=123.0)
    batch = _tokens((4, 16), seed=3)
    losses = [train_step(model, optimiser, batch, lr=3e-3)[0].item() for _ in range(20)]
    assert all(group["lr"] == 3e-3 for group in optimiser.param_groups)
    assert losses[-1] < losses[0] - 0.5
    with pytest.raises(ValueError, match=r"shape \(batch, seq\)"):
        train_step(model, optimiser, batch[0], lr=1e-3)


def test_evaluate_is_the_mean_loss_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(4)
    model = GPT2(GPT2Config(vocab_size=31, n_positions=16, hidden_size=16, num_hidden_layers=2,
                            num_attention_heads=2, dropout=0.5)).train()
    batches = eval_batches(torch.arange(500) % 31, n_batches=3, batch_size=2, seq_len=16, seed=5)
    assert batches.shape == (3, 2, 16)
    assert torch.equal(batches, eval_batches(torch.arange(500) % 31, 3, 2, 16, seed=5))
    value = evaluate(model, batches)
    assert model.training and isinstance(value, float)
    model.eval()
    with torch.no_grad():
        expected = sum(torch.nn.functional.cross_entropy(model(b)[:, :-1].reshape(-1, 31), b[:, 1:].reshape(-1))
                       for b in batches) / 3
    assert value == pytest.approx(expected.item(), rel=1e-6)
    assert evaluate(model, batches) == value and not model.training
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="at least one batch"):
        evaluate(model, [])


def test_cosine_lr_equals_transformers_schedule_after_warmup_and_torch_sequential_lr():
    max_lr, warmup, total, min_lr = 2.0, 5, 40, 0.2
    optimiser = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    hf = get_cosine_with_min_lr_schedule_with_warmup(optimiser, warmup, total, min_lr_rate=0.1)
    hf_lrs = []
    for _ in range(total + 1):
        hf_lrs.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        hf.step()
    ours = [cosine_lr(s, max_lr, warmup, total, min_lr) for s in range(total + 1)]
    # transformers starts its warm-up at 0 (a step that changes nothing): ours is its schedule one step ahead there
    assert ours[:warmup] == pytest.approx(hf_lrs[1:warmup + 1])
    assert ours[warmup:] == pytest.approx(hf_lrs[warmup:])
    assert ours[-1] == pytest.approx(min_lr) and max(ours) == pytest.approx(max_lr)
    middle = (warmup + total) // 2
    assert ours[middle] == pytest.approx(
        min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * (middle - warmup) / (total - warmup))))


def test_autocast_is_off_on_the_cpu():
    with autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("tied", [False, True])
def test_save_hf_loads_with_automodel_and_generates_the_same_text(tmp_path, tied):
    tokenizer = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ,.;:")  # V = 31
    model = _llama(seed=6, tied=tied).eval()
    save_hf(model, tmp_path, tokenizer)
    assert load_char_tokenizer(tmp_path).alphabet == tokenizer.alphabet
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert hf.config.bos_token_id is None and hf.generation_config.eos_token_id is None
    prompt = torch.tensor([tokenizer.encode("to be ")])
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
    assert torch.equal(generate(model, prompt, 12), theirs)
    with pytest.raises(FileNotFoundError, match="save_hf"):
        load_char_tokenizer(tmp_path / "missing")
