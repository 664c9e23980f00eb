"""Token layouts of AudioLM's hierarchy: semantic → coarse acoustic (RVQ levels 1..Q′) → fine acoustic (Q′+1..Q).

Acoustic codes (B, T, q) are flattened frame-major, (frame 1: level 1 … q, frame 2: level 1 … q, …), and the code
of the j-th level of a frame becomes id + j·K, so that each level has its own K ids: this is what
``audiolm_pytorch``'s Coarse/FineTransformer do before their embeddings (the wrappers append an end-of-sequence id,
K for acoustic and S for semantic tokens, in training; the offset is K per level there too, so their coarse
end-of-sequence id meets level 2's code 0 in the embedding table).

The course's three transformers share one vocabulary (:class:`TokenLayout`):

    [0, S)                       semantic tokens
    S + q·K + k                  acoustic code k of RVQ level q (q = 0 … Q−1)
    SEP = S + Q·K, BOS = SEP + 1 where one part of a sequence ends and the next begins; the start of every sequence

and each stage reads one stream: semantic [BOS, s…]; coarse [BOS, s…, SEP, c…]; fine [BOS, c…, SEP, f…].
Shapes: B batch, T frames (acoustic), T_s semantic frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def flatten_frames(codes: torch.Tensor) -> torch.Tensor:
    """(B, T, q) → (B, T·q), frame-major: each frame's levels in order, then the next frame's."""
    if codes.ndim != 3:
        raise ValueError(f"expected codes of shape (batch, frames, levels), got {tuple(codes.shape)}")
    return codes.reshape(codes.shape[0], -1)


def unflatten_frames(flat: torch.Tensor, levels: int) -> torch.Tensor:
    """(B, T·q) → (B, T, q): the inverse of :func:`flatten_frames`."""
    if flat.ndim != 2 or flat.shape[1] % levels:
        raise ValueError(f"expected (batch, frames × {levels}) ids, got {tuple(flat.shape)}")
    return flat.reshape(flat.shape[0], -1, levels)


def level_offsets(length: int, levels: int, codebook_size: int) -> torch.Tensor:
    """(length,) offsets j·K of a frame-major stream whose position p holds level j = p mod q."""
    return torch.arange(length) % levels * codebook_size


def append_eos(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, n) → (B, n + 1) with ``eos_id`` at the end of every row."""
    return torch.cat([ids, ids.new_full((ids.shape[0], 1), eos_id)], dim=1)


def audiolm_acoustic_ids(codes: torch.Tensor, codebook_size: int, eos: bool = True) -> torch.Tensor:
    """What ``audiolm_pytorch``'s Coarse/FineTransformer look up in their acoustic embedding for codes (B, T, q):
    flattened frame-major, the end-of-sequence id K appended (training), offset by j·K."""
    flat = flatten_frames(codes)
    if eos:
        flat = append_eos(flat, codebook_size)
    return flat + level_offsets(flat.shape[1], codes.shape[2], codebook_size).to(flat.device)


@dataclass(frozen=True)
class TokenLayout:
    """One vocabulary for the three stages: S semantic ids, Q levels of K acoustic ids, SEP and BOS."""

    semantic_size: int  # S
    codebook_size: int  # K
    num_quantizers: int  # Q
    coarse_quantizers: int  # Q′: levels 1..Q′ are coarse, the rest fine

    def __post_init__(self) -> None:
        if not 0 < self.coarse_quantizers <= self.num_quantizers:
            raise ValueError(f"expected 1 ≤ Q′ ≤ Q, got Q′ = {self.coarse_quantizers}, Q = {self.num_quantizers}")

    @property
    def sep_id(self) -> int:
        return self.semantic_size + self.num_quantizers * self.codebook_size

    @property
    def bos_id(self) -> int:
        return self.sep_id + 1

    @property
    def vocab_size(self) -> int:
        return self.bos_id + 1

    def check_semantic(self, semantic: torch.Tensor) -> None:
        if semantic.ndim != 2:
            raise ValueError(f"expected semantic tokens of shape (batch, frames), got {tuple(semantic.shape)}")
        if semantic.numel() and (semantic.min() < 0 or semantic.max() >= self.semantic_size):
            raise ValueError(f"expected semantic ids in [0, {self.semantic_size}), got values in "
                             f"[{int(semantic.min())}, {int(semantic.max())}]")

    def acoustic_ids(self, codes: torch.Tensor, first_level: int) -> torch.Tensor:
        """Codes (B, T, q) of levels first_level … first_level+q−1 → ids S + level·K + code, frame-major (B, T·q)."""
        if codes.ndim != 3:
            raise ValueError(f"expected codes of shape (batch, frames, levels), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"expected acoustic codes in [0, {self.codebook_size}), got values in "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        flat = flatten_frames(codes)
        offsets = level_offsets(flat.shape[1], codes.shape[2], self.codebook_size).to(flat.device)
        return flat + offsets + self.semantic_size + first_level * self.codebook_size

    def codes_from_ids(self, ids: torch.Tensor, first_level: int, levels: int) -> torch.Tensor:
        """The inverse of :meth:`acoustic_ids`: ids (B, T·q) → codes (B, T, q)."""
        codes = unflatten_frames(ids - self.semantic_size, levels)
        codes = codes - (first_level + torch.arange(levels, device=ids.device)) * self.codebook_size
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"these ids are not codes of levels {first_level}…{first_level + levels - 1}")
        return codes

    def allowed(self, position: int, first_level: int, levels: int) -> tuple[int, int]:
        """The id range [lo, hi) of the acoustic stream's ``position``-th token (level first_level + position mod q)."""
        lo = self.semantic_size + (first_level + position % levels) * self.codebook_size
        return lo, lo + self.codebook_size

    def _bos(self, like: torch.Tensor) -> torch.Tensor:
        return like.new_full((like.shape[0], 1), self.bos_id)

    def _sep(self, like: torch.Tensor) -> torch.Tensor:
        return like.new_full((like.shape[0], 1), self.sep_id)

    def semantic_sequence(self, semantic: torch.Tensor) -> torch.Tensor:
        """[BOS, s_1 … s_T] (B, 1 + T_s)."""
        self.check_semantic(semantic)
        return torch.cat([self._bos(semantic), semantic], dim=1)

    def coarse_sequence(self, semantic: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """[BOS, s…, SEP, c…] with coarse codes (B, T, Q′) → (B, T_s + 2 + T·Q′)."""
        self.check_semantic(semantic)
        return torch.cat([self._bos(semantic), semantic, self._sep(semantic), self.acoustic_ids(coarse, 0)], dim=1)

    def fine_sequence(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """[BOS, c…, SEP, f…] with coarse (B, T, Q′) and fine (B, T, Q − Q′) codes."""
        c = self.acoustic_ids(coarse, 0)
        return torch.cat([self._bos(c), c, self._sep(c), self.acoustic_ids(fine, self.coarse_quantizers)], dim=1)
