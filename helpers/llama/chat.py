"""Llama 2-Chat: the chat template, supervised fine-tuning (SFT) and reward models (Touvron et al., 2023b).

One canonical copy of each piece; the chapter derives them and the chat lab imports them.

- The chat template of Meta's reference code (``llama/generation.py``): ``[INST] … [/INST]`` around each user
  turn, the system prompt folded into the first user turn between ``<<SYS>>`` and ``<</SYS>>``, BOS and EOS as
  token ids around each (user, answer) pair.
- SFT: next-token cross-entropy on the answer tokens only (labels −100 on every prompt token); examples laid out
  by a tokenizer's own chat template too (SmolLM2's ChatML in the chat lab), and a model tuned in its last blocks
  only, the frozen blocks' output computed once.
- Reward models: a pretrained body plus a scalar head read at the last real token, trained on binary
  comparisons with the margin loss −log σ(r_c − r_r − m(r)); the margin m(r) depends on the preference level.
- Using two reward models: the safety reward where it matters, the helpfulness reward elsewhere; best-of-n.

Shapes: B batch, T sequence, V vocabulary, d hidden size, P prompts, K candidates per prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from helpers.llama.model import KVCache, Llama, decoder_layers, rope_cos_sin
from helpers.llama.pretraining import next_token_loss

# ----------------------------------------------------------------------------------------------------------------
# The chat template

B_INST, E_INST = "[INST]", "[/INST]"  # around each user turn
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"  # around the system prompt, inside the first user turn
SPECIAL_TAGS = (B_INST, E_INST, "<<SYS>>", "<</SYS>>")  # Meta's code refuses messages that contain these
IGNORE_INDEX = -100  # the label of a token the loss skips (PyTorch's and transformers' convention)

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


class ByteTokenizer:
    """A tokenizer that needs no download: the UTF-8 bytes of the text (ids 0–255) plus three special ids.

    BOS = 256, EOS = 257, PAD = 258, so ``vocab_size`` = 259. Special tokens are ids only: no string encodes
    to them, as with Llama's SentencePiece tokenizer, where ``<s>`` in a message is just text.
    """

    bos_id: int = 256
    eos_id: int = 257
    pad_id: int = 258
    vocab_size: int = 259

    def encode(self, text: str) -> list[int]:
        """text → its UTF-8 bytes as ids."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """ids → text; BOS and EOS are shown as ``<s>`` and ``</s>``, PAD is dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out, buffer = [], bytearray()
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} is outside the vocabulary 0…{self.vocab_size - 1}")
            if i < 256:
                buffer.append(i)
                continue
            out.append(buffer.decode("utf-8", errors="replace"))
            buffer = bytearray()
            out.append({self.bos_id: "<s>", self.eos_id: "</s>", self.pad_id: ""}[i])
        out.append(buffer.decode("utf-8", errors="replace"))
        return "".join(out)


def fold_system_prompt(dialog: Sequence[Message]) -> list[dict[str, str]]:
    """Check a dialog and fold an optional system prompt into the first user turn, as Meta's code does.

    Returns the turns user, assistant, user, … with the first user content replaced by
    ``"<<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user}"``. Raises ValueError for a malformed dialog: an empty one,
    a message that is not a {"role", "content"} mapping, an unknown role, roles that do not alternate
    user/assistant after the optional system message, or content holding a template tag.
    """
    if len(dialog) == 0:
        raise ValueError("the dialog is empty: it needs at least one user message")
    for i, message in enumerate(dialog):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise ValueError(f"message {i} must be a dict with exactly the keys 'role' and 'content', got {message!r}")
        if message["role"] not in ("system", "user", "assistant"):
            raise ValueError(f"message {i} has role {message['role']!r}; the roles are 'system', 'user', 'assistant'")
        if not isinstance(message["content"], str):
            raise ValueError(f"message {i}: content must be a str, got {type(message['content']).__name__}")
        for tag in SPECIAL_TAGS:
            if tag in message["content"]:
                raise ValueError(f"message {i} contains the template tag {tag!r}: special tags are not allowed "
                                 "in a message")
    turns = [dict(m) for m in dialog]
    if turns[0]["role"] == "system":
        if len(turns) < 2 or turns[1]["role"] != "user":
            raise ValueError("a system message must be followed by a user message")
        turns = [{"role": "user", "content": B_SYS + turns[0]["content"] + E_SYS + turns[1]["content"]}] + turns[2:]
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            offset = 1 if dialog[0]["role"] == "system" else 0
            raise ValueError(f"message {i + offset} has role {message['role']!r} where {expected!r} was expected: "
                             "after an optional system message the roles must alternate user, assistant, user, …")
    return turns


