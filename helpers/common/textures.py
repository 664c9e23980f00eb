"""Procedural textures for rendered scenes: tileable RGB images made of a few given colours.

A texture is an (n, n, 3) uint8 image that tiles (its left edge continues its right edge, its top its bottom), so a
ground can repeat it and an object can wrap it. Each is drawn from a ``numpy.random.Generator`` and a few colours
(RGB in [0, 1]); the kinds:

- ``plain``: one colour with a fine grain;
- ``stripes``: bands of two or three colours at any angle;
- ``checker``: a checkerboard of two colours, turned by 0 or 45 degrees;
- ``dots``: round spots of one colour on another, on a jittered grid;
- ``blobs``: a camouflage of two or three colours, cut from smooth noise;
- ``marble``: veins of one colour through another, bent by smooth noise;
- ``patchwork``: two of the kinds above, each filling a smooth random half of the image.

Every kind gets a light grain and a slow variation of brightness, as a painted surface would. ``frequency`` is how
many times a pattern repeats across the image (about; the noise-based kinds use it as their feature scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

KINDS = ("plain", "stripes", "checker", "dots", "blobs", "marble", "patchwork")


def periodic_noise(rng: np.random.Generator, size: int, frequency: float) -> np.ndarray:
    """Smooth noise that tiles: white noise low-pass filtered in the Fourier domain (a Gaussian of width
    ``frequency`` cycles per image), rescaled to mean 0, standard deviation 1; (size, size) float."""
    if size < 2 or frequency <= 0:
        raise ValueError(f"need size ≥ 2 and frequency > 0, got size={size}, frequency={frequency}")
    k = np.fft.fftfreq(size) * size  # cycles per image
    radius2 = k[:, None] ** 2 + k[None, :] ** 2
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) * np.exp(-radius2 / (2 * frequency ** 2))
    field = np.fft.ifft2(spectrum).real
    return (field - field.mean()) / (field.std() + 1e-12)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): rows y and columns x, (size, size) each."""
    t = (np.arange(size) + 0.5) / size
    return np.meshgrid(t, t, indexing="ij")


def _wave_vector(rng: np.random.Generator, frequency: float) -> tuple[int, int]:
    """An integer (kx, ky), not both 0, of length about ``frequency``, in a random direction: a wave that tiles."""
    angle = rng.uniform(0, math.pi)
    kx, ky = round(frequency * math.cos(angle)), round(frequency * math.sin(angle))
    return (kx, ky) if (kx, ky) != (0, 0) else (max(1, round(frequency)), 0)


def _paint(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    return colours[labels % len(colours)]


def _pattern(kind: str, rng: np.random.Generator, colours: np.ndarray, size: int, frequency: float) -> np.ndarray:
    """The pattern of ``kind`` as (size, size, 3) float RGB in [0, 1], before grain and shading."""
    y, x = _grid(size)
    if kind == "plain":
        return np.broadcast_to(colours[0], (size, size, 3)).copy()
    if kind == "stripes":
        kx, ky = _wave_vector(rng, frequency)
        phase = (kx * x + ky * y) % 1.0  # one period per unit
        widths = rng.dirichlet(np.full(len(colours), 3.0))
        return _paint(np.searchsorted(np.cumsum(widths)[:-1], phase, side="right"), colours)
    if kind == "checker":
        n = max(1, round(frequency))
        if rng.uniform() < 0.5:
            squares = np.floor(x * n).astype(int) + np.floor(y * n).astype(int)
        else:  # turned by 45 degrees: diamonds, still tiling
            squares = np.floor((x + y) * n).astype(int) + np.floor((x - y) * n).astype(int)
        return _paint(squares % 2, colours[:2])
    if kind == "dots":
        n = max(1, round(frequency))
        jitter = rng.uniform(-0.25, 0.25, (n, n, 2)) / n
        radius = rng.uniform(0.18, 0.4) / n
        cy, cx = np.floor(y * n).astype(int), np.floor(x * n).astype(int)
        dots = np.zeros((size, size), dtype=bool)
        for dy in (-1, 0, 1):  # a pixel's own cell and its neighbours (a jittered dot may cross into them)
            for dx in (-1, 0, 1):
                j, i = (cy + dy) % n, (cx + dx) % n
                py = (cy + dy + 0.5) / n + jitter[j, i, 0]
                px = (cx + dx + 0.5) / n + jitter[j, i, 1]
                dots |= (y - py) ** 2 + (x - px) ** 2 <= radius ** 2
        return _paint(dots.astype(int), colours[:2])
    if kind == "blobs":
        field = periodic_noise(rng, size, frequency)
        levels = np.quantile(field, np.cumsum(rng.dirichlet(np.full(len(colours), 4.0)))[:-1])
        return _paint(np.searchsorted(levels, field), colours)
    if kind == "marble":
        kx, ky = _wave_vector(rng, max(1.0, frequency / 3))
        bent = 2 * math.pi * (kx * x + ky * y) + rng.uniform(1.5, 4.0) * periodic_noise(rng, size, frequency / 2)
        vein = np.abs(np.sin(bent)) ** rng.uniform(4, 12)  # thin where |sin| is near 1
        return (1 - vein)[..., None] * colours[0] + vein[..., None] * colours[1 % len(colours)]
    if kind == "patchwork":
        first, second = rng.choice([k for k in KINDS if k not in ("plain", "patchwork")], size=2, replace=False)
        split = periodic_noise(rng, size, rng.uniform(1.0, 2.5)) > 0
        a = _pattern(str(first), rng, colours, size, frequency)
        b = _pattern(str(second), rng, np.roll(colours, 1, axis=0), size, frequency)
        return np.where(split[..., None], a, b)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def make_texture(kind: str, colours: Sequence[Sequence[float]], rng: np.random.Generator, size: int = 64,
                 frequency: float = 4.0, grain: float = 0.04, shading: float = 0.12) -> np.ndarray:
    """A tileable texture of ``kind`` in ``colours`` (C, 3) RGB in [0, 1]: (size, size, 3) uint8.

    ``frequency``: repeats of the pattern across the image; ``grain``: the standard deviation of per-pixel noise;
    ``shading``: of a slow brightness variation (both relative to full scale)."""
    palette = np.asarray(colours, dtype=np.float64)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) == 0 or palette.min() < 0 or palette.max() > 1:
        raise ValueError(f"colours: expected (C, 3) RGB values in [0, 1], C ≥ 1, got shape {palette.shape}")
    if size < 4 or frequency <= 0 or grain < 0 or shading < 0:
        raise ValueError(f"need size ≥ 4, frequency > 0, grain ≥ 0, shading ≥ 0; got size={size}, "
                         f"frequency={frequency}, grain={grain}, shading={shading}")
    rgb = _pattern(kind, rng, palette, size, frequency)
    light = 1 + shading * periodic_noise(rng, size, 1.5)[..., None]
    rgb = rgb * light + grain * rng.standard_normal((size, size, 1))
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def random_texture(rng: np.random.Generator, colours: Sequence[Sequence[float]], size: int = 64,
                   frequency: tuple[float, float] = (2.0, 8.0), kinds: Sequence[str] = KINDS) -> np.ndarray:
    """A texture of a kind drawn from ``kinds``, in (a random order of) ``colours``, at a random frequency."""
    kind = str(kinds[int(rng.integers(len(kinds)))])
    palette = np.asarray(colours, dtype=np.float64)[rng.permutation(len(colours))]
    return make_texture(kind, palette, rng, size, float(rng.uniform(*frequency)))
