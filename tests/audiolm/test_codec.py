"""helpers.audiolm.codec, discriminators and losses against audiolm_pytorch.SoundStream on random configurations."""

import random

import pytest
import torch
from audiolm_pytorch import SoundStream

from helpers.audiolm.codec import Codec, CodecConfig, codec_from_reference, codec_to_reference
from helpers.audiolm.discriminator import discriminators_from_reference
from helpers.audiolm.losses import discriminator_loss, generator_losses
from helpers.audiolm.mel import MultiScaleMel


def _config(seed):
    r = random.Random(seed)
    layers = r.randint(1, 3)
    return dict(channels=r.choice([2, 4]), strides=tuple(r.choice([2, 3, 4]) for _ in range(layers)),
                channel_mults=tuple(r.choice([1, 2]) * 2 ** i for i in range(layers)),
                codebook_dim=r.choice([4, 8]), codebook_size=r.choice([8, 16]), rq_num_quantizers=r.randint(1, 4))


CONFIGS = [_config(s) for s in range(3)]


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def _soundstream(config, seed=0):
    torch.manual_seed(seed)
    ss = SoundStream(**config, use_local_attn=False, complex_stft_discr_kwargs=dict(channels=2)).eval()
    ss.tokenize(torch.randn(2, 4000) * 0.3)  # k-means initialises every level's codebook on this first batch
    return ss


@pytest.mark.parametrize("config", CONFIGS)
def test_tokenize_and_decode_equal_reference(config):
    ss = _soundstream(config)
    codec = codec_from_reference(ss)
    audio = torch.randn(3, 2500) * 0.3
    codes = codec.tokenize(audio)
    assert torch.equal(codes, ss.tokenize(audio)[0])
    hop = codec.config.hop
    assert codes.shape == (3, 2500 // hop, config["rq_num_quantizers"])
    torch.testing.assert_close(codec.decode(codes), ss.decode_from_codebook_indices(codes)[:, 0], atol=1e-4, rtol=0)
    back = codec_to_reference(codec).eval()
    assert torch.equal(back.tokenize(audio)[0], codes)


def test_losses_equal_soundstreams():
    config = CONFIGS[1]
    ss = _soundstream(config, seed=1)
    codec, discriminators = codec_from_reference(ss).eval(), discriminators_from_reference(ss)
    audio = torch.randn(2, 4800) * 0.3
    total, parts = ss(audio, return_loss_breakdown=True)
    recon, _, commit = codec(audio)
    ours = generator_losses(discriminators, MultiScaleMel(16000), codec.whole_frames(audio), recon, commit)
    for name, theirs in zip(["recon", "multi_spectral", "adversarial", "feature", "commitment"], parts, strict=True):
        torch.testing.assert_close(ours[name], theirs.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["total"], total.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(discriminator_loss(discriminators, codec.whole_frames(audio), recon),
                               ss(audio, return_discr_loss=True).detach(), rtol=1e-5, atol=1e-6)


def test_causal_encoder_frames_do_not_see_the_future():
    codec = Codec(CodecConfig(channels=2, strides=(2, 2), channel_mults=(1, 2), codebook_dim=4, codebook_size=8,
                              num_quantizers=2, kmeans_init=False)).eval()
    audio = torch.randn(1, 400)
    changed = audio.clone()
    changed[:, 200:] = torch.randn(1, 200)
    a, b = codec.encode(audio), codec.encode(changed)
    torch.testing.assert_close(a[:, : 200 // 4 - 1], b[:, : 200 // 4 - 1])
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_bad_input_gets_one_sentence():
    codec = Codec(CodecConfig(channels=2, strides=(2,), channel_mults=(1,), codebook_dim=4, codebook_size=8,
                              num_quantizers=2, kmeans_init=False))
    with pytest.raises(ValueError, match=r"expected audio of shape \(batch, samples\), got \(1, 1, 40\)"):
        codec.tokenize(torch.zeros(1, 1, 40))
    with pytest.raises(ValueError, match="built for 16000 Hz audio, got 24000 Hz"):
        codec.tokenize(torch.zeros(1, 40), sample_rate=24000)
    with pytest.raises(ValueError, match=r"code ids in \[0, 8\)"):
        codec.decode(torch.full((1, 3, 2), 8))
    default = Codec(CodecConfig())
    with pytest.raises(ValueError, match=r"expected at least 2240 samples \(7 frames: the causal convolutions' "
                                         r"reflected padding needs them\), got 1000 samples"):
        default.tokenize(torch.zeros(1, 1000))


def test_min_samples_is_enough_for_every_layer():
    for strides in [(2, 4, 5, 8), (3, 3), (4,)]:
        config = CodecConfig(channels=2, strides=strides, channel_mults=tuple(2 ** i for i in range(len(strides))),
                             codebook_dim=4, codebook_size=8, num_quantizers=2, kmeans_init=False)
        codec = Codec(config).eval()
        codes = codec.tokenize(torch.randn(1, codec.min_samples))
        assert codec.decode(codes).shape == (1, codec.min_samples)