def encode_llama2_dialog(dialog: Sequence[Message], encode: Callable[[str], list[int]], bos_id: int,
                         eos_id: int) -> tuple[list[int], list[int]]:
    """Encode a dialog with the Llama 2 chat template → (input_ids, labels), two lists of the same length.

    Each (user, assistant) pair becomes ``BOS + encode(f"[INST] {user.strip()} [/INST] {answer.strip()} ") + EOS``;
    a final user turn (a prompt awaiting its answer) becomes ``BOS + encode(f"[INST] {user.strip()} [/INST]")``.
    ``labels`` equals ``input_ids`` on the answer tokens (from the space after ``[/INST]`` up to and including
    EOS) and is IGNORE_INDEX (−100) on every prompt token, so SFT learns the answers only.
    Raises ValueError for a malformed dialog (see :func:`fold_system_prompt`) and when ``encode`` does not
    tokenise the prompt the same alone and followed by its answer (the prompt/answer boundary would be lost).
    """
    turns = fold_system_prompt(dialog)
    input_ids: list[int] = []
    labels: list[int] = []
    for user, answer in zip(turns[::2], turns[1::2], strict=False):
        prompt = encode(f"{B_INST} {user['content'].strip()} {E_INST}")
        pair = encode(f"{B_INST} {user['content'].strip()} {E_INST} {answer['content'].strip()} ")
        if pair[:len(prompt)] != prompt:
            raise ValueError("encode() tokenises the prompt differently when the answer follows it, so the "
                             f"prompt/answer boundary is not a token boundary (prompt {user['content'][:40]!r})")
        answer_ids = pair[len(prompt):] + [eos_id]
        input_ids += [bos_id] + prompt + answer_ids
        labels += [IGNORE_INDEX] * (1 + len(prompt)) + answer_ids
    if len(turns) % 2 == 1:  # the dialog ends with a user turn: the prompt for the next answer
        prompt = [bos_id] + encode(f"{B_INST} {turns[-1]['content'].strip()} {E_INST}")
        input_ids += prompt
        labels += [IGNORE_INDEX] * len(prompt)
    return input_ids, labels


