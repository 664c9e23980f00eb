"""Render Zero-1-to-3's views into data/cache/views/ (the generator is helpers.zero123.views).

    python data/zero123/views.py --profile cpu
    python data/zero123/views.py --split test --count 8 --size 64
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run from a checkout where the course is not installed
    sys.path.insert(0, str(REPO_ROOT))

from helpers.zero123.views import main  # noqa: E402

if __name__ == "__main__":
    main()
