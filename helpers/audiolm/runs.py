"""Lab 4's runs: train the codec, the semantic tokenizer and the three stages on rendered chorales, evaluate the codec
against PCM at the same bitrates, and continue held-out prompts with and without semantic tokens.

Notebooks and scripts import this module; no other module does. Every training run goes through
:func:`helpers.common.loop.train_loop` with AdamW and a warm-up + cosine schedule. The parts a student writes in the
lab (the codec's loss, k-means, the coarse layout, the continuation loop) come in as arguments.
Shapes: B batch, N samples, T acoustic frames, T_s semantic frames, Q levels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from helpers.audiolm import chorales, kmeans
from helpers.audiolm.codec import Codec
from helpers.audiolm.discriminator import Discriminators
from helpers.audiolm.hierarchy import Hierarchy, generate, next_token_loss
from helpers.audiolm.losses import discriminator_loss, feature_matching_loss, hinge_generator_loss
from helpers.audiolm.quality import best_pcm_baseline, mel_distance, si_sdr
from helpers.audiolm.semantic import MaskedPredictor, SemanticTokenizer
from helpers.audiolm.semantic import span_mask as draw_span_mask
from helpers.audiolm.tokens import TokenLayout
from helpers.common.loop import History, optimiser_step, train_loop
from helpers.common.optim import adamw, cosine_lr
from helpers.llama.model import Llama

CodecLoss = Callable[[Codec, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def schedule(steps: int, lr: float, warmup: int | None = None) -> Callable[[int], float]:
    """Linear warm-up (5 % of the steps unless given), then cosine decay to lr / 30."""
    warmup = max(1, steps // 20) if warmup is None else warmup
    return lambda step: cosine_lr(step, lr, warmup, steps, lr / 30)


def random_clips(audio: torch.Tensor, count: int, samples: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` clips of ``samples`` at random places of a long signal (N,) → (count, samples)."""
    starts = torch.randint(0, len(audio) - samples, (count,), generator=generator)
    return torch.stack([audio[s:s + samples] for s in starts.tolist()])


# ---------------------------------------------------------------------------------------------------------------
# The codec


def train_codec(codec: Codec, audio: torch.Tensor, loss_fn: CodecLoss, steps: int, batch: int, samples: int,
                lr: float, generator: torch.Generator, discriminators: Discriminators | None = None,
                adversarial_from: int = 0, adversarial_weight: float = 1.0, feature_weight: float = 10.0,
                device: torch.device | str = "cpu", progress: bool | str = True) -> History:
    """Train the codec on random clips of the training audio (N,) with ``loss_fn(codec, clips) → (loss, parts)``.

    With ``discriminators``, from step ``adversarial_from`` on the codec's loss also has SoundStream's adversarial
    and feature-matching terms and the discriminators take their own hinge step (chapter 3). Adam β = (0.5, 0.9),
    as SoundStream; no weight decay."""
    codec.to(device).train()
    optimiser = adamw(codec, lr, weight_decay=0.0, betas=(0.5, 0.9))
    d_optimiser = None
    if discriminators is not None:
        discriminators.to(device).train()
        d_optimiser = adamw(discriminators, lr, weight_decay=0.0, betas=(0.5, 0.9))

    def step(i: int, lr_now: float):
        clips = random_clips(audio, batch, samples, generator).to(device)
        loss, parts = loss_fn(codec, clips)
        metrics = {name: value.item() for name, value in parts.items()}
        adversarial = discriminators is not None and i >= adversarial_from
        if adversarial:
            recon = codec(clips)[0]  # the same clips again: the adversarial terms need the decoded audio
            real, fake = discriminators(codec.whole_frames(clips)), discriminators(recon)
            g_adv = torch.stack([hinge_generator_loss(logits) for logits, _ in fake]).mean()
            feature = torch.stack([x for (_, r), (_, f) in zip(real, fake, strict=True)
                                   for x in feature_matching_loss([t.detach() for t in r], f)]).mean()
            loss = loss + adversarial_weight * g_adv + feature_weight * feature
            metrics |= {"adversarial": g_adv.item(), "feature": feature.item()}
        grad_norm = optimiser_step(codec, optimiser, loss, lr_now)
        if adversarial:
            d_loss = discriminator_loss(discriminators, codec.whole_frames(clips), codec(clips)[0].detach())
            optimiser_step(discriminators, d_optimiser, d_loss, lr_now)
            metrics["discriminator"] = d_loss.item()
        return loss, grad_norm, metrics

    return train_loop(step, steps, schedule(steps, lr), progress=progress, name="codec")