def pad_batch(sequences: Sequence[Sequence[int]], pad_value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad lists of ids to one length → (ids (B, T) int64, attention_mask (B, T) int64: 1 real, 0 padding)."""
    if len(sequences) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    length = max(len(s) for s in sequences)
    if length == 0:
        raise ValueError("every sequence is empty")
    ids = torch.full((len(sequences), length), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, s in enumerate(sequences):
        ids[row, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[row, :len(s)] = 1
    return ids, mask


# ----------------------------------------------------------------------------------------------------------------
# Supervised fine-tuning


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Shifted next-token cross-entropy averaged over the tokens whose label is not −100 → scalar.

    logits: (B, T, V), the model's output at every position; labels: (B, T), aligned with the inputs
    (labels[t] is the token at position t; position t's logits predict labels[t + 1]).
    Equals transformers' ``LlamaForCausalLM(input_ids, labels=labels).loss``.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(f"need logits (B, T, V) and labels (B, T), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    targets = labels[:, 1:]  # (B, T−1): the token each position must predict
    if not bool((targets != IGNORE_INDEX).any()):
        raise ValueError("every label after the first position is -100: there is no answer token to learn")
    return next_token_loss(logits, labels, ignore_index=IGNORE_INDEX)  # the pretraining loss, prompt tokens ignored


def sft_labels(input_ids: torch.Tensor, prompt_lengths: torch.Tensor | Sequence[int],
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The SFT labels of a right-padded batch: the token ids on answer tokens, −100 on the first
    ``prompt_lengths[b]`` tokens of each row and on padding (mask 0). input_ids (B, T), prompt_lengths (B,) → (B, T)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}")
    prompt_lengths = torch.as_tensor(prompt_lengths, device=input_ids.device)
    if prompt_lengths.shape != input_ids.shape[:1]:
        raise ValueError(f"prompt_lengths must have shape (batch,) = ({input_ids.shape[0]},), got "
                         f"{tuple(prompt_lengths.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                         f"{tuple(input_ids.shape)}")
    is_answer = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] >= prompt_lengths[:, None]
    if attention_mask is not None:
        is_answer &= attention_mask.bool()
    return input_ids.masked_fill(~is_answer, IGNORE_INDEX)


def chat_sft_example(tokenizer: Any, prompt: str, answer: str, system: str | None = None) -> tuple[list[int], int]:
    """One SFT example in a tokenizer's own chat template (``tokenizer.apply_chat_template``) → (input_ids,
    prompt_length).

    The prompt is the template up to the assistant's turn (``add_generation_prompt=True``); the answer tokens run
    from there to the end-of-turn token (``tokenizer.eos_token_id``) included, which teaches the model to stop.
    Whatever the template writes after that token (a newline in ChatML) is left out. Raises ValueError if the
    prompt alone does not tokenise as a prefix of prompt + answer, or the answer has no end-of-turn token.
    """
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": prompt}]

    def ids(dialog: list[dict[str, str]], generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(dialog, tokenize=False, add_generation_prompt=generation_prompt)
        return tokenizer.encode(text, add_special_tokens=False)  # the template holds every special token

    prompt_ids = ids(messages, True)
    full = ids(messages + [{"role": "assistant", "content": answer}], False)
    if full[:len(prompt_ids)] != prompt_ids:
        raise ValueError(f"the prompt {prompt[:40]!r} tokenises differently when its answer follows: the "
                         "prompt/answer boundary is not a token boundary")
    eos = tokenizer.eos_token_id
    if eos not in full[len(prompt_ids):]:
        raise ValueError(f"the templated answer holds no end-of-turn token (id {eos}): check the chat template")
    end = full.index(eos, len(prompt_ids)) + 1
    return full[:end], len(prompt_ids)


def run_blocks(model: nn.Module, hidden: torch.Tensor, blocks: Sequence[nn.Module]) -> torch.Tensor:
    """Run some decoder blocks of a :class:`helpers.llama.Llama` on hidden states (B, T, d) at positions 0 … T−1
    → (B, T, d). With ``model.layers[:k]`` on the embeddings and then ``model.layers[k:]``, the same as all blocks:
    fine-tuning the last blocks only, the first blocks' output can be computed once and kept."""
    cos, sin = rope_cos_sin(torch.arange(hidden.shape[1], device=hidden.device), model.inv_freq)
    for block in blocks:
        hidden = block(hidden, cos, sin)
    return hidden


