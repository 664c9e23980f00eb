"""Bach chorales as audio: music21's corpus rendered to 16 kHz with pretty_midi's own synthesis, and a key finder.

Each chorale (music21 ships 413 under ``bach``) is written to MIDI by music21 and synthesised by ``pretty_midi``
(no system library), peak-normalised to 0.5, at music21's default tempo, in one of three timbres (:data:`TIMBRES`:
the amplitudes of a note's harmonics), so that the data has a *sound* besides its notes (AudioLM's acoustic tokens
carry the sound, its semantic tokens the content). Its *written* key is the first key in the score (music21's
``key.Key``: tonic and mode), and its notes are kept as a pitch-class roll at 25 frames a second.
Chorales, not clips, are split between training and held-out, with a seeded permutation, so no held-out chorale is
heard in training. Arrays are cached in ``data/cache/audiolm/`` (helpers.paths.DATA_DIR).

The key finder (Krumhansl & Kessler, 1982; the Krumhansl–Schmuckler algorithm) sums a chromagram over time into a
pitch-class profile and picks, among the 24 major and minor keys, the one whose rotated key profile correlates best
with it. Keys are numbered tonic pitch class + 12 · minor (0 = C major, 21 = A minor).

    python data/audiolm/chorales.py --profile cpu
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from helpers.common import npz
from helpers.course.deps import require
from helpers.paths import DATA_DIR
from helpers.profile import choose, get_profile

VERSION = 2  # bump when rendering changes: cached files carry it in their name
SAMPLE_RATE = 16000
ROLL_RATE = 25  # frames a second of the pitch-class roll (AudioLM's semantic rate)
# name → amplitudes of harmonics 1, 2, 3, …: nearly a sine, odd harmonics only, every harmonic at 1/k
TIMBRES = {"flute": (1.0, 0.12, 0.04), "clarinet": (1.0, 0.0, 0.4, 0.0, 0.25, 0.0, 0.12),
           "organ": (1.0, 0.5, 0.33, 0.25, 0.2, 0.17)}
CACHE_DIR = DATA_DIR / "cache" / "audiolm"
PEAK = 0.5
PROFILE_SIZES = {"smoke": (8, 4), "cpu": (60, 12), "gpu": (360, 40)}  # chorales: (train, held-out)
PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Krumhansl & Kessler's probe-tone ratings for C major and C minor (tonic first).
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def key_name(key: int) -> str:
    """0 → 'C major', 21 → 'A minor'."""
    return f"{PITCH_CLASSES[key % 12]} {'minor' if key >= 12 else 'major'}"


def chorale_paths() -> list[Path]:
    """music21's Bach chorales, sorted by name."""
    music21 = require("music21", purpose="The chorale data")
    return sorted(Path(p) for p in music21.corpus.getComposer("bach"))


def written_key(score) -> int:
    """The first key written in a music21 score, as tonic pitch class + 12 · minor (a bare key signature is read as
    its major key)."""
    key = require("music21", purpose="The chorale data").key
    signature = next(iter(score.recurse().getElementsByClass(key.KeySignature)), None)
    if signature is None:
        raise ValueError("the score has no key signature")
    k = signature if isinstance(signature, key.Key) else signature.asKey("major")
    return k.tonic.pitchClass + (12 if k.mode == "minor" else 0)


def analyzed_key(score) -> int:
    """music21's own key estimate from the notes (``analyze('key')``, Krumhansl–Schmuckler on the score)."""
    k = score.analyze("key")
    return k.tonic.pitchClass + (12 if k.mode == "minor" else 0)


def timbre_wave(timbre: str):
    """The periodic waveform of a timbre: phase → Σ_k a_k sin(k · phase) (a function pretty_midi can play)."""
    if timbre not in TIMBRES:
        raise ValueError(f"expected a timbre among {sorted(TIMBRES)}, got {timbre!r}")
    amplitudes = TIMBRES[timbre]

    def wave(phase: np.ndarray) -> np.ndarray:
        return sum(a * np.sin((k + 1) * phase) for k, a in enumerate(amplitudes) if a)

    return wave


