"""``python -m helpers.audiolm install``: pip-install audiolm-pytorch and encodec with --no-deps (see compat.py)."""

import sys

from helpers.audiolm.compat import install_packages

if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m helpers.audiolm install")
    install_packages()
