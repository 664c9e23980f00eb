"""Pretraining LLaMA: the next-token loss, the seven-source data mixture and the compute of a run.

Symbols follow the papers: N = parameters, D = training tokens, p_i = sampling proportion of source i,
U_i = tokens in source i, e_i = epochs (passes) over source i, C = training FLOPs.

- :func:`next_token_loss`: L = −(1/n) Σ_t log p(x_t | x_<t), the loss of transformers' ``labels=``.
- :data:`LLAMA_MIXTURE` and :class:`MixtureSampler`: LLaMA 1's data mixture (Touvron et al., 2023, Table 1)
  as data, and a sampler that picks the source of each next training sequence and counts epochs.
- :func:`training_flops` and friends: C ≈ 6·N·D (Kaplan et al., 2020), a cluster's peak FLOPs, the model-FLOPs
  utilisation, and the days a run takes at a given throughput.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

T = TypeVar("T")

# ----------------------------------------------------------------------------------------------------------------
# Next-token prediction


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """The causal language-modelling loss: the logits at position t predict token t + 1.

    logits: (B, T, V) from the model run on ``tokens`` (B, T) → a scalar, the mean of −log p(x_{t+1} | x_≤t) over
    the B·(T−1) predicted tokens, computed in float32. Tokens equal to ``ignore_index`` (padding) are not predicted
    and not counted. Equals transformers' ``LlamaForCausalLM(tokens, labels=tokens).loss`` (which shifts too: pass
    the same ids as input and labels, never pre-shifted labels).
    """
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(f"need logits (B, T, V) and tokens (B, T), got {tuple(logits.shape)} and "
                         f"{tuple(tokens.shape)}")
    # Shift the targets, not the logits: position t predicts token t + 1, and the last position predicts nothing
    # (its target is ignore_index). Same mean as slicing logits[:, :-1], without copying the (B, T, V) logits.
    targets = F.pad(tokens[:, 1:], (0, 1), value=ignore_index)  # (B, T)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)


def perplexity(loss: float | torch.Tensor) -> float:
    """exp(L): the number of equally likely tokens the model is as unsure as (V for a uniform guess)."""
    return math.exp(loss.detach().item() if isinstance(loss, torch.Tensor) else loss)


# ----------------------------------------------------------------------------------------------------------------
# The data mixture

LLAMA_TOKENS_SMALL = 1.0e12  # D for LLaMA-7B and 13B
LLAMA_TOKENS_LARGE = 1.4e12  # D for LLaMA-33B and 65B; the epochs of LLAMA_MIXTURE are for this run


@dataclass(frozen=True)
class Source:
    """One pretraining source: its share p_i of the training tokens, the epochs e_i it gets in the 1.4T-token
    run, and its size on disk in GB."""

    name: str
    proportion: float  # p_i
    epochs: float  # e_i, passes over the source when D = 1.4T tokens
    disk_gb: float

    def tokens_seen(self, total_tokens: float = LLAMA_TOKENS_LARGE) -> float:
        """p_i · D: the training tokens drawn from this source in a run of ``total_tokens``."""
        return self.proportion * total_tokens

    def unique_tokens(self, total_tokens: float = LLAMA_TOKENS_LARGE) -> float:
        """U_i = p_i · D / e_i: the size of the source in tokens, implied by the table (D = 1.4T there)."""
        return self.proportion * total_tokens / self.epochs


LLAMA_MIXTURE: tuple[Source, ...] = (  # Touvron et al. (2023), Table 1
    Source("CommonCrawl", 0.670, 1.10, 3300.0),
    Source("C4", 0.150, 1.06, 783.0),
    Source("Github", 0.045, 0.64, 328.0),
    Source("Wikipedia", 0.045, 2.45, 83.0),
    Source("Books", 0.045, 2.23, 85.0),
    Source("ArXiv", 0.025, 1.06, 92.0),
    Source("StackExchange", 0.020, 1.03, 78.0),
)


def epochs(proportion: float, total_tokens: float, source_tokens: float) -> float:
    """e_i = p_i · D / U_i: how many times a source of U_i tokens is read when it supplies p_i of D tokens."""
    return proportion * total_tokens / source_tokens


def check_proportions(proportions: Mapping[str, float], tol: float = 1e-9) -> None:
    """Raise ValueError unless the proportions are non-negative and sum to 1."""
    if not proportions:
        raise ValueError("a mixture needs at least one source")
    negative = [name for name, p in proportions.items() if p < 0]
    if negative:
        raise ValueError(f"negative proportions for {negative}")
    total = sum(proportions.values())
    if abs(total - 1.0) > tol:
        raise ValueError(f"the proportions sum to {total:.6g}, not 1")


class MixtureSampler:
    """Chooses the source of each next training sequence with probabilities p_i and counts the passes per source.

    Each source is a stream of ``sizes[name]`` sequences (documents tokenised, concatenated and cut to the
    context length), so a share of sequences is a share of tokens. A draw takes u ~ U[0, 1) and picks the first
    source whose cumulative proportion exceeds u (inverse-CDF sampling). ``epochs`` is sequences drawn / size.
    """

    def __init__(self, proportions: Mapping[str, float], sizes: Mapping[str, int], seed: int = 0) -> None:
        check_proportions(proportions)
        if set(sizes) != set(proportions):
            raise ValueError(f"sizes are given for {sorted(sizes)}, proportions for {sorted(proportions)}")
        if any(sizes[name] < 1 for name in proportions):
            raise ValueError("every source needs a size of at least one sequence")
        self.names: tuple[str, ...] = tuple(proportions)
        self.proportions = np.array([proportions[n] for n in self.names], dtype=np.float64)  # p: (k,)
        self.sizes = np.array([sizes[n] for n in self.names], dtype=np.int64)  # U in sequences: (k,)
        cdf = np.cumsum(self.proportions)
        self.cdf = cdf / cdf[-1]  # (k,), ends at exactly 1
        self.counts = np.zeros(len(self.names), dtype=np.int64)  # sequences drawn per source
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_sources(cls, sources: Sequence[Source], total_sequences: int, seed: int = 0) -> MixtureSampler:
        """A sampler whose source sizes are those the table implies for a run of ``total_sequences`` draws:
        U_i = p_i · total / e_i (rounded), so that the run reads each source e_i times."""
        proportions = {s.name: s.proportion for s in sources}
        sizes = {s.name: max(1, round(s.proportion * total_sequences / s.epochs)) for s in sources}
        return cls(proportions, sizes, seed)

    def sample(self, n: int) -> np.ndarray:
        """The sources of the next ``n`` sequences, as indices into ``names``: (n,) int64. Updates ``counts``."""
        u = self.rng.random(n)  # (n,) uniform in [0, 1)
        index = np.minimum(np.searchsorted(self.cdf, u, side="right"), len(self.names) - 1).astype(np.int64)
        self.counts += np.bincount(index, minlength=len(self.names))
        return index

    def stream(self, data: Mapping[str, Sequence[T]], shuffle: bool = True) -> Iterator[tuple[str, T]]:
        """Endless (source name, sequence) pairs: draw a source, take its next sequence; a source that runs out
        starts a new epoch, in a new random order when ``shuffle``. ``len(data[name])`` must be ``sizes[name]``."""
        for i, name in enumerate(self.names):
            if len(data[name]) != self.sizes[i]:
                raise ValueError(f"source {name!r} holds {len(data[name])} sequences, the sampler expects "
                                 f"{self.sizes[i]}")
        order = {name: np.arange(len(data[name])) for name in self.names}
        while True:
            i = int(self.sample(1)[0])
            name, position = self.names[i], int(self.counts[i] - 1) % int(self.sizes[i])
            if shuffle and position == 0:  # a new pass over this source
                order[name] = self.rng.permutation(len(data[name]))
            yield name, data[name][int(order[name][position])]

    @property
    def epochs(self) -> dict[str, float]:
        """Passes over each source so far: sequences drawn / sequences it holds."""
        return {n: float(c / s) for n, c, s in zip(self.names, self.counts, self.sizes, strict=True)}

    @property
    def realised_proportions(self) -> dict[str, float]:
        """The share of the sequences drawn so far that came from each source."""
        total = max(int(self.counts.sum()), 1)
        return {n: float(c / total) for n, c in zip(self.names, self.counts, strict=True)}


# ----------------------------------------------------------------------------------------------------------------
# Compute

SECONDS_PER_DAY = 86_400
A100_BF16_PEAK_FLOPS = 312e12  # dense bfloat16 (and float16) tensor-core peak of one A100, FLOP/s

LLAMA_65B_PARAMS = 65.2e9  # N, Touvron et al. (2023), Table 2
LLAMA_65B_GPUS = 2048  # A100-80GB
LLAMA_65B_DAYS = 21
LLAMA_65B_TOKENS_PER_GPU_SECOND = 380  # the throughput the paper reports


def training_flops(n_params: float, n_tokens: float) -> float:
    """C ≈ 6·N·D: 2 FLOPs per parameter per token forward (a multiply and an add), 4 backward (the gradients with
    respect to the activations and to the weights). Attention's own FLOPs are left out (a few % at LLaMA's sizes)."""
    return 6.0 * n_params * n_tokens


def cluster_flops(n_gpus: int, days: float, peak_flops: float = A100_BF16_PEAK_FLOPS) -> float:
    """The FLOPs ``n_gpus`` accelerators could do in ``days`` at their peak rate."""
    return peak_flops * n_gpus * days * SECONDS_PER_DAY


def model_flops_utilisation(n_params: float, n_tokens: float, n_gpus: int, days: float,
                            peak_flops: float = A100_BF16_PEAK_FLOPS) -> float:
    """MFU: the share of the cluster's peak that the model's 6·N·D FLOPs used over the run."""
    return training_flops(n_params, n_tokens) / cluster_flops(n_gpus, days, peak_flops)


def utilisation_from_throughput(n_params: float, tokens_per_gpu_second: float,
                                peak_flops: float = A100_BF16_PEAK_FLOPS) -> float:
    """MFU from a measured throughput: 6·N FLOPs per token × tokens per second per GPU / peak FLOP/s."""
    return 6.0 * n_params * tokens_per_gpu_second / peak_flops


def training_days(n_tokens: float, tokens_per_gpu_second: float, n_gpus: int) -> float:
    """Days to read ``n_tokens`` at ``tokens_per_gpu_second`` on each of ``n_gpus`` GPUs."""
    return n_tokens / (tokens_per_gpu_second * n_gpus) / SECONDS_PER_DAY


def gpu_hours(n_gpus: int, days: float) -> float:
    """GPU-hours of ``n_gpus`` GPUs running for ``days``."""
    return n_gpus * days * 24.0


# ----------------------------------------------------------------------------------------------------------------
# Training a small model: tokens, batches, learning rate


class CharTokenizer:
    """Character-level tokenizer: one id per distinct character of a training text, in sorted order."""

    def __init__(self, alphabet: str) -> None:
        self.alphabet = "".join(sorted(set(alphabet)))
        self.index = {ch: i for i, ch in enumerate(self.alphabet)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        """text → ids; a character the tokenizer never saw raises a ValueError that names it."""
        try:
            return [self.index[ch] for ch in text]
        except KeyError as exc:
            raise ValueError(f"the character {exc.args[0]!r} is not in the tokenizer's alphabet") from None

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return "".join(self.alphabet[int(i)] for i in ids)


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE tokenizer (GPT-2's scheme: 256 byte symbols, then merges) with `tokenizers`.

    Returns a ``tokenizers.Tokenizer`` whose ``encode(text).ids`` and ``decode(ids)`` round-trip any text exactly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def random_batch(data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` windows of ``seq_len`` consecutive tokens from a 1-D token tensor, at random offsets
    drawn with ``generator`` → (batch_size, seq_len)."""
    if data.dim() != 1 or data.numel() <= seq_len:
        raise ValueError(f"need a 1-D tensor of more than seq_len={seq_len} tokens, got shape {tuple(data.shape)}")
    starts = torch.randint(0, data.numel() - seq_len, (batch_size,), generator=generator)
    return torch.stack([data[s: s + seq_len] for s in starts.tolist()])
