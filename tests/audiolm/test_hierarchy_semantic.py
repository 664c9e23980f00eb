"""The three stages sample in their levels' ranges and keep prompts; the semantic tokenizer's pieces equal sklearn."""

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from helpers.audiolm import chorales
from helpers.audiolm.hierarchy import Hierarchy, next_token_loss, stage_model
from helpers.audiolm.semantic import (
    MaskedPredictor,
    SemanticConfig,
    Standardizer,
    fit_tokenizer,
    log_mel,
    masked_prediction_loss,
    span_mask,
)
from helpers.audiolm.tokens import TokenLayout

LAYOUT = TokenLayout(semantic_size=6, codebook_size=8, num_quantizers=3, coarse_quantizers=1)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(scope="module")
def hierarchy():
    torch.manual_seed(0)
    return Hierarchy(*(stage_model(LAYOUT, 16, 1, 2, 48) for _ in range(3)), LAYOUT, frames_per_semantic=2)


def test_three_inference_modes(hierarchy):
    g = torch.Generator().manual_seed(0)
    codes = hierarchy.unconditional(4, batch=2, generator=g)
    assert codes.shape == (2, 8, 3) and codes.min() >= 0 and codes.max() < 8
    semantic = torch.randint(0, 6, (2, 4))
    assert hierarchy.acoustic(semantic, generator=g).shape == (2, 8, 3)
    prompt_semantic, prompt_codes = torch.randint(0, 6, (2, 2)), torch.randint(0, 8, (2, 4, 3))
    out = hierarchy.continuation(prompt_semantic, prompt_codes, 5, generator=g)
    assert out.shape == (2, 10, 3) and torch.equal(out[:, :4], prompt_codes)


def test_greedy_generation_follows_the_models_argmax(hierarchy):
    semantic = torch.randint(0, 6, (1, 3))
    coarse = hierarchy.sample_coarse(semantic, temperature=0.0)
    seq = LAYOUT.coarse_sequence(semantic, coarse)
    logits = hierarchy.coarse(seq[:, :-1])[:, 4:]  # predictions of the coarse ids
    lo = LAYOUT.semantic_size
    assert torch.equal(logits[..., lo:lo + 8].argmax(-1) + lo, seq[:, 5:])
    assert next_token_loss(hierarchy.coarse, seq, 5).ndim == 0


def test_a_prompt_longer_than_the_context_gets_one_sentence(hierarchy):
    with pytest.raises(ValueError, match="context holds 48 tokens, got a prompt of 41 tokens plus 8 to generate"):
        hierarchy.sample_semantic(48, torch.randint(0, 6, (1, 40)))


def test_standardizer_equals_sklearn():
    x = torch.randn(200, 5, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 4, 0], dtype=torch.float64) + 3
    ref = StandardScaler().fit(x.numpy())
    ours = Standardizer(5).fit(x)
    np.testing.assert_allclose(ours(x).numpy(), ref.transform(x.numpy()), atol=1e-12)


def test_masked_prediction_learns_and_tokenizes():
    torch.manual_seed(0)
    config = SemanticConfig(features="log_mel", n_mels=16, dim=32, layers=2, heads=2, targets=8, n_fft=256, hop=128)
    model = MaskedPredictor(config)
    audio = torch.randn(4, 128 * 40) * 0.1
    features = log_mel(audio, config)
    assert features.shape == (4, 40, 16)
    mask = span_mask(4, 40, 0.2, 3, torch.Generator().manual_seed(0))
    targets = torch.randint(0, 8, (4, 40))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(30):
        loss = masked_prediction_loss(model, features, targets, mask)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    tokenizer = fit_tokenizer(model, audio, layer=1, clusters=5, iters=10, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer(audio)
    assert tokens.shape == (4, 40) and tokens.max() < 5


def test_key_finder_on_synthetic_triads():
    sr, t = 16000, np.arange(16000 * 2) / 16000
    for tonic, minor in [(0, False), (9, True), (7, False)]:
        notes = [tonic, tonic + (3 if minor else 4), tonic + 7]
        audio = sum(np.sin(2 * np.pi * 440 * 2 ** ((60 + n - 69) / 12) * t) for n in notes)
        assert chorales.find_key(audio, sr) == tonic + 12 * minor
    assert chorales.key_name(21) == "A minor"


def test_fine_windows_sample_each_chunk_from_its_own_coarse_codes(hierarchy):
    windowed = Hierarchy(hierarchy.semantic, hierarchy.coarse, hierarchy.fine, LAYOUT, 2, fine_window=3)
    coarse, prompt = torch.randint(0, 8, (2, 7, 1)), torch.randint(0, 8, (2, 4, 2))
    fine = windowed.sample_fine(coarse, prompt, temperature=0.0)
    assert fine.shape == (2, 7, 2) and torch.equal(fine[:, :4], prompt)
    # the last chunk (frames 6…) depends on its own coarse codes only
    alone = windowed.sample_fine(coarse[:, 6:], temperature=0.0)
    assert torch.equal(fine[:, 6:], alone)
