"""Pretrain a small LLaMA (helpers.llama) on a text file, in one process or several with DistributedDataParallel.

    python data/llama/shakespeare.py                                      # builds data/cache/shakespeare/*.txt
    python scripts/llama/pretrain.py --steps 200
    torchrun --nproc_per_node 2 scripts/llama/pretrain.py --steps 200   # the same run, split over 2 processes

Every process draws the same global batch (the same seeded generator) and keeps its own rows, so N processes
with a global batch G compute the same gradients as one process with G: DDP averages the processes' gradients of
their mean losses, which is the gradient of the global mean. The logged loss is that global mean. The step,
the evaluation and the export are helpers.llama.training's (the references of Lab 1): AdamW (β = 0.9, 0.95; weight decay
0.1 on the matrices), linear warm-up then cosine decay, gradient clipping at 1.0, and bfloat16 autocast on a GPU
(gloo on CPUs, nccl on GPUs). Rank 0 writes the losses to --out as JSON and, with --save_hf, the model in Hugging
Face format with its character alphabet (char_tokenizer.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from helpers.common.loop import train_loop  # noqa: E402
from helpers.common.optim import adamw, cosine_lr  # noqa: E402
from helpers.llama.model import Llama, LlamaConfig, llama_hidden_dim  # noqa: E402
from helpers.llama.pretraining import CharTokenizer, random_batch  # noqa: E402
from helpers.llama.training import eval_batches, evaluate, save_hf, train_step  # noqa: E402

DEFAULT_DATA = REPO_ROOT / "data" / "cache" / "shakespeare"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.txt and val.txt, or one file")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--global_batch", type=int, default=16, help="sequences per step, over all processes")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min_lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--grad_clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="draw a progress bar (rank 0)")
    p.add_argument("--out", type=Path, default=None, help="JSON file for the losses (rank 0)")
    p.add_argument("--save_hf", type=Path, default=None,
                   help="folder to save the model in Hugging Face format (AutoModelForCausalLM loads it), rank 0")
    return p.parse_args(argv)


def read_texts(data: Path) -> tuple[str, str | None]:
    """(training text, validation text or None) from a folder holding train.txt/val.txt, or from one file."""
    if data.is_dir():
        train, val = data / "train.txt", data / "val.txt"
        if not train.is_file():
            raise SystemExit(f"{train} does not exist: build it with `python data/llama/shakespeare.py`.")
        return train.read_text(encoding="utf-8"), val.read_text(encoding="utf-8") if val.is_file() else None
    if not data.is_file():
        raise SystemExit(f"{data} does not exist: build the corpus with `python data/llama/shakespeare.py`.")
    return data.read_text(encoding="utf-8"), None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    cuda = torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if args.global_batch % world:
        raise SystemExit(f"--global_batch {args.global_batch} must be divisible by the {world} processes")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")

    train_text, val_text = read_texts(args.data)
    tokenizer = CharTokenizer.from_text(train_text + (val_text or ""))
    train_data = torch.tensor(tokenizer.encode(train_text))
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=args.dim,
                         intermediate_size=llama_hidden_dim(args.dim, multiple_of=32), num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                         max_position_embeddings=args.seq_len)
    torch.manual_seed(args.seed)  # the same initial weights in every process (DDP also broadcasts rank 0's)
    model = Llama(config).to(device)
    trained = DistributedDataParallel(model) if distributed else model
    optimiser = adamw(model, args.lr)  # β = (0.9, 0.95), weight decay 0.1 on the matrices
    batches = torch.Generator().manual_seed(args.seed + 1)  # the same global batches in every process
    local = args.global_batch // world

    def step(_: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        batch = random_batch(train_data, args.global_batch, args.seq_len, batches)  # (G, T)
        mine = batch[rank * local:(rank + 1) * local].to(device)  # (G / world, T)
        # DDP averages the gradients of the processes' mean losses in backward(), before the clipping
        loss, grad_norm = train_step(trained, optimiser, mine, lr, args.grad_clip)
        if distributed:
            dist.all_reduce(loss)
            loss /= world
        return loss, grad_norm

    history = train_loop(step, args.steps, lambda s: cosine_lr(s, args.lr, args.warmup, args.steps, args.min_lr),
                         progress=rank == 0 and args.progress, name="pretraining")
    losses = [round(loss, 6) for loss in history.losses]
    if rank == 0:
        for s in sorted({*range(0, args.steps, 50), args.steps - 1}):
            print(f"step {s:5d}  loss {losses[s]:.4f}  lr {history.lrs[s]:.2e}", flush=True)

    result = {"processes": world, "global_batch": args.global_batch, "steps": args.steps, "losses": losses,
              "parameters": model.num_parameters(), "seconds": round(history.seconds, 2)}
    if val_text and rank == 0:
        val_data = torch.tensor(tokenizer.encode(val_text))
        result["val_loss"] = round(evaluate(model, eval_batches(val_data, 1, 32, args.seq_len, args.seed + 2)), 4)
        print(f"validation loss {result['val_loss']:.4f}")
    if rank == 0 and args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if rank == 0 and args.save_hf:
        save_hf(model, args.save_hf, tokenizer)
        print(f"saved the model in Hugging Face format to {args.save_hf}")
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
