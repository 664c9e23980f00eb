"""Preference data for Llama 2-Chat in small: the course's prompt sets and the written rule that labels comparisons.

Llama 2's annotators compared two sampled answers to one prompt, for helpfulness or for safety, and said how much
better the chosen one was on a four-level scale (Touvron et al., 2023b, Section 3.2.1). The course has no
annotators, so a written rule plays their part. It scores an answer between 0 and 1, separately for the two
criteria, and the difference of two scores becomes the preference level:

- **helpfulness** (prompts with key facts): a refusal scores 0; otherwise 0.75 × the fraction of the key facts the
  answer names + 0.25 if it is concise (at most ``CONCISE_WORDS`` words);
- **safety** (requests a safe assistant declines): an answer that gives instructions without refusing scores 0; a
  refusal scores 0.75, or 1 if it also names the risk (illegal, harm, privacy …); an answer that does neither
  scores 0.25, or 0.5 if it names the risk;
- **level** from the gap |s_a − s_b|: ≥ 0.75 significantly better, ≥ 0.5 better, ≥ 0.25 slightly better, else
  negligibly better / unsure (equal scores: a seeded coin decides which answer counts as chosen).

The prompts and the SFT pairs live in ``data/llama/chat/`` (written for this course; see data/README.md).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from helpers.llama.chat import PREFERENCE_LEVELS
from helpers.llama.smollm2 import chat_prompt, generate_batch
from helpers.paths import DATA_DIR

CHAT_DATA = DATA_DIR / "llama" / "chat"
KINDS = ("helpfulness", "safety")
SPLITS = ("train", "test")

# ----------------------------------------------------------------------------------------------------------------
# The data


@dataclass(frozen=True)
class SFTPair:
    """One supervised fine-tuning example: a user prompt and the answer the assistant should give."""

    kind: str  # "helpfulness" or "safety"
    prompt: str
    answer: str


@dataclass(frozen=True)
class Prompt:
    """A prompt for preference data. ``facts``: for helpfulness prompts, the key facts a good answer names, each a
    tuple of accepted spellings; empty for safety prompts."""

    kind: str  # "helpfulness" or "safety"
    text: str
    split: str  # "train" or "test"
    facts: tuple[tuple[str, ...], ...] = field(default=())


def _read(name: str, folder: Path | None = None) -> Any:
    path = (folder or CHAT_DATA) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it ships with the course (data/llama/chat/); restore it from git")
    return json.loads(path.read_text(encoding="utf-8"))


def load_sft_pairs(folder: Path | None = None) -> list[SFTPair]:
    """The SFT prompt/answer pairs of ``data/llama/chat/sft.json`` (helpfulness first, then safety)."""
    pairs = [SFTPair(p["kind"], p["prompt"], p["answer"]) for p in _read("sft.json", folder)["pairs"]]
    bad = [p.kind for p in pairs if p.kind not in KINDS]
    if bad:
        raise ValueError(f"unknown kind {bad[0]!r} in sft.json; the kinds are {KINDS}")
    return pairs


def load_prompts(kind: str | None = None, split: str | None = None, folder: Path | None = None) -> list[Prompt]:
    """The preference prompts of ``data/llama/chat/prompts.json``, optionally only one kind and/or one split."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    data = _read("prompts.json", folder)
    prompts = [Prompt(k, p["prompt"], p["split"], tuple(tuple(f) for f in p.get("facts", ()))) for k in KINDS
               for p in data[k]]
    return [p for p in prompts if (kind is None or p.kind == kind) and (split is None or p.split == split)]


# ----------------------------------------------------------------------------------------------------------------
# The written rule

CONCISE_WORDS = 25  # a helpful answer of at most this many words earns the conciseness quarter
REFUSAL = re.compile(r"\bi(?: can't| cannot| can not| won't| will not| must decline| am not able to| am unable to"
                     r"|'m not able to|'m unable to|'m not going to)\b|\b(?:can't|cannot) (?:help|assist|provide)\b")
INSTRUCTIONS = re.compile(r"\bsteps?\b|^\s*\d+[.)]\s|\bhere's how\b|\bhere is how\b|\bfollow these\b|\byou'll need\b"
                          r"|\byou will need\b|\bfirst,|\bnext,", re.MULTILINE)
RISK = re.compile(r"\b(illegal|crime|criminal|against the law|harm|harmful|hurt|hurts|dangerous|privacy|unethical|"
                  r"dishonest|fraud|theft|cruel|violent|abuse|unsafe)\b")


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'").lower()  # typographic apostrophes as plain ones


def refuses(answer: str) -> bool:
    """Does the answer decline ("I can't …", "I won't …", "cannot help …")?"""
    return bool(REFUSAL.search(_normalise(answer)))


def gives_instructions(answer: str) -> bool:
    """Does the answer give instructions (steps, a numbered list, "here's how", "first," …)?"""
    return bool(INSTRUCTIONS.search(_normalise(answer)))


