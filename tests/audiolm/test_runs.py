"""helpers.audiolm.runs at toy sizes: every run function trains, evaluates and samples with the shapes it promises."""

import math

import numpy as np
import pytest
import torch

from helpers.audiolm import runs
from helpers.audiolm.codec import Codec, CodecConfig
from helpers.audiolm.discriminator import Discriminators
from helpers.audiolm.hierarchy import Hierarchy, stage_model
from helpers.audiolm.losses import reconstruction_loss
from helpers.audiolm.mel import MultiScaleMel
from helpers.audiolm.semantic import MaskedPredictor, SemanticConfig, fit_tokenizer, frame_features
from helpers.audiolm.tokens import TokenLayout
from helpers.common.stats import paired_difference

SR = 16000


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def tiny_codec(levels=2):
    return Codec(CodecConfig(channels=2, strides=(2, 4, 5, 8), channel_mults=(1, 2, 2, 2), codebook_dim=8,
                             codebook_size=16, num_quantizers=levels, quantize_dropout_cutoff_index=0))


def chord(tonics, seconds):
    t = np.arange(int(SR * seconds)) / SR
    return sum(np.sin(2 * np.pi * 261.63 * 2 ** (n / 12) * t) for n in tonics).astype(np.float32) * 0.2


def fake_data(pieces):
    """A data dict like chorales.load's, from a list of (N,) float32 arrays."""
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
    frames = [len(p) * 25 // SR for p in pieces]
    return {"audio": np.concatenate(pieces), "offsets": offsets, "keys": np.zeros(len(pieces), dtype=int),
            "timbres": np.zeros(len(pieces), dtype=int), "rolls": np.zeros((sum(frames), 12), dtype=bool),
            "roll_offsets": np.concatenate([[0], np.cumsum(frames)]), "sample_rate": np.array(SR)}


def test_schedule_warms_up_and_decays():
    lr = runs.schedule(100, 1e-3)
    assert lr(0) == pytest.approx(2e-4) and lr(4) == pytest.approx(1e-3) and lr(99) < 1e-4


def test_train_codec_with_and_without_discriminators():
    torch.manual_seed(0)
    mels = MultiScaleMel(SR, powers=(6, 8))
    audio = torch.randn(SR) * 0.2

    def loss_fn(codec, clips):
        recon, _, commitment = codec(clips)
        parts = reconstruction_loss(mels, codec.whole_frames(clips), recon, commitment)
        return parts["total"], parts

    history = runs.train_codec(tiny_codec(), audio, loss_fn, 3, 2, 2400, 1e-3, torch.Generator().manual_seed(0),
                               progress=False)
    assert len(history) == 3 and set(history.metrics) == {"wave", "mel", "commitment", "total"}
    discriminators = Discriminators(scales=2, wave=dict(channels=4, layers=2), stft=dict(channels=2))
    history = runs.train_codec(tiny_codec(), audio, loss_fn, 3, 2, 2400, 1e-3, torch.Generator().manual_seed(0),
                               discriminators=discriminators, adversarial_from=2, progress=False)
    assert len(history.metrics["discriminator"]) == 1 and all(math.isfinite(v) for v in history.losses)


def test_evaluate_codec_reports_every_level_and_its_bitrate():
    torch.manual_seed(1)
    codec = tiny_codec(levels=3)
    codec.tokenize(torch.randn(2, 3200) * 0.2)  # k-means initialises the codebooks
    evaluation = runs.evaluate_codec(codec, torch.randn(3, 3200) * 0.2)
    assert evaluation.levels == [1, 2, 3]
    assert evaluation.bitrates == [50 * q * 4 for q in (1, 2, 3)]  # 50 frames/s × q × log2(16)
    assert all(1 <= b <= 8 for b in evaluation.pcm_bits)
    fake = runs.CodecEvaluation([1], [50.0], codec_si_sdr=[3.0], codec_mel=[1.0], pcm_si_sdr=[2.0], pcm_mel=[5.0],
                                pcm_bits=[1.0])
    assert fake.codec_wins()
    fake.codec_mel = [5.5]
    assert not fake.codec_wins()


def test_semantic_training_tokenizing_and_windows():
    torch.manual_seed(2)
    config = SemanticConfig(dim=16, layers=1, heads=2, targets=4)
    clips = torch.randn(6, 4 * 640) * 0.2
    features = frame_features(clips, config)
    targets, centroids = runs.frame_targets(features, 4, torch.Generator().manual_seed(0))
    assert targets.shape == (6, 4) and centroids.shape == (4, 12)
    model = MaskedPredictor(config)
    history = runs.train_masked_predictor(model, features, targets, 2, 3, 1e-3, torch.Generator().manual_seed(0),
                                          progress=False)
    assert len(history.metrics["accuracy"]) == 2
    tokenizer = fit_tokenizer(model, clips, 1, 5, generator=torch.Generator().manual_seed(0))
    codec = tiny_codec()
    codec.tokenize(torch.randn(2, 3200) * 0.2)
    data = fake_data([chord((0, 4, 7), 1.0), chord((2, 5, 9), 1.6)])
    tokens = runs.tokenize_chorales(data, codec, tokenizer, chunk_seconds=0.4)
    assert tokens.frames_per_semantic == 2
    assert [len(s) for s in tokens.semantic] == [20, 40] and [c.shape for c in tokens.codes] == [(40, 2), (80, 2)]

    layout = TokenLayout(semantic_size=5, codebook_size=16, num_quantizers=2, coarse_quantizers=1)
    windows = runs.window_sampler(tokens, 8, 3, torch.Generator().manual_seed(0))
    semantic, codes = windows()
    assert semantic.shape == (3, 8) and codes.shape == (3, 16, 2)
    coarse = lambda lay, s, c: lay.coarse_sequence(s, c)  # noqa: E731
    expected = {"semantic": ((3, 9), 1), "coarse": ((3, 26), 10), "acoustic only": ((3, 18), 2), "fine": ((3, 10), 6)}
    for stage, (shape, start) in expected.items():
        sequence, target_start = runs.stage_batches(stage, layout, windows, coarse, fine_frames=4)()
        assert (tuple(sequence.shape), target_start) == (shape, start), stage
        assert sequence.max() < layout.vocab_size
    acoustic_only, _ = runs.stage_batches("acoustic only", layout, windows, coarse)()
    assert (acoustic_only[:, 2:] >= layout.semantic_size).all()  # no semantic ids after BOS, SEP


def test_continuations_and_the_key_measure():
    torch.manual_seed(3)
    layout = TokenLayout(semantic_size=5, codebook_size=16, num_quantizers=2, coarse_quantizers=1)
    hierarchy = Hierarchy(*(stage_model(layout, 16, 1, 2, 64) for _ in range(3)), layout, frames_per_semantic=2,
                          fine_window=4)
    prompt = torch.randint(0, 16, (2, 6, 2))
    out = runs.continue_without_semantic(hierarchy, stage_model(layout, 16, 1, 2, 64), prompt, 14,
                                         temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 14, 2) and torch.equal(out[:, :6], prompt) and out.max() < 16

    c_major, f_sharp = chord((0, 4, 7), 4.0), chord((6, 10, 13), 4.0)
    windows = np.stack([c_major, c_major, f_sharp])
    prompts = runs.Prompts(torch.from_numpy(windows), torch.zeros(3, 100, dtype=torch.long),
                           torch.zeros(3, 200, 2, dtype=torch.long), np.array([0, 1, 2]), 50)
    second_half = torch.from_numpy(windows[:, 2 * SR:])
    results = runs.key_kept(prompts, {"same": second_half, "wrong": second_half.flip(0)}, SR)
    assert results.shares["real continuation (ceiling)"] == 1.0 and results.shares["same"] == 1.0
    assert results.verdicts["wrong"].tolist() == [False, True, False]
    difference, error = paired_difference(results.verdicts["same"], results.verdicts["wrong"])
    assert difference == pytest.approx(2 / 3) and error > 0
