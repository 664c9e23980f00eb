"""Stop `make` early, with one clear sentence, when the Python that creates .venv cannot run the course."""

import sys

MINIMUM = (3, 10)

if sys.version_info < MINIMUM:
    found = ".".join(map(str, sys.version_info[:3]))
    sys.exit(
        f"The course needs Python {MINIMUM[0]}.{MINIMUM[1]} or newer, but `python3` is {found}. "
        "Install a newer Python, or run `make PYTHON=/path/to/python3.11 test`."
    )
try:
    import venv  # noqa: F401
except ImportError:
    sys.exit("This Python has no `venv` module: install it (Debian: python3-venv) and run make again.")
