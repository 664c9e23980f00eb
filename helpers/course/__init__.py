"""The course's machinery, not a model: what teachers and maintainers run.

- ``notebooks``: read, stamp (Colab cells), execute and measure the notebooks (``python -m helpers.course.notebooks``).
- ``exercises``: pair each chapter exercise's stub with its folded solution and run the solutions against their checks
  (``python -m helpers.course.exercises check``; ``tests/course/test_exercises.py``).
- ``figures``: a lab's measured figures, saved by its measuring run and rendered into its text.
- ``labs``: generate the student labs from ``solutions/`` with nbgrader (``make labs``).
- ``grading``: grade a folder of submissions, several at once (``make grade``); per submission, ``sandbox`` runs
  ``testrun`` (the trusted test runner) in bubblewrap, ``submission`` says which of the student's cells are graded
  and ``restricted`` loads them so that they cannot reach the tests.
- ``book``: build and check the Jupyter Book (``make book``).
- ``deps``: one sentence, not a traceback, when a package is missing.
"""
