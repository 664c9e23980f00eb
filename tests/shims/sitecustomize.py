"""Runs at the start of every Python whose PYTHONPATH holds tests/shims (the test commands set it, so that
notebook kernels started by nbval or nbgrader see it too): the torchvision stand-in, where none is installed."""

import _torchvision

_torchvision.install()
