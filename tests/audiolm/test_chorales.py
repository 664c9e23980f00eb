"""helpers.audiolm.chorales: the timbres' harmonics, a rendered chorale's roll against its audio, the key measure."""

import numpy as np
import pytest

from helpers.audiolm import chorales

SR = 16000


def triad(tonic: int, minor: bool, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    notes = [tonic, tonic + (3 if minor else 4), tonic + 7]
    return sum(np.sin(2 * np.pi * 440 * 2 ** ((60 + n - 69) / 12) * t) for n in notes)


def test_each_timbre_has_the_harmonics_it_names():
    phase = np.linspace(0, 2 * np.pi, 1024, endpoint=False)
    for name, amplitudes in chorales.TIMBRES.items():
        spectrum = np.abs(np.fft.rfft(chorales.timbre_wave(name)(phase))) / 512
        np.testing.assert_allclose(spectrum[1: len(amplitudes) + 1], amplitudes, atol=1e-9)
        assert spectrum[len(amplitudes) + 1:].max() < 1e-9
    with pytest.raises(ValueError, match=r"expected a timbre among \['clarinet', 'flute', 'organ'\], got 'piano'"):
        chorales.timbre_wave("piano")


def test_a_rendered_chorale_its_roll_and_its_key():
    path = chorales.chorale_paths()[0]
    audio, written, analyzed, roll = chorales.render(path, "organ")
    assert audio.dtype == np.float32 and abs(np.abs(audio).max() - chorales.PEAK) < 1e-6
    assert roll.shape == (len(audio) * chorales.ROLL_RATE // SR, 12) and roll.dtype == bool
    assert 0 <= written < 24 and 0 <= analyzed < 24
    # the pitch classes the roll says sound most carry most of the audio's chroma
    energy = chorales.chroma(audio)
    busiest = np.argsort(-roll.sum(0))[:5]
    assert energy[busiest].sum() > 0.6 * energy.sum()


def test_key_scores_and_staying_in_key():
    c_major, a_minor, f_sharp_major = triad(0, False), triad(9, True), triad(6, False)
    scores = chorales.key_scores(np.stack([c_major, a_minor]))
    assert scores.shape == (2, 24) and np.all(np.abs(scores) <= 1)
    assert chorales.find_key(c_major) == 0 and chorales.find_key(a_minor) == 21
    assert chorales.stays_in_key(c_major, c_major) and not chorales.stays_in_key(c_major, f_sharp_major)
    pairs = chorales.stays_in_key(np.stack([c_major, c_major]), np.stack([c_major, f_sharp_major]))
    assert pairs.tolist() == [True, False]


def test_bad_split_gets_one_sentence():
    with pytest.raises(ValueError, match="expected split 'train' or 'val', got 'test'"):
        chorales.load("test", "smoke")
