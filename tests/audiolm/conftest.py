"""The AudioLM tests import audiolm_pytorch, which needs helpers.audiolm's compatibility layer first."""

import helpers.audiolm  # noqa: F401  (the fairseq stand-in and the T5 config, before any test module loads)
