"""Shared set-up: no test reaches a model hub, plots render off-screen, segment_anything finds a torchvision and
audiolm_pytorch a torchaudio."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# No CPU torchvision installs here, and segment_anything imports four of its functions. Where none is installed,
# a test-only stand-in answers those imports (tests/shims/_torchvision), in this process and, through PYTHONPATH
# and tests/shims/sitecustomize.py, in every Python the tests start (notebook kernels included).
# The same holds for torchaudio, which audiolm_pytorch imports (tests/shims/_torchaudio).
SHIMS = Path(__file__).resolve().parent / "shims"
if importlib.util.find_spec("torchvision") is None or importlib.util.find_spec("torchaudio") is None:
    sys.path.append(str(SHIMS))
    import _torchaudio
    import _torchvision

    _torchvision.install()
    _torchaudio.install()
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SHIMS), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors run much faster on one thread than on two on a shared two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs nbgrader, a notebook kernel or the book build (minutes)")
