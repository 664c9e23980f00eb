"""helpers.audiolm.quality: SI-SDR by its definition, Fourier resampling against scipy, μ-law PCM and the baselines'
bitrate."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

from helpers.audiolm.quality import best_pcm_baseline, mel_distance, mu_law, pcm_baseline, resample, si_sdr


def test_si_sdr_of_known_noise_and_its_scale_invariance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4000, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 4000, generator=g, dtype=torch.float64)
    x, noise = x - x.mean(-1, keepdim=True), noise - noise.mean(-1, keepdim=True)  # SI-SDR compares zero-mean parts
    noise = noise - (noise * x).sum(-1, keepdim=True) / x.pow(2).sum(-1, keepdim=True) * x  # orthogonal to x
    for ratio_db in (-5.0, 0.0, 12.0):
        y = x + noise / noise.norm(dim=-1, keepdim=True) * x.norm(dim=-1, keepdim=True) * 10 ** (-ratio_db / 20)
        torch.testing.assert_close(si_sdr(x, y), torch.full((3,), ratio_db, dtype=torch.float64), atol=1e-6, rtol=0)
        torch.testing.assert_close(si_sdr(x, 0.3 * y), si_sdr(x, y))  # the gain does not count
    assert (si_sdr(x, x) > 80).all()


def test_resample_equals_scipy_and_keeps_a_tone_below_both_nyquist_limits():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1001, generator=g, dtype=torch.float64)
    for length in (301, 1001, 2503):
        torch.testing.assert_close(resample(x, length), torch.from_numpy(scipy.signal.resample(x.numpy(), length,
                                                                                                axis=-1)))
    t = torch.arange(16000, dtype=torch.float64) / 16000
    tone = torch.sin(2 * math.pi * 440 * t)[None]  # 440 Hz survives 2 kHz (Nyquist 1 kHz)
    torch.testing.assert_close(resample(resample(tone, 2000), 16000), tone, atol=1e-9, rtol=0)


def test_mu_law_error_shrinks_with_bits_and_keeps_the_sign():
    x = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    errors = [float((mu_law(x, b) - x).abs().max()) for b in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.03
    assert (torch.sign(mu_law(x, 3)) == torch.sign(x)).all() or (x == 0).any()
    with pytest.raises(ValueError, match="expected 1 to 16 bits a sample, got 0"):
        mu_law(x, 0)


def test_the_baseline_sends_the_bitrate_it_is_given_and_gets_better_with_it():
    t = torch.arange(32000, dtype=torch.float64) / 16000
    chord = sum(torch.sin(2 * math.pi * f * t) / k for k, f in enumerate((220.0, 277.2, 329.6, 440.0), 1))[None]
    chord = 0.5 * chord / chord.abs().max()
    scores = [float(si_sdr(chord, best_pcm_baseline(chord, rate)[0])) for rate in (800, 3200, 12800)]
    assert scores[0] < scores[1] < scores[2]
    # 3200 bit/s as 2-bit samples is 1600 samples a second: 3200 samples for these 2 s
    low = np.fft.rfft(pcm_baseline(chord, 3200, 2).numpy()[0])
    assert np.abs(low[np.fft.rfftfreq(32000, 1 / 16000) > 800]).max() < 1e-6 * np.abs(low).max()


def test_mel_distance_is_zero_for_equal_clips_and_grows_with_the_error():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8000, generator=g)
    assert float(mel_distance(x, x).abs().max()) == 0.0
    near, far = (mel_distance(x, x + s * torch.randn(2, 8000, generator=g)) for s in (0.1, 1.0))
    assert (near < far).all()


def test_bad_input_gets_one_sentence():
    with pytest.raises(ValueError, match=r"expected two \(batch, samples\) tensors of the same shape, got \(2, 10\) "
                                         r"and \(2, 9\)"):
        si_sdr(torch.zeros(2, 10), torch.zeros(2, 9))
    with pytest.raises(ValueError, match=r"expected audio of shape \(batch, samples\), got \(10,\)"):
        pcm_baseline(torch.zeros(10), 800, 2)