def render(path: Path, timbre: str = "flute", sample_rate: int = SAMPLE_RATE
           ) -> tuple[np.ndarray, int, int, np.ndarray]:
    """A chorale as float32 audio (N,) peak-normalised to 0.5, its written key, music21's analysed key, and its
    pitch-class roll (N // (sample_rate / 25), 12) bool: frame t says which pitch classes sound at t / 25 s."""
    music21 = require("music21", purpose="The chorale data")
    pretty_midi = require("pretty_midi", purpose="The chorale data")
    score = music21.corpus.parse(str(path))
    midi = music21.midi.translate.streamToMidiFile(score)
    fd, name = tempfile.mkstemp(suffix=".mid")
    os.close(fd)
    try:
        midi.open(name, "wb")
        midi.write()
        midi.close()
        performance = pretty_midi.PrettyMIDI(name)
    finally:
        os.unlink(name)
    audio = performance.synthesize(fs=sample_rate, wave=timbre_wave(timbre))
    audio = audio / max(np.abs(audio).max(), 1e-9) * PEAK
    frames = len(audio) * ROLL_RATE // sample_rate
    roll = performance.get_chroma(fs=ROLL_RATE).T[:frames] > 0  # (T, 12)
    roll = np.concatenate([roll, np.zeros((frames - len(roll), 12), dtype=bool)])
    return audio.astype(np.float32), written_key(score), analyzed_key(score), roll


def split(train: int, held_out: int, seed: int = 0) -> dict[str, list[Path]]:
    """Disjoint sets of chorales: a seeded permutation's first ``held_out`` are held out, the next ``train`` train."""
    paths = chorale_paths()
    if train + held_out > len(paths):
        raise ValueError(f"music21 ships {len(paths)} Bach chorales; asked for {train} + {held_out}")
    order = np.random.default_rng(seed).permutation(len(paths))
    return {"val": [paths[i] for i in order[:held_out]], "train": [paths[i] for i in order[held_out:held_out + train]]}


def build(paths: list[Path], sample_rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Render chorales into one array: audio (concatenated), offsets (n + 1,), keys (n,) as written, analyzed_keys
    (n,) as music21 estimates them from the notes, timbres (n,) (indices into :data:`TIMBRES`, chorale i gets
    timbre i mod 3), rolls (concatenated pitch-class rolls, (Σ T_i, 12)), roll_offsets (n + 1,), names (n,)."""
    names = list(TIMBRES)
    timbres = [i % len(names) for i in range(len(paths))]
    pieces, keys, analyzed, rolls = zip(*(render(p, names[t], sample_rate) for p, t in zip(paths, timbres,
                                                                                           strict=True)), strict=True)
    return {"audio": np.concatenate(pieces), "offsets": np.concatenate([[0], np.cumsum([len(p) for p in pieces])]),
            "keys": np.array(keys), "analyzed_keys": np.array(analyzed), "timbres": np.array(timbres),
            "rolls": np.concatenate(rolls), "roll_offsets": np.concatenate([[0], np.cumsum([len(r) for r in rolls])]),
            "names": np.array([p.stem for p in paths]), "sample_rate": np.array(sample_rate)}


def load(split_name: str, profile: str | None = None, seed: int = 0, cache_dir: Path = CACHE_DIR
         ) -> dict[str, np.ndarray]:
    """The chorales of ``split_name`` ('train' or 'val') for a run profile, rendered once and cached."""
    if split_name not in ("train", "val"):
        raise ValueError(f"expected split 'train' or 'val', got {split_name!r}")
    train, held_out = PROFILE_SIZES[get_profile(profile)]
    path = Path(cache_dir) / f"chorales_{split_name}_{train}+{held_out}_seed{seed}_{SAMPLE_RATE}hz_v{VERSION}.npz"
    if not path.exists():
        npz.save(path, build(split(train, held_out, seed)[split_name]), compressed=False)
    return npz.load(path)


def clips(data: dict[str, np.ndarray], seconds: float, hop_seconds: float | None = None) -> dict[str, np.ndarray]:
    """Cut every chorale into clips of ``seconds`` (every ``hop_seconds``, default no overlap; seconds × 25 must be
    whole) → audio (n, S) float32, rolls (n, seconds × 25, 12) bool, and per clip its chorale's key, timbre and
    index (``owner``), and its start in the chorale in seconds."""
    sr = int(data["sample_rate"])
    frames = round(seconds * ROLL_RATE)
    if abs(frames - seconds * ROLL_RATE) > 1e-9:
        raise ValueError(f"expected clips of a whole number of 1/{ROLL_RATE} s frames, got {seconds} s")
    size, hop = int(seconds * sr), int((hop_seconds or seconds) * sr)
    out: dict[str, list] = {"audio": [], "rolls": [], "keys": [], "timbres": [], "owners": [], "starts": []}
    for i, (a, b) in enumerate(zip(data["offsets"][:-1], data["offsets"][1:], strict=True)):
        for start in range(a, b - size + 1, hop):
            first = data["roll_offsets"][i] + (start - a) * ROLL_RATE // sr
            out["audio"].append(data["audio"][start:start + size])
            out["rolls"].append(data["rolls"][first:first + frames])
            out["keys"].append(data["keys"][i])
            out["timbres"].append(data["timbres"][i])
            out["owners"].append(i)
            out["starts"].append((start - a) / sr)
    return {k: np.stack(v) if k in ("audio", "rolls") else np.array(v) for k, v in out.items()}


def chroma_frames(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, n_fft: int = 4096, hop: int = 2048,
                  fmin: float = 60.0, fmax: float = 2000.0) -> np.ndarray:
    """Pitch-class energy frame by frame: audio (..., N) → (..., T, 12), T = (N − n_fft) // hop + 1; frame t covers
    samples [t · hop, t · hop + n_fft). Each STFT bin in [fmin, fmax] adds its power to the pitch class of its
    frequency (12 log2(f / 440) + 69, mod 12)."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.shape[-1] < n_fft:
        raise ValueError(f"expected at least {n_fft} samples, got {audio.shape[-1]}")
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft, axis=-1)[..., ::hop, :]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2  # (..., T, F)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    used = (freqs >= fmin) & (freqs <= fmax)
    classes = np.round(12 * np.log2(freqs[used] / 440.0) + 69).astype(int) % 12
    return power[..., used] @ np.eye(12)[classes]


