"""Stand-in for ``torchaudio.functional`` (tests only; see ``__init__.py``)."""


def resample(*args, **kwargs):
    raise RuntimeError("torchaudio.functional.resample is not available: torchaudio is not installed here, and "
                       "the test stand-in does not resample (pass audio at the model's sample rate)")
