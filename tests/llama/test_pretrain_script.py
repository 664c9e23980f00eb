"""scripts/llama/pretrain.py: DDP over 2 CPU processes follows the 1-process loss trajectory; its helpers."""

import json
import math
import random
import subprocess
import sys

import pytest
import torch

from helpers.common.optim import cosine_lr
from helpers.llama.pretraining import CharTokenizer, random_batch, train_byte_level_bpe
from helpers.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "llama" / "pretrain.py"
TINY = ["--steps", "6", "--global_batch", "8", "--seq_len", "32", "--dim", "32", "--layers", "2", "--heads", "4",
        "--kv_heads", "2", "--warmup", "2"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = random.Random(0)
    words = "to be or not that is the question whether tis nobler in the mind to suffer".split()
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(20000)))
    return path


def _run(text_file, tmp_path, processes):
    out = tmp_path / f"losses_{processes}.json"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*(launcher if processes > 1 else [sys.executable]), str(SCRIPT), "--data", str(text_file),
               "--out", str(out), *TINY]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_processes_follow_the_one_process_loss_trajectory(text_file, tmp_path):
    one, two = _run(text_file, tmp_path, 1), _run(text_file, tmp_path, 2)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert len(one["losses"]) == len(two["losses"]) == 6
    assert max(abs(a - b) for a, b in zip(one["losses"], two["losses"], strict=True)) < 1e-4
    assert one["losses"][-1] < one["losses"][0] - 0.1  # it learns


@pytest.mark.slow
def test_export_loads_with_automodel_and_generates_the_same_text(text_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from helpers.llama.model import generate, llama_from_hf

    folder = tmp_path / "hf"
    command = [sys.executable, str(SCRIPT), "--data", str(text_file), "--save_hf", str(folder), *TINY]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    alphabet = json.loads((folder / "char_tokenizer.json").read_text())["alphabet"]
    tokenizer = CharTokenizer(alphabet)
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    prompt = torch.tensor([tokenizer.encode("to be or ")])
    # an explicit mask: without one, transformers takes pad_token_id tokens for padding (id 0 is the space here)
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30, do_sample=False)
    ours = generate(llama_from_hf(hf), prompt, 30)
    assert tokenizer.decode(ours[0]) == tokenizer.decode(theirs[0])


@pytest.mark.slow
def test_global_batch_must_split_evenly(text_file):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
               "--data", str(text_file), *TINY[:2], "--global_batch", "7"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode != 0 and "must be divisible by the 2 processes" in result.stdout + result.stderr


def test_missing_corpus_says_how_to_build_it(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "nothing")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "python data/llama/shakespeare.py" in result.stderr


def test_char_tokenizer_round_trip_and_unknown_characters():
    tokenizer = CharTokenizer.from_text("hello world")
    assert tokenizer.vocab_size == 8 and tokenizer.decode(tokenizer.encode("low hold")) == "low hold"
    with pytest.raises(ValueError, match="'z' is not in the tokenizer's alphabet"):
        tokenizer.encode("zoo")


def test_random_batch_windows_are_consecutive():
    data = torch.arange(100)
    batch = random_batch(data, 5, 10, torch.Generator().manual_seed(0))
    assert batch.shape == (5, 10) and bool(((batch[:, 1:] - batch[:, :-1]) == 1).all())
    with pytest.raises(ValueError, match="more than seq_len=100"):
        random_batch(data, 1, 100, torch.Generator())


def test_cosine_schedule_warms_up_then_decays_to_the_minimum():
    lrs = [cosine_lr(s, 1.0, warmup_steps=10, total_steps=110, min_lr=0.1) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    assert lrs[110] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))


def test_byte_level_bpe_round_trips_and_compresses(text_file):
    text = text_file.read_text()
    tokenizer = train_byte_level_bpe([text], vocab_size=300)
    assert tokenizer.get_vocab_size() == 300
    for sample in (text[:500], "Unseen: ŝtrange ünïcode — and 数字 123!"):
        assert tokenizer.decode(tokenizer.encode(sample).ids) == sample
    assert len(tokenizer.encode(text[:5000]).ids) < 0.5 * 5000  # merges: far fewer tokens than characters
    again = train_byte_level_bpe([text], vocab_size=300)
    assert again.encode(text[:2000]).ids == tokenizer.encode(text[:2000]).ids  # deterministic
