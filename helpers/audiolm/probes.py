"""What a stream of tokens carries, measured as AudioLM does (§5.1 of the paper: phonetic discriminability of
semantic tokens, reconstruction quality of acoustic tokens), with music's labels: the notes sounding in a frame
(its pitch-class roll) stand for *content*, the frame's log-mel spectrum and the instrument stand for *sound*.

A token id carries a label as well as a lookup table can read it back: each id of the training frames gets the mean
(or the majority) of their labels, and held-out frames are predicted from their ids alone. Shapes: frames are
flattened, N training and M held-out frames, V ids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(tokens: torch.Tensor, values: torch.Tensor, vocab: int) -> None:
    if tokens.shape[0] != values.shape[0]:
        raise ValueError(f"expected one value per token, got {tokens.shape[0]} tokens and {values.shape[0]} values")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab):
        raise ValueError(f"expected token ids in [0, {vocab}), got values in [{int(tokens.min())}, "
                         f"{int(tokens.max())}]")


def token_means(tokens: torch.Tensor, values: torch.Tensor, vocab: int) -> torch.Tensor:
    """The mean value of each id: tokens (N,), values (N, d) → (V, d); an id never seen gets the overall mean."""
    _check(tokens, values, vocab)
    onehot = F.one_hot(tokens, vocab).to(values.dtype)  # (N, V)
    counts = onehot.sum(0)[:, None]
    means = onehot.T @ values / counts.clamp(min=1)
    return torch.where(counts > 0, means, values.mean(0, keepdim=True))


def content_f1(train_tokens: torch.Tensor, train_rolls: torch.Tensor, eval_tokens: torch.Tensor,
               eval_rolls: torch.Tensor, vocab: int) -> float:
    """How well ids name the notes: each id predicts the pitch classes that sound in more than half of its training
    frames; F1 of those predictions over every (held-out frame, pitch class). Rolls (N, 12) bool."""
    predicted = token_means(train_tokens, train_rolls.float(), vocab)[eval_tokens] > 0.5
    truth = eval_rolls.bool()
    hits = (predicted & truth).sum().item()
    return 2 * hits / max(1, predicted.sum().item() + truth.sum().item())


def sound_error(train_tokens: torch.Tensor, train_spectra: torch.Tensor, eval_tokens: torch.Tensor,
                eval_spectra: torch.Tensor, vocab: int) -> float:
    """How well ids give the sound back: each id's mean training spectrum against each held-out frame's, mean
    absolute difference (in the spectra's unit, e.g. dB). Spectra (N, M)."""
    rebuilt = token_means(train_tokens, train_spectra, vocab)[eval_tokens]
    return (rebuilt - eval_spectra).abs().mean().item()


def label_accuracy(train_tokens: torch.Tensor, train_labels: torch.Tensor, eval_tokens: torch.Tensor,
                   eval_labels: torch.Tensor, vocab: int, classes: int) -> float:
    """How well ids tell a class (e.g. the instrument): each id predicts the most common class of its training
    frames; the share of held-out frames predicted right. Labels (N,) in [0, classes)."""
    votes = token_means(train_tokens, F.one_hot(train_labels, classes).float(), vocab)
    return (votes.argmax(-1)[eval_tokens] == eval_labels).float().mean().item()
