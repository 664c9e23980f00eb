"""helpers.common.textures: procedural textures tile, use the colours they are given, and follow the seed."""

import numpy as np
import pytest

from helpers.common import textures

COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.2, 0.9], [0.95, 0.9, 0.2]])


def _seam_and_inside(image: np.ndarray) -> tuple[float, float]:
    """Mean colour step across the wrap-around seams, and between neighbouring pixels inside the image."""
    x = image.astype(float)
    seam = (np.abs(x[:, 0] - x[:, -1]).mean() + np.abs(x[0] - x[-1]).mean()) / 2
    inside = (np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=0)).mean()) / 2
    return float(seam), float(inside)


@pytest.mark.parametrize("kind", textures.KINDS)
def test_every_kind_tiles_and_has_the_documented_shape(kind):
    image = textures.make_texture(kind, COLOURS, np.random.default_rng(0), size=64, frequency=5.0)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    seam, inside = _seam_and_inside(image)
    assert seam < 2.5 * inside + 2, f"{kind}: the seam ({seam:.1f}) stands out from the inside ({inside:.1f})"


@pytest.mark.parametrize("kind", [k for k in textures.KINDS if k not in ("plain", "marble")])
def test_patterns_use_the_colours_given(kind):
    image = textures.make_texture(kind, COLOURS[:2], np.random.default_rng(1), size=64, frequency=4.0, grain=0.0,
                                  shading=0.0)
    pixels = image.reshape(-1, 3).astype(float) / 255
    nearest = np.abs(pixels[:, None] - COLOURS[None, :2]).sum(-1).argmin(1)  # (n,): the closest given colour
    assert np.abs(pixels - COLOURS[nearest]).max() < 1 / 255 + 1e-9  # every pixel is one of them, exactly
    assert np.bincount(nearest, minlength=2).min() > 0.05 * len(pixels)  # and both are there


def test_plain_is_one_colour_and_grain_and_shading_vary_it():
    rng = np.random.default_rng(2)
    flat = textures.make_texture("plain", COLOURS[:1], rng, size=16, grain=0.0, shading=0.0)
    assert (flat == np.rint(COLOURS[0] * 255).astype(np.uint8)).all()
    grainy = textures.make_texture("plain", COLOURS[:1], rng, size=16)
    assert 2 < grainy.astype(float).std(axis=(0, 1)).max() < 30  # per channel


def test_random_texture_follows_the_seed():
    a = textures.random_texture(np.random.default_rng(5), COLOURS)
    assert np.array_equal(a, textures.random_texture(np.random.default_rng(5), COLOURS))
    assert not np.array_equal(a, textures.random_texture(np.random.default_rng(6), COLOURS))


def test_periodic_noise_is_normalised_and_periodic():
    field = textures.periodic_noise(np.random.default_rng(3), 32, 3.0)
    assert field.shape == (32, 32) and abs(field.mean()) < 1e-9 and abs(field.std() - 1) < 1e-9
    seam, inside = _seam_and_inside(field[..., None])
    assert seam < 2 * inside


def test_bad_input_says_what_was_expected():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"colours: expected \(C, 3\) RGB values in \[0, 1\]"):
        textures.make_texture("stripes", [[0, 128, 255]], rng)
    with pytest.raises(ValueError, match="kind must be one of"):
        textures.make_texture("zigzag", COLOURS, rng)
    with pytest.raises(ValueError, match="need size ≥ 4, frequency > 0"):
        textures.make_texture("dots", COLOURS, rng, frequency=0.0)
    with pytest.raises(ValueError, match="need size ≥ 2 and frequency > 0"):
        textures.periodic_noise(rng, 1, 2.0)
