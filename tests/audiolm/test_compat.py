"""helpers.audiolm makes audiolm_pytorch importable offline: a fresh interpreter builds its four models; without
torchaudio the course's own code works, and asking for audiolm_pytorch says what to install."""

import os
import subprocess
import sys

import pytest
import torch

from helpers.audiolm import compat
from helpers.audiolm.mel import mel_filterbank, mel_spectrogram
from helpers.paths import REPO_ROOT

FRESH = """
import os, sys
assert os.environ["HF_HUB_OFFLINE"] == "1"
import helpers.audiolm
import audiolm_pytorch, vector_quantize_pytorch
from audiolm_pytorch import SoundStream, SemanticTransformer, CoarseTransformer, FineTransformer
SemanticTransformer(num_semantic_tokens=16, dim=32, depth=1, heads=2, dim_head=16)
CoarseTransformer(num_semantic_tokens=16, codebook_size=8, num_coarse_quantizers=2, dim=32, depth=1, heads=2,
                  dim_head=16)
FineTransformer(num_coarse_quantizers=2, num_fine_quantizers=2, codebook_size=8, dim=32, depth=1, heads=2,
                dim_head=16)
SoundStream(codebook_size=8, rq_num_quantizers=2, channels=4, strides=(2, 2), channel_mults=(2, 2), codebook_dim=8,
            use_local_attn=False)
print("built", sorted(n for n in ("fairseq", "wandb", "torchaudio") if n in sys.modules))
assert type(sys.modules["fairseq"]).__name__ == "Unavailable"  # the stand-in; wandb is the real package
"""


def test_a_fresh_interpreter_imports_and_builds_every_model_offline():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "built" in result.stdout


def test_the_fairseq_stand_in_raises_one_sentence():
    fairseq = compat.Unavailable("fairseq", "it is not installed")
    with pytest.raises(AttributeError, match=r"`fairseq.checkpoint_utils` is not available: it is not installed"):
        fairseq.checkpoint_utils  # noqa: B018


WITHOUT_TORCHAUDIO = """
import importlib.util, sys
assert importlib.util.find_spec("torchaudio") is None and "torchaudio" not in sys.modules
import torch
import helpers.audiolm
from helpers.audiolm import chorales, compat, hierarchy, semantic, tokens
from helpers.audiolm.codec import Codec, CodecConfig
from helpers.audiolm.rvq import rvq_to_reference
codec = Codec(CodecConfig(channels=4, strides=(2, 2), channel_mults=(2, 2), codebook_dim=8, codebook_size=8,
                          num_quantizers=2))
codes = codec.tokenize(torch.randn(1, 1024))
assert codes.shape == (1, 256, 2) and codec.decode(codes).shape == (1, 1024)
rvq_to_reference(codec.rvq)  # vector_quantize_pytorch needs no torchaudio
try:
    compat.require_audiolm_pytorch()
except compat.MissingDependency as error:
    print(error)
assert "torchaudio" not in sys.modules
"""


def test_the_course_works_without_torchaudio_and_says_what_audiolm_pytorch_needs():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}  # no tests/shims: no stand-in
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCHAUDIO], capture_output=True, text=True, env=env,
                            timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    message = result.stdout.strip()
    assert message == ("audiolm_pytorch imports torchaudio, which is not installed: `pip install torchaudio` (the "
                       "build that matches your torch; Colab has it).")


def test_install_is_idempotent_and_registers_the_t5_config():
    compat.install()
    compat.install()
    import audiolm_pytorch.t5 as t5

    assert t5.get_encoded_dim(compat.T5_NAME) == 768


def test_mel_filterbank_equals_transformers_torchaudio_compatible_one():
    from transformers.audio_utils import mel_filter_bank

    for sr, n_fft, n_mels in [(16000, 512, 64), (16000, 2048, 64), (24000, 1024, 80)]:
        ours = mel_filterbank(sr, n_fft, n_mels)
        ref = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                              max_frequency=sr / 2, sampling_rate=sr, norm=None, mel_scale="htk")
        torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float32), atol=1e-5, rtol=1e-4)


def test_mel_spectrogram_is_the_filterbank_applied_to_the_stft_power():
    torch.manual_seed(0)
    audio, n_fft, hop = torch.randn(2, 3000), 256, 64
    fb, window = mel_filterbank(16000, n_fft, 20), torch.hann_window(n_fft)
    mel = mel_spectrogram(audio, fb, window, n_fft, hop)
    assert mel.shape == (2, 20, 3000 // hop + 1)
    padded = torch.nn.functional.pad(audio[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    frame = padded[:, 5 * hop: 5 * hop + n_fft] * window
    power = torch.fft.rfft(frame).abs().pow(2)
    torch.testing.assert_close(mel[:, :, 5], power @ fb, rtol=1e-4, atol=1e-4)


def test_the_test_stand_in_for_torchaudio_computes_the_same_mel_spectrogram():
    """The SoundStream loss checks compare the course's mel with the stand-in's (an independent computation)."""
    MelSpectrogram = pytest.importorskip("torchaudio.transforms").MelSpectrogram
    torch.manual_seed(0)
    audio = torch.randn(2, 3000)
    for n_fft, win, n_mels, normalized in [(256, 256, 20, False), (512, 128, 64, True), (2048, 2048, 64, False)]:
        fb, window = mel_filterbank(16000, n_fft, n_mels), torch.hann_window(win)
        ours = mel_spectrogram(audio, fb, window, n_fft, win // 4, normalized)
        ref = MelSpectrogram(sample_rate=16000, n_fft=n_fft, win_length=win, hop_length=win // 4, n_mels=n_mels,
                             normalized=normalized)(audio)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
