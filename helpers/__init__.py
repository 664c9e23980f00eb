"""The course's shared package: one canonical copy of each component, the checks the notebooks run, and the
course's machinery. Where to start reading:

- ``helpers.profile``, ``helpers.checks``, ``helpers.paths``: what every notebook imports first (run profiles and
  seeding, checks against a reference, the course's folders).
- ``helpers.llama``: LLaMA (``model.py`` is the whole model; pretraining, training runs, Llama 2-Chat, SmolLM2).
- ``helpers.sam``: Segment Anything (``model.py`` and one module per box of the paper; MAE, training, runs, the
  data engine, baselines, the click widget, the rendered scenes).
- ``helpers.common``: what several systems share (optimiser and schedule, the training loop, the renderer).
- ``helpers.course``: the course's machinery (notebooks, labs, grading, the book, dependency messages).
"""

from helpers import _moved
from helpers.course.deps import check_installed

__version__ = "0.2.0"

_moved.install()
check_installed("torch", "numpy", "matplotlib", purpose="The course's helpers")
