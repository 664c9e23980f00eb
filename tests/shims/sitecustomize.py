"""Runs at the start of every Python whose PYTHONPATH holds tests/shims (the test commands set it, so that
notebook kernels started by nbval or nbgrader see it too): the torchvision and torchaudio stand-ins, where none is
installed."""

import _torchaudio
import _torchvision

_torchvision.install()
_torchaudio.install()