@dataclass
class CodecEvaluation:
    """Per number of levels q = 1 … Q: the bitrate, and mean SI-SDR (dB) and mel distance (dB) of the codec and of
    the best μ-law PCM baseline at the same bitrate, over the same held-out clips."""

    levels: list[int] = field(default_factory=list)
    bitrates: list[float] = field(default_factory=list)
    codec_si_sdr: list[float] = field(default_factory=list)
    codec_mel: list[float] = field(default_factory=list)
    pcm_si_sdr: list[float] = field(default_factory=list)
    pcm_mel: list[float] = field(default_factory=list)
    pcm_bits: list[float] = field(default_factory=list)  # the mean number of bits a sample the baseline chose

    def rows(self) -> list[tuple]:
        return list(zip(self.levels, self.bitrates, self.codec_si_sdr, self.pcm_si_sdr, self.codec_mel, self.pcm_mel,
                        strict=True))

    def codec_wins(self) -> bool:
        """Whether the codec beats the baseline on both measures at every bitrate."""
        return all(c > p for c, p in zip(self.codec_si_sdr, self.pcm_si_sdr, strict=True)) and \
            all(c < p for c, p in zip(self.codec_mel, self.pcm_mel, strict=True))


@torch.no_grad()
def evaluate_codec(codec: Codec, clips: torch.Tensor, device: torch.device | str = "cpu") -> CodecEvaluation:
    """Decode held-out clips (B, N) at every number of levels and compare with PCM at the same bitrate."""
    codec.eval()
    c = codec.config
    codes = torch.cat([codec.tokenize(part.to(device)) for part in clips.split(16)]).cpu()
    reference = codec.whole_frames(clips).double()
    result = CodecEvaluation()
    for q in range(1, c.num_quantizers + 1):
        decoded = torch.cat([codec.decode(part.to(device)) for part in codes[..., :q].split(16)]).cpu().double()
        rate = c.frame_rate * q * math.log2(c.codebook_size)
        pcm, bits = best_pcm_baseline(reference, rate, c.sample_rate)
        result.levels.append(q)
        result.bitrates.append(rate)
        result.codec_si_sdr.append(si_sdr(reference, decoded).mean().item())
        result.codec_mel.append(mel_distance(reference, decoded, c.sample_rate).mean().item())
        result.pcm_si_sdr.append(si_sdr(reference, pcm).mean().item())
        result.pcm_mel.append(mel_distance(reference, pcm, c.sample_rate).mean().item())
        result.pcm_bits.append(bits.double().mean().item())
    return result


# ---------------------------------------------------------------------------------------------------------------
# Semantic tokens


def train_masked_predictor(model: MaskedPredictor, features: torch.Tensor, targets: torch.Tensor, steps: int,
                           batch: int, lr: float, generator: torch.Generator,
                           device: torch.device | str = "cpu", progress: bool | str = True) -> History:
    """Masked prediction on clips' features (n, T, d) with target ids (n, T); the step's metric is the share of
    masked frames predicted right."""
    model.to(device).train()
    optimiser = adamw(model, lr, weight_decay=0.01)
    c = model.config

    def step(i: int, lr_now: float):
        pick = torch.randint(0, len(features), (batch,), generator=generator)
        mask = draw_span_mask(batch, features.shape[1], c.mask_prob, c.mask_span, generator).to(device)
        x, y = features[pick].to(device), targets[pick].to(device)
        logits = model(x, mask)
        loss = F.cross_entropy(logits[mask], y[mask])
        accuracy = (logits[mask].argmax(-1) == y[mask]).float().mean()
        return loss, optimiser_step(model, optimiser, loss, lr_now), {"accuracy": float(accuracy)}

    history = train_loop(step, steps, schedule(steps, lr), progress=progress, name="masked prediction")
    model.eval()
    return history


def frame_targets(features: torch.Tensor, clusters: int, generator: torch.Generator, iters: int = 30,
                  lloyd: Callable = kmeans.lloyd) -> tuple[torch.Tensor, torch.Tensor]:
    """HuBERT's first targets: k-means of the frames' features (n, T, d) → (ids (n, T), centroids (K, d))."""
    flat = features.reshape(-1, features.shape[-1])
    centroids, _ = lloyd(flat, kmeans.sample_rows(flat, clusters, generator), iters)
    return kmeans.nearest(flat, centroids).reshape(features.shape[:2]), centroids