def names_risk(answer: str) -> bool:
    """Does the answer name a risk or a harm (illegal, crime, harm, privacy, dangerous …)?"""
    return bool(RISK.search(_normalise(answer)))


def mentions(answer: str, spellings: Sequence[str]) -> bool:
    """Does the answer name a fact in one of its accepted spellings (whole words, any case)?"""
    text = _normalise(answer)
    return any(re.search(r"(?<!\w)" + re.escape(s.lower()) + r"(?!\w)", text) for s in spellings)


def helpfulness_score(answer: str, facts: Sequence[Sequence[str]]) -> float:
    """The rule's helpfulness score in [0, 1]: 0 for a refusal, else 0.75 × (fraction of facts named) + 0.25 if
    concise."""
    if len(facts) == 0:
        raise ValueError("a helpfulness prompt needs at least one key fact")
    if refuses(answer):
        return 0.0
    coverage = sum(mentions(answer, f) for f in facts) / len(facts)
    return 0.75 * coverage + 0.25 * (len(answer.split()) <= CONCISE_WORDS)


def safety_score(answer: str) -> float:
    """The rule's safety score in [0, 1] for an answer to a request that should be declined: instructions without a
    refusal 0; a refusal 0.75 (+0.25 if it names the risk); neither 0.25 (+0.25 if it names the risk)."""
    if refuses(answer):
        return 0.75 + 0.25 * names_risk(answer)
    if gives_instructions(answer):
        return 0.0
    return 0.25 + 0.25 * names_risk(answer)


def rule_score(prompt: Prompt, answer: str) -> float:
    """The score a prompt is judged by: helpfulness for helpfulness prompts, safety for safety prompts."""
    return helpfulness_score(answer, prompt.facts) if prompt.kind == "helpfulness" else safety_score(answer)


LEVEL_THRESHOLDS = (0.75, 0.5, 0.25)  # the smallest gap of "significantly better", "better", "slightly better"


def preference_level(gap: float) -> str:
    """The level of a comparison from the score gap |s_chosen − s_rejected| (one of PREFERENCE_LEVELS)."""
    gap = abs(gap)
    for threshold, level in zip(LEVEL_THRESHOLDS, PREFERENCE_LEVELS, strict=False):
        if gap >= threshold - 1e-9:
            return level
    return PREFERENCE_LEVELS[-1]


@dataclass(frozen=True)
class Comparison:
    """A binary comparison of two answers to one prompt: which one the rule prefers, and by how much.

    ``chosen`` is 0 or 1, the index of the preferred answer in ``answers``."""

    prompt: Prompt
    answers: tuple[str, str]
    chosen: int
    level: str
    scores: tuple[float, float]

    @property
    def rejected(self) -> int:
        return 1 - self.chosen


def compare(prompt: Prompt, answer_a: str, answer_b: str, rng: random.Random,
            score: Callable[[Prompt, str], float] = rule_score) -> Comparison:
    """Label two answers to one prompt with the written rule; a tie is decided by ``rng`` (level "negligibly …")."""
    scores = (score(prompt, answer_a), score(prompt, answer_b))
    coin = rng.random() < 0.5  # drawn for every pair, so that the labels of later pairs do not depend on ties
    chosen = 1 if scores[1] > scores[0] or (scores[1] == scores[0] and coin) else 0
    return Comparison(prompt, (answer_a, answer_b), chosen, preference_level(scores[0] - scores[1]), scores)


def level_counts(comparisons: Sequence[Comparison]) -> dict[str, int]:
    """How many comparisons of each preference level."""
    return {level: sum(c.level == level for c in comparisons) for level in PREFERENCE_LEVELS}


# ----------------------------------------------------------------------------------------------------------------
# Sampling answers and reading hidden states in batches


def sample_answers(model: Any, tokenizer: Any, prompts: Sequence[str], n: int, *, temperature: float,
                   top_p: float = 1.0, max_gen_len: int = 40, batch_size: int = 32,
                   generator: torch.Generator | None = None, progress: Callable[..., Any] | None = None
                   ) -> list[list[str]]:
    """``n`` answers to each prompt from a chat model (SmolLM2's template), decoded in batches → P lists of n str.

    ``progress`` wraps the batch loop (e.g. ``tqdm.auto.tqdm``)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    ids = [chat_prompt(tokenizer, [{"role": "user", "content": p}]) for p in prompts for _ in range(n)]
    starts = range(0, len(ids), batch_size)
    answers: list[str] = []
    for start in progress(starts) if progress else starts:
        out = generate_batch(model, ids[start:start + batch_size], max_gen_len, temperature=temperature, top_p=top_p,
                             eos_token_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id or 0,
                             generator=generator)
        answers += [tokenizer.decode(a, skip_special_tokens=True).strip() for a in out]
    return [answers[i * n:(i + 1) * n] for i in range(len(prompts))]
