"""Render the SAM scenes into data/cache/scenes/ (the generator is helpers.sam.scenes).

    python data/sam/scenes.py --profile cpu
    python data/sam/scenes.py --split val --count 16 --size 64
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run from a checkout where the course is not installed
    sys.path.insert(0, str(REPO_ROOT))

from helpers.sam.scenes import main  # noqa: E402

if __name__ == "__main__":
    main()
