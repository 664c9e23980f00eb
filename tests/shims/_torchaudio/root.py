"""Stand-in for ``torchaudio`` (tests only; see ``__init__.py``)."""

import sys

REASON = ("torchaudio is not installed here; the test stand-in provides only transforms.MelSpectrogram "
          "(install the torchaudio that matches your torch for the rest)")

transforms = sys.modules["torchaudio.transforms"]
functional = sys.modules["torchaudio.functional"]


def load(*args, **kwargs):
    raise RuntimeError(f"torchaudio.load is not available: {REASON}")


def save(*args, **kwargs):
    raise RuntimeError(f"torchaudio.save is not available: {REASON}")