def batched_hidden_states(forward: Callable[[torch.Tensor], torch.Tensor], sequences: Sequence[Sequence[int]],
                          pad_id: int, batch_size: int = 16, device: torch.device | str | None = None,
                          progress: Callable[..., Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of many sequences, computed in batches of similar length (less padding), without gradients.

    ``forward`` maps right-padded tokens (B, T) to hidden states (B, T, d) (a :class:`LlamaBody`, say). Returns
    hidden (N, T_max, d) float32 on ``device`` (default: the tokens' device, CPU) and attention_mask (N, T_max),
    right-padded, in the order of ``sequences``; padded positions hold zeros.
    """
    if len(sequences) == 0:
        raise ValueError("batched_hidden_states needs at least one sequence")
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    tokens, mask = pad_batch(sequences, pad_id)  # (N, T_max)
    hidden: torch.Tensor | None = None
    starts = range(0, len(order), batch_size)
    with torch.no_grad():
        for start in progress(starts) if progress else starts:
            rows = torch.tensor(order[start:start + batch_size])
            length = int(mask[rows].sum(dim=1).max())
            out = forward(tokens[rows, :length].to(device or "cpu")).float()  # (b, length, d)
            if hidden is None:
                hidden = torch.zeros(len(sequences), tokens.shape[1], out.shape[-1], device=out.device)
            hidden[rows.to(out.device), :length] = out * mask[rows, :length, None].to(out.device)
    return hidden, mask.to(hidden.device)


# ----------------------------------------------------------------------------------------------------------------
# Preferences and the margin loss

# The four answers an annotator gives to "how much better is the chosen response?" (Llama 2, Section 3.2.1).
PREFERENCE_LEVELS: tuple[str, ...] = ("significantly better", "better", "slightly better", "negligibly better / unsure")

# The margin m(r) per level, Table 27 of the Llama 2 paper: two variants of different magnitude.
MARGINS: dict[str, dict[str, float]] = {
    "small": dict(zip(PREFERENCE_LEVELS, (1.0, 2 / 3, 1 / 3, 0.0), strict=True)),
    "large": dict(zip(PREFERENCE_LEVELS, (3.0, 2.0, 1.0, 0.0), strict=True)),
}


def preference_margin(levels: Sequence[str], scale: str = "small") -> torch.Tensor:
    """The margins m(r) of a list of preference levels (names from PREFERENCE_LEVELS) → (len(levels),) float32."""
    if scale not in MARGINS:
        raise ValueError(f"scale must be one of {sorted(MARGINS)}, got {scale!r}")
    unknown = [level for level in levels if level not in MARGINS[scale]]
    if unknown:
        raise ValueError(f"unknown preference level {unknown[0]!r}; the levels are {list(PREFERENCE_LEVELS)}")
    return torch.tensor([MARGINS[scale][level] for level in levels], dtype=torch.float32)


def margin_ranking_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                        margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Llama 2's binary ranking loss with a margin: mean of −log σ(r_c − r_r − m(r)) → scalar.

    r_chosen, r_rejected: (N,) rewards of the preferred and the other response; margin: a number or (N,).
    With margin 0 this is the loss of InstructGPT's reward model.
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen {tuple(r_chosen.shape)} and r_rejected {tuple(r_rejected.shape)} must have "
                         "the same shape")
    margin = torch.as_tensor(margin, dtype=r_chosen.dtype, device=r_chosen.device)
    return -F.logsigmoid(r_chosen - r_rejected - margin).mean()


# ----------------------------------------------------------------------------------------------------------------
# Reward models


def llama_hidden_states(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Run a :class:`helpers.llama.Llama` (or a :class:`LlamaBody`) without its output projection:
    embedding → layers → final RMSNorm. tokens (B, T) → hidden states (B, T, d)."""
    return model.norm(decoder_layers(model, tokens))


class LlamaBody(nn.Module):
    """A pretrained :class:`helpers.llama.Llama` less its ``lm_head``: tokens (B, T) → hidden states (B, T, d).

    Shares the modules (and so the weights) of the model it is built from.
    """

    def __init__(self, model: Llama) -> None:
        super().__init__()
        self.config = model.config
        self.embed_tokens, self.layers, self.norm = model.embed_tokens, model.layers, model.norm
        self.register_buffer("inv_freq", model.inv_freq.clone(), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return llama_hidden_states(self, tokens)


@torch.no_grad()
def continuation_hidden_states(model: Llama, prompt: Sequence[int], continuations: Sequence[Sequence[int]],
                               pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states (after the last RMSNorm) of ``prompt + continuation`` for N continuations of one prompt,
    at the continuations' positions only → hidden (N, A, d) and attention_mask (N, A), right-padded.

    The same numbers as :func:`llama_hidden_states` on each whole sequence, for less work: the prompt runs once,
    and its keys and values (a :class:`helpers.llama.KVCache`) are shared by the N continuations.
    """
    if len(prompt) == 0 or len(continuations) == 0 or min(len(c) for c in continuations) == 0:
        raise ValueError("need a non-empty prompt and at least one continuation, none of them empty")
    device = model.embed_tokens.weight.device
    tokens, mask = pad_batch(continuations, pad_id)  # (N, A)
    n, p = tokens.shape[0], len(prompt)
    cache = KVCache(model.config, n, p + tokens.shape[1], device, model.embed_tokens.weight.dtype)
    decoder_layers(model, torch.tensor([list(prompt)], device=device), cache, 0)  # fills row 0
    cache.k[:, 1:, :, :p] = cache.k[:, :1, :, :p]  # the other rows share the prompt's keys and values
    cache.v[:, 1:, :, :p] = cache.v[:, :1, :, :p]
    hidden = model.norm(decoder_layers(model, tokens.to(device), cache, p))  # (N, A, d)
    return hidden, mask.to(device)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """The position of the last real token (mask 1) in each row: (B, T) → (B,) int64. Works for right and left
    padding; raises ValueError if a row has no real token."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape (batch, seq), got {tuple(attention_mask.shape)}")
    real = attention_mask.bool()
    if not bool(real.any(dim=1).all()):
        raise ValueError("a row of attention_mask has no real token (all zeros)")
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * real).argmax(dim=1)


def last_token_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state at each row's last real token: hidden (B, T, d), attention_mask (B, T) → (B, d).
    Right or left padding alike."""
    if hidden.dim() != 3 or hidden.shape[:2] != attention_mask.shape:
        raise ValueError(f"need hidden (B, T, d) and attention_mask (B, T), got {tuple(hidden.shape)} and "
                         f"{tuple(attention_mask.shape)}")
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_token_index(attention_mask).to(hidden.device)]


class RewardModel(nn.Module):
    """A reward model r_θ(x, y): a pretrained body and a scalar head read at the last real token.

    ``body`` maps tokens (B, T) to hidden states (B, T, d) (e.g. :class:`LlamaBody`); the head ``score`` is
    ``nn.Linear(d, 1, bias=False)``, like transformers' ``LlamaForSequenceClassification`` with one label (a bias
    would cancel in r_c − r_r and never be trained by the ranking loss).
    """

    def __init__(self, body: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.body = body
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T), prompt and response, right-padded; give ``attention_mask`` (B, T) or ``lengths`` (B,)
        (neither: no padding) → rewards (B,), the head's output at each row's last real token."""
        if attention_mask is not None and lengths is not None:
            raise ValueError("give attention_mask or lengths, not both")
        if attention_mask is not None:
            if attention_mask.shape != tokens.shape:
                raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have the shape of tokens "
                                 f"{tuple(tokens.shape)}")
            last = last_token_index(attention_mask)
        elif lengths is not None:
            lengths = torch.as_tensor(lengths, device=tokens.device)
            if lengths.shape != tokens.shape[:1] or bool(((lengths < 1) | (lengths > tokens.shape[1])).any()):
                raise ValueError(f"lengths must be (B,) = ({tokens.shape[0]},) with values in 1…{tokens.shape[1]}, "
                                 f"got {lengths.tolist()}")
            last = lengths.long() - 1
        else:
            last = torch.full(tokens.shape[:1], tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)
        hidden = self.body(tokens)  # (B, T, d)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        return self.score(hidden[rows, last]).squeeze(-1)  # (B,)


# ----------------------------------------------------------------------------------------------------------------
# Using the reward models


def combine_rewards(helpfulness: torch.Tensor, safety: torch.Tensor, is_safety_prompt: torch.Tensor | bool,
                    threshold: float = 0.15) -> torch.Tensor:
    """Llama 2's reward for RLHF (Section 3.2.3): R_c = R_s if the prompt is a safety prompt or R_s < threshold,
    else R_h. Scores on the sigmoid scale (0, 1), as the paper's 0.15 assumes; the arguments broadcast."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a score on the sigmoid scale, between 0 and 1; got {threshold}")
    helpfulness, safety = torch.as_tensor(helpfulness), torch.as_tensor(safety)
    use_safety = torch.as_tensor(is_safety_prompt, dtype=torch.bool, device=safety.device) | (safety < threshold)
    return torch.where(use_safety, safety, helpfulness)


def best_of_n(rewards: torch.Tensor) -> torch.Tensor:
    """Best-of-n (rejection sampling): the index of the highest-reward candidate of each prompt.
    rewards (P, K) → (P,) int64; ties go to the first candidate."""
    if rewards.dim() != 2 or rewards.shape[1] == 0:
        raise ValueError(f"rewards must have shape (prompts, candidates) with at least one candidate, got "
                         f"{tuple(rewards.shape)}")
    return rewards.argmax(dim=1)
