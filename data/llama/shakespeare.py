"""Build the Shakespeare corpus into data/cache/shakespeare/ (the builder is helpers.llama.shakespeare).

    python data/llama/shakespeare.py
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run from a checkout where the course is not installed
    sys.path.insert(0, str(REPO_ROOT))

from helpers.llama.shakespeare import main  # noqa: E402

if __name__ == "__main__":
    main()