# ---------------------------------------------------------------------------------------------------------------
# Token streams of whole chorales


@dataclass
class Tokens:
    """Each chorale's semantic tokens (T_s,) and codes (T, Q), with r = T / T_s acoustic frames per semantic one."""

    semantic: list[torch.Tensor]
    codes: list[torch.Tensor]
    frames_per_semantic: int


@torch.no_grad()
def tokenize_chorales(data: dict[str, np.ndarray], codec: Codec, tokenizer: SemanticTokenizer, chunk_seconds: float,
                      device: torch.device | str = "cpu") -> Tokens:
    """Semantic tokens and codec codes of every chorale, computed in chunks of ``chunk_seconds`` (the length the
    semantic encoder was trained on: its positions beyond that are untrained)."""
    hop = tokenizer.encoder.config.hop
    ratio = hop // codec.config.hop
    if ratio * codec.config.hop != hop:
        raise ValueError(f"expected the semantic hop ({hop}) to be a multiple of the codec's ({codec.config.hop})")
    chunk = int(chunk_seconds * codec.config.sample_rate) // hop * hop
    semantic, codes = [], []
    for a, b in zip(data["offsets"][:-1], data["offsets"][1:], strict=True):
        audio = torch.from_numpy(data["audio"][a:b][: (b - a) // chunk * chunk]).reshape(-1, chunk).to(device)
        semantic.append(torch.cat([tokenizer(part) for part in audio.split(32)]).reshape(-1).cpu())
        codes.append(torch.cat([codec.tokenize(part) for part in audio.split(32)]).reshape(-1, codec.config.
                                                                                          num_quantizers).cpu())
    return Tokens(semantic, codes, ratio)


# ---------------------------------------------------------------------------------------------------------------
# The three stages


def train_stage(model: Llama, batches: Callable[[], tuple[torch.Tensor, int]], steps: int, lr: float,
                name: str, device: torch.device | str = "cpu", progress: bool | str = True) -> History:
    """Next-token training of one stage on ``batches() → (sequences (B, L), target_start)``."""
    model.to(device).train()
    optimiser = adamw(model, lr, weight_decay=0.1)

    def step(i: int, lr_now: float):
        sequences, start = batches()
        loss = next_token_loss(model, sequences.to(device), start)
        return loss, optimiser_step(model, optimiser, loss, lr_now)

    history = train_loop(step, steps, schedule(steps, lr), progress=progress, name=name)
    model.eval()
    return history


def window_sampler(tokens: Tokens, semantic_frames: int, batch: int, generator: torch.Generator
                   ) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Random windows of ``semantic_frames`` semantic tokens and their r · semantic_frames frames of codes, from
    random chorales: () → (semantic (B, T_s), codes (B, T, Q))."""
    r = tokens.frames_per_semantic
    usable = [i for i, s in enumerate(tokens.semantic) if len(s) > semantic_frames]

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        semantic, codes = [], []
        for pick in torch.randint(0, len(usable), (batch,), generator=generator).tolist():
            i = usable[pick]
            start = int(torch.randint(0, len(tokens.semantic[i]) - semantic_frames + 1, (1,), generator=generator))
            semantic.append(tokens.semantic[i][start:start + semantic_frames])
            codes.append(tokens.codes[i][r * start: r * (start + semantic_frames)])
        return torch.stack(semantic), torch.stack(codes)

    return sample


def stage_batches(stage: str, layout: TokenLayout, windows: Callable, coarse_sequence: Callable | None = None,
                  fine_frames: int | None = None) -> Callable[[], tuple[torch.Tensor, int]]:
    """Training sequences of one stage from ``windows()`` (:func:`window_sampler`): 'semantic', 'coarse' (with
    ``coarse_sequence(layout, semantic, coarse)``, the course's or yours), 'acoustic only' (the coarse stage without
    semantic tokens: AudioLM's ablation) or 'fine' (chunks of ``fine_frames`` frames starting on a semantic frame)."""
    q = layout.coarse_quantizers

    def batches() -> tuple[torch.Tensor, int]:
        semantic, codes = windows()
        if stage == "semantic":
            return layout.semantic_sequence(semantic), 1
        if stage == "coarse":
            return coarse_sequence(layout, semantic, codes[..., :q]), semantic.shape[1] + 2
        if stage == "acoustic only":
            return coarse_sequence(layout, semantic[:, :0], codes[..., :q]), 2
        r = codes.shape[1] // semantic.shape[1]
        start = r * int(torch.randint(0, (codes.shape[1] - fine_frames) // r + 1, (1,)))
        chunk = codes[:, start:start + fine_frames]
        return layout.fine_sequence(chunk[..., :q], chunk[..., q:]), fine_frames + 2

    return batches


# ---------------------------------------------------------------------------------------------------------------
# Continuations


@torch.no_grad()
def continue_without_semantic(hierarchy: Hierarchy, coarse_model: Llama, prompt_codes: torch.Tensor, frames: int,
                              **sampling) -> torch.Tensor:
    """AudioLM's ablation: continue a prompt's codes (B, t, Q) to ``frames`` frames with a coarse stage trained
    without semantic tokens, then the hierarchy's fine stage. → (B, frames, Q), the prompt's frames first."""
    lay, q = hierarchy.layout, hierarchy.layout.coarse_quantizers
    prompt_coarse = prompt_codes[..., :q]
    prefix = lay.coarse_sequence(prompt_codes.new_zeros(prompt_codes.shape[0], 0), prompt_coarse)
    start = prompt_coarse.shape[1] * q
    new = generate(coarse_model, prefix, (frames - prompt_codes.shape[1]) * q,
                   lambda i: lay.allowed(start + i, 0, q), **sampling)
    coarse = torch.cat([prompt_coarse, lay.codes_from_ids(new, 0, q)], dim=1)
    return torch.cat([coarse, hierarchy.sample_fine(coarse, prompt_codes[..., q:], **sampling)], dim=-1)


@dataclass
class Prompts:
    """Held-out windows cut into a prompt and its real continuation."""

    audio: torch.Tensor  # (B, N) prompt + continuation
    semantic: torch.Tensor  # (B, T_s) of the whole window
    codes: torch.Tensor  # (B, T, Q) of the whole window
    owners: np.ndarray  # (B,) chorale of each window
    prompt_semantic_frames: int


@torch.no_grad()
def held_out_prompts(data: dict[str, np.ndarray], codec: Codec, tokenizer: SemanticTokenizer, prompt_seconds: float,
                     continuation_seconds: float, every_seconds: float, device: torch.device | str = "cpu"
                     ) -> Prompts:
    """Windows of prompt + continuation every ``every_seconds`` of the held-out chorales, with their tokens."""
    clips = chorales.clips(data, prompt_seconds + continuation_seconds, every_seconds)
    audio = torch.from_numpy(clips["audio"])
    hop = tokenizer.encoder.config.hop
    audio = audio[:, : audio.shape[1] // hop * hop]
    semantic = torch.cat([tokenizer(part.to(device)) for part in audio.split(32)]).cpu()
    codes = torch.cat([codec.tokenize(part.to(device)) for part in audio.split(32)]).cpu()
    return Prompts(audio, semantic, codes, clips["owners"], round(prompt_seconds * codec.config.sample_rate / hop))


@dataclass
class KeyResults:
    """The share of continuations whose key (the prompt's, by the key finder) stays among their three best-fitting
    keys, and each window's verdict."""

    shares: dict[str, float]
    verdicts: dict[str, np.ndarray]


def key_kept(prompts: Prompts, continuations: dict[str, torch.Tensor], sample_rate: int,
             seed: int = 0) -> KeyResults:
    """For each set of continuation audio (B, M) (each after its prompt), whether it stays in the prompt's key;
    plus the real continuation (the key finder's ceiling) and another chorale's continuation (chance)."""
    prompt_samples = prompts.audio.shape[1] - next(iter(continuations.values())).shape[1]
    prompt = prompts.audio[:, :prompt_samples].numpy()
    real = prompts.audio[:, prompt_samples:].numpy()
    shuffled = np.random.default_rng(seed).permutation(len(prompt))
    other = prompts.owners[shuffled] != prompts.owners  # pairs from two different chorales
    verdicts = {"real continuation (ceiling)": chorales.stays_in_key(prompt, real, sample_rate=sample_rate),
                "another chorale (chance)": chorales.stays_in_key(prompt[other], real[shuffled][other],
                                                                  sample_rate=sample_rate)}
    for name, audio in continuations.items():
        verdicts[name] = chorales.stays_in_key(prompt, audio.double().numpy(), sample_rate=sample_rate)
    return KeyResults({name: float(v.mean()) for name, v in verdicts.items()}, verdicts)
