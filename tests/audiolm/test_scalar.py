"""helpers.audiolm.scalar: lookup-free and finite scalar quantisation against vector_quantize_pytorch's LFQ and FSQ."""

import pytest
import torch
from vector_quantize_pytorch import FSQ, LFQ

from helpers.audiolm.scalar import fsq, lfq


@pytest.mark.parametrize("d", [1, 4, 10])
def test_lfq_equals_the_reference(d):
    torch.manual_seed(d)
    z = torch.randn(3, 17, d)
    ref = LFQ(dim=d, codebook_size=2**d, entropy_loss_weight=0.0).eval()
    quantized, indices, _ = ref(z)
    codes, ids = lfq(z)
    assert torch.equal(ids, indices)
    torch.testing.assert_close(codes, quantized)


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (3, 4), (7, 6, 5)])
def test_fsq_equals_the_reference_and_passes_gradients(levels):
    torch.manual_seed(len(levels))
    z = (torch.randn(2, 23, len(levels)) * 2).requires_grad_()
    ref = FSQ(levels=list(levels))
    quantized, indices = ref(z)
    codes, ids = fsq(z, levels)
    assert torch.equal(ids, indices.long())
    torch.testing.assert_close(codes, quantized)
    assert ids.min() >= 0 and ids.max() < torch.tensor(levels).prod()
    spread = torch.atanh(torch.rand(1, 5000, len(levels)) * 1.98 - 0.99)  # tanh(spread) uniform in (−0.99, 0.99)
    assert torch.equal(fsq(spread, levels)[1], ref(spread)[1].long())
    codes.sum().backward()
    assert z.grad.abs().sum() > 0


def test_bad_levels_get_one_sentence():
    with pytest.raises(ValueError, match=r"expected 2 dimensions \(one per level\) and levels ≥ 3, got z of shape "
                                         r"\(4, 3\) and levels \(5, 5\)"):
        fsq(torch.zeros(4, 3), (5, 5))
