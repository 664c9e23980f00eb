"""helpers.audiolm.rvq against vector_quantize_pytorch.ResidualVQ on random configurations."""

import random

import pytest
import torch
from sklearn.cluster import KMeans
from vector_quantize_pytorch import ResidualVQ as Reference

from helpers.audiolm import kmeans
from helpers.audiolm.rvq import ResidualVQ, bitrate, rvq_from_reference, rvq_to_reference

CONFIGS = [dict(dim=random.Random(s).choice([4, 8, 12]), codebook_size=random.Random(s + 1).choice([8, 16, 32]),
                num_quantizers=random.Random(s + 2).randint(1, 5), codebook_dim=random.Random(s + 3).choice([None, 6]),
                decay=random.Random(s + 4).choice([0.8, 0.95])) for s in range(0, 40, 10)]


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


@pytest.mark.parametrize("config", CONFIGS)
def test_eval_forward_equals_reference(config):
    torch.manual_seed(0)
    ref = Reference(**config, kmeans_init=False, threshold_ema_dead_code=0).eval()
    ours = rvq_from_reference(ref).eval()
    x = torch.randn(3, 40, config["dim"])
    q1, i1, _ = ref(x)
    q2, i2, losses = ours(x)
    assert torch.equal(i1, i2) and i2.shape == (3, 40, config["num_quantizers"])
    torch.testing.assert_close(q2, q1, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.decode(i2), q1, atol=1e-5, rtol=0)
    assert not losses.any()


@pytest.mark.parametrize("config", CONFIGS)
def test_train_commitment_losses_and_ema_update_equal_reference(config):
    torch.manual_seed(1)
    ref = Reference(**config, kmeans_init=False, threshold_ema_dead_code=0, quantize_dropout=False).train()
    ours = rvq_from_reference(ref)
    x = torch.randn(2, 30, config["dim"])
    _, i1, l1 = ref(x, freeze_codebook=True)
    _, i2, l2 = ours(x, freeze_codebook=True)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(l2, l1.detach(), atol=1e-6, rtol=1e-5)
    for _ in range(3):  # EMA steps
        x = torch.randn(2, 30, config["dim"])
        _, i1, _ = ref(x)
        _, i2, _ = ours(x)
        assert torch.equal(i1, i2)
    for theirs, mine in zip(ref.layers, ours.layers, strict=True):
        torch.testing.assert_close(mine.codebook, theirs._codebook.embed[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mine.cluster_size, theirs._codebook.cluster_size[0], atol=1e-5, rtol=1e-5)


def test_kmeans_init_and_dead_codes_equal_reference_with_the_same_seed():
    ref = Reference(dim=6, codebook_size=16, num_quantizers=3, kmeans_init=True, threshold_ema_dead_code=2)
    ours = rvq_from_reference(ref)
    assert not ours.layers[0].initted
    for seed, frames in [(1, 50), (2, 4)]:  # the second batch is small: codes die and are replaced
        x = torch.randn(2, frames, 6) * seed
        torch.manual_seed(seed)
        _, i1, _ = ref(x)
        torch.manual_seed(seed)
        _, i2, _ = ours(x)
        assert torch.equal(i1, i2)
        for theirs, mine in zip(ref.layers, ours.layers, strict=True):
            torch.testing.assert_close(mine.codebook, theirs._codebook.embed[0], atol=1e-6, rtol=1e-5)


def test_round_trip_to_reference():
    torch.manual_seed(3)
    ours = ResidualVQ(8, 16, 3, decay=0.9).eval()
    x = torch.randn(2, 20, 8)
    ref = rvq_to_reference(ours).eval()
    assert torch.equal(ref(x)[1], ours(x)[1])


def test_quantizer_dropout_uses_a_prefix_of_levels_and_decoding_fewer_levels_is_coarser():
    torch.manual_seed(4)
    rvq = ResidualVQ(8, 32, 4, quantize_dropout=True, kmeans_init=True).train()
    x = torch.randn(4, 64, 8)
    random.seed(0)
    used = set()
    for _ in range(12):
        _, idx, losses = rvq(x)
        n = int((idx[0, 0] >= 0).sum())
        assert (idx[..., :n] >= 0).all() and (idx[..., n:] == -1).all() and not losses[n:].any()
        used.add(n)
    assert used <= {1, 2, 3, 4} and len(used) > 1
    rvq.eval()
    codes = rvq(x)[1]
    errors = [(rvq.decode(codes[..., :n]) - x).pow(2).mean() for n in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))


def test_bitrate():
    assert bitrate(24000, 320, 8, 1024) == 6000
    assert bitrate(16000, 320, 12, 1024) == 6000


def test_bad_codes_get_one_sentence():
    rvq = ResidualVQ(4, 8, 2)
    with pytest.raises(ValueError, match=r"expected integer code ids in \[0, 8\).*got .* values in \[0, 9\]"):
        rvq.decode(torch.tensor([[[0, 9]]]))
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, frames, 4\), got \(3, 4\)"):
        rvq(torch.zeros(3, 4))


@pytest.mark.parametrize("seed", [0, 1])
def test_lloyd_equals_sklearn(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 5, generator=gen, dtype=torch.float64)
    init = x[torch.randperm(300, generator=gen)[:7]]
    ours, _ = kmeans.lloyd(x, init, 30)
    ref = KMeans(7, init=init.numpy(), n_init=1, tol=0, max_iter=30, algorithm="lloyd").fit(x.numpy())
    torch.testing.assert_close(ours, torch.tensor(ref.cluster_centers_), atol=1e-8, rtol=1e-8)
    assert torch.equal(kmeans.nearest(x, ours), torch.tensor(ref.labels_, dtype=torch.long))
