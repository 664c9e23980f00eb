"""nbgrader's configuration: the course root is this folder; solutions/ is the source, labs/ the release.

Teachers grade with `make grade LAB=... SUBMISSIONS=...` (see helpers/course/grading.py), which does not use
nbgrader: it reads the same nbgrader metadata and runs each lab's tests itself, in a sandbox per submission.
nbgrader's own commands (generate_assignment, the formgrader's autograde) use this file.
"""

import os

c = get_config()  # noqa: F821 (nbgrader provides get_config)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "fm-from-scratch"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")

# What a student sees in place of each solution: a NotImplementedError that says what to do.
c.ClearSolutions.code_stub = {
    "python": '# YOUR CODE HERE\nraise NotImplementedError("Write this part (see the instructions above), '
    'then run the tests below.")'
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Autograding: each cell may run this long before it is interrupted (an endless loop costs its part only).
c.Execute.timeout = int(os.environ.get("COURSE_GRADING_CELL_TIMEOUT", "120"))
c.Execute.interrupt_on_timeout = True
# The release keeps no outputs; generated files are identical from run to run.
c.ClearOutput.enabled = True
