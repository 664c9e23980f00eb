"""The course's machinery, not a model: what teachers and maintainers run.

- ``notebooks``: read, stamp (Colab cells), execute and measure the notebooks (``python -m helpers.course.notebooks``).
- ``labs``: generate the student labs from ``solutions/`` with nbgrader (``make labs``).
- ``grading``: grade a folder of submissions (``make grade``).
- ``book``: build and check the Jupyter Book (``make book``).
- ``deps``: one sentence, not a traceback, when a package is missing.
"""
