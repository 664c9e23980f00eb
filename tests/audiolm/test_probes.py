"""helpers.audiolm.probes on hand-made token streams whose answers are known; the chroma front end on pure tones."""

import math

import pytest
import torch

from helpers.audiolm.probes import content_f1, label_accuracy, sound_error, token_means
from helpers.audiolm.semantic import SemanticConfig, frame_features, log_chroma


def test_token_means_and_an_unseen_id():
    tokens = torch.tensor([0, 0, 2])
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    torch.testing.assert_close(token_means(tokens, values, 3), torch.tensor([[2.0, 3.0], [3.0, 4.0], [5.0, 6.0]]))


def test_ids_that_are_the_labels_score_perfectly_and_constant_ids_do_not():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=g)
    rolls = torch.nn.functional.one_hot(labels, 12).bool()  # one pitch class per frame
    spectra = torch.randn(4, 8, generator=g)[labels]
    train, held = slice(0, 300), slice(300, 400)
    assert content_f1(labels[train], rolls[train], labels[held], rolls[held], 4) == 1.0
    assert sound_error(labels[train], spectra[train], labels[held], spectra[held], 4) < 1e-6
    assert label_accuracy(labels[train], labels[train], labels[held], labels[held], 4, 4) == 1.0
    constant = torch.zeros(400, dtype=torch.long)
    assert content_f1(constant[train], rolls[train], constant[held], rolls[held], 1) == 0.0  # no class > half
    assert sound_error(constant[train], spectra[train], constant[held], spectra[held], 1) > 0.1
    with pytest.raises(ValueError, match=r"expected token ids in \[0, 3\), got values in \[0, 3\]"):
        token_means(labels, spectra, 3)


def test_log_chroma_finds_the_pitch_class_of_a_tone():
    config = SemanticConfig()
    t = torch.arange(32000) / 16000
    for midi in (45, 57, 64, 71):  # A2, A3, E4, B4
        tone = torch.sin(2 * math.pi * 440 * 2 ** ((midi - 69) / 12) * t)[None]
        features = log_chroma(tone, config)
        assert features.shape == (1, 32000 // config.hop, 12)
        assert (features[0, 5:-5].argmax(-1) == midi % 12).all()
    assert frame_features(tone, config).shape[-1] == 12
    assert frame_features(tone, SemanticConfig(features="log_mel")).shape[-1] == 64
    with pytest.raises(ValueError, match="expected features 'chroma' or 'log_mel', got 'mfcc'"):
        SemanticConfig(features="mfcc")
