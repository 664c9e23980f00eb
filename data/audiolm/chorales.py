"""Render the Bach chorales for the AudioLM part (thin CLI; the logic is helpers.audiolm.chorales).

    python data/audiolm/chorales.py --profile cpu
"""

import sys
from pathlib import Path

if __package__ in (None, "") and str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers.audiolm.chorales import main  # noqa: E402

if __name__ == "__main__":
    main()
