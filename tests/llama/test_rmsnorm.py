import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from helpers.checks import assert_close, check_module
from helpers.llama.model import RMSNorm


@pytest.mark.parametrize(("shape", "eps"), [((2, 3, 8), 1e-6), ((5, 16), 1e-5), ((1, 1, 4), 0.5)])
def test_rmsnorm_equals_transformers(shape, eps):
    generator = torch.Generator().manual_seed(0)
    ours, theirs = RMSNorm(shape[-1], eps=eps), LlamaRMSNorm(shape[-1], eps=eps)
    with torch.no_grad():
        theirs.weight.copy_(torch.randn(shape[-1], generator=generator))
    check_module(ours, theirs, [torch.randn(shape, generator=generator)], atol=1e-6, rtol=1e-6)


def test_rmsnorm_bfloat16_matches_transformers_and_keeps_dtype():
    x = (8 * torch.randn(4, 32)).to(torch.bfloat16)
    ours, theirs = RMSNorm(32), LlamaRMSNorm(32)
    out = ours(x)
    assert out.dtype == torch.float32  # float32 gain times bf16 activations, as in transformers
    assert_close(out, theirs(x), atol=0, rtol=0)


def test_rmsnorm_state_dict_is_transformers():
    assert list(RMSNorm(8).state_dict()) == list(LlamaRMSNorm(8).state_dict()) == ["weight"]
