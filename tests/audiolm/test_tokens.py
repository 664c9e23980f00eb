"""Token layouts equal audiolm_pytorch's (its own code paths, read through forward hooks) and round-trip."""

import pytest
import torch
from audiolm_pytorch import (
    CoarseTransformer,
    CoarseTransformerWrapper,
    FineTransformer,
    FineTransformerWrapper,
    SemanticTransformer,
    SemanticTransformerWrapper,
    SoundStream,
)

from helpers.audiolm.tokens import TokenLayout, append_eos, audiolm_acoustic_ids, flatten_frames, unflatten_frames

SMALL = dict(dim=16, depth=1, heads=2, dim_head=8)


def _capture(embedding):
    seen = []
    embedding.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    return seen


@pytest.mark.parametrize("k,qc,qf", [(8, 2, 1), (16, 3, 2)])
def test_coarse_and_fine_ids_equal_audiolm_pytorch(k, qc, qf):
    torch.manual_seed(0)
    semantic, codes = torch.randint(0, 10, (2, 6)), torch.randint(0, k, (2, 5, qc + qf))
    codec = SoundStream(codebook_size=k, rq_num_quantizers=qc + qf, channels=2, strides=(2,), channel_mults=(1,),
                        codebook_dim=4, use_local_attn=False)
    coarse = CoarseTransformer(num_semantic_tokens=10, codebook_size=k, num_coarse_quantizers=qc, **SMALL)
    wrapper = CoarseTransformerWrapper(transformer=coarse, codec=codec, unique_consecutive=False).train()
    seen = _capture(coarse.coarse_embedding)
    wrapper(semantic_token_ids=semantic, coarse_token_ids=codes[..., :qc])
    assert torch.equal(seen[0], audiolm_acoustic_ids(codes[..., :qc], k))
    fine = FineTransformer(num_coarse_quantizers=qc, num_fine_quantizers=qf, codebook_size=k, **SMALL)
    wrapper = FineTransformerWrapper(transformer=fine, codec=codec).train()
    seen_c, seen_f = _capture(fine.coarse_embedding), _capture(fine.fine_embedding)
    wrapper(coarse_token_ids=codes[..., :qc], fine_token_ids=codes[..., qc:])
    assert torch.equal(seen_f[0], audiolm_acoustic_ids(codes[..., qc:], k, eos=False))
    assert torch.equal(seen_c[0], audiolm_acoustic_ids(codes[..., :qc], k, eos=False))


def test_semantic_eos_equals_audiolm_pytorch():
    semantic = torch.randint(0, 10, (2, 6))
    model = SemanticTransformer(num_semantic_tokens=10, **SMALL)
    wrapper = SemanticTransformerWrapper(transformer=model, unique_consecutive=False).train()
    seen = _capture(model.semantic_embedding)
    wrapper(semantic_token_ids=semantic)
    assert model.eos_id == 10 and torch.equal(seen[0], append_eos(semantic, 10))


def test_layout_round_trips_and_keeps_levels_apart():
    lay = TokenLayout(semantic_size=10, codebook_size=8, num_quantizers=4, coarse_quantizers=2)
    codes = torch.randint(0, 8, (2, 5, 4))
    assert torch.equal(unflatten_frames(flatten_frames(codes), 4), codes)
    fine_ids = lay.acoustic_ids(codes[..., 2:], 2)
    assert torch.equal(lay.codes_from_ids(fine_ids, 2, 2), codes[..., 2:])
    for pos in range(6):
        lo, hi = lay.allowed(pos, 2, 2)
        assert lo <= int(fine_ids[0, pos]) < hi
    seq = lay.coarse_sequence(torch.randint(0, 10, (2, 3)), codes[..., :2])
    assert seq.shape == (2, 1 + 3 + 1 + 10) and seq[0, 0] == lay.bos_id and seq[0, 4] == lay.sep_id
    assert int(seq.max()) < lay.vocab_size


def test_out_of_range_ids_get_one_sentence():
    lay = TokenLayout(semantic_size=10, codebook_size=8, num_quantizers=2, coarse_quantizers=1)
    with pytest.raises(ValueError, match=r"semantic ids in \[0, 10\), got values in \[0, 12\]"):
        lay.semantic_sequence(torch.tensor([[0, 12]]))
    with pytest.raises(ValueError, match=r"acoustic codes in \[0, 8\), got values in \[-1, 3\]"):
        lay.acoustic_ids(torch.tensor([[[3], [-1]]]), 0)
