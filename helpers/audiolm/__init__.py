"""AudioLM from scratch: a SoundStream-like codec with residual vector quantisation, semantic tokens from a small
masked-prediction model, and three token transformers (semantic → coarse → fine) built from the course's LLaMA blocks.

Importing this package makes ``audiolm_pytorch`` and ``vector_quantize_pytorch`` importable offline (see
:mod:`helpers.audiolm.compat`).
"""

from helpers.audiolm import compat

compat.install()