def chroma(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, n_fft: int = 4096, hop: int = 2048,
           fmin: float = 60.0, fmax: float = 2000.0) -> np.ndarray:
    """Pitch-class energy of audio (..., N) → (..., 12): :func:`chroma_frames` summed over time."""
    return chroma_frames(audio, sample_rate, n_fft, hop, fmin, fmax).sum(-2)


def key_profiles() -> np.ndarray:
    """(24, 12): the major profile rotated to each tonic (keys 0–11), then the minor one (12–23)."""
    return np.stack([np.roll(p, t) for p in (MAJOR_PROFILE, MINOR_PROFILE) for t in range(12)])


def key_scores(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """How well each of the 24 keys fits the audio: the correlation of its chroma with each rotated key profile,
    (..., N) → (..., 24), in [−1, 1]."""
    c = chroma(audio, sample_rate)
    c = (c - c.mean(-1, keepdims=True)) / (c.std(-1, keepdims=True) + 1e-12)
    p = key_profiles()
    p = (p - p.mean(-1, keepdims=True)) / p.std(-1, keepdims=True)
    return c @ p.T / 12


def find_key(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The key (tonic + 12 · minor) whose profile correlates best with the audio's chroma: (..., N) → (...,)."""
    return key_scores(audio, sample_rate).argmax(-1)


def stays_in_key(prompt: np.ndarray, continuation: np.ndarray, top: int = 3, sample_rate: int = SAMPLE_RATE
                 ) -> np.ndarray:
    """Whether each continuation keeps its prompt's key: the key found on the prompt (..., N) is among the ``top``
    best-fitting keys of the continuation (..., M) (``top`` > 1 forgives the finder's confusions between a key and
    its relative or dominant on a few seconds of music). → (...,) bool."""
    key = find_key(prompt, sample_rate)
    best = np.argsort(-key_scores(continuation, sample_rate), axis=-1)[..., :top]
    return (best == np.asarray(key)[..., None]).any(-1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the Bach chorales of a run profile to data/cache/audiolm/.")
    parser.add_argument("--profile", choices=sorted(PROFILE_SIZES), default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    profile = choose(smoke="smoke", cpu="cpu", gpu="gpu", profile=args.profile)
    start = time.perf_counter()
    for name in ("train", "val"):
        data = load(name, profile, args.seed)
        seconds = len(data["audio"]) / int(data["sample_rate"])
        bounds = zip(data["offsets"][:-1], data["offsets"][1:], strict=True)
        found = np.array([find_key(data["audio"][a:b]) for a, b in bounds])
        print(f"{name}: {len(data['keys'])} chorales, {seconds / 60:.1f} min of audio; the key finder agrees with "
              f"the written key on {np.mean(found == data['keys']):.0%}, with music21's analysis on "
              f"{np.mean(found == data['analyzed_keys']):.0%}")
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
