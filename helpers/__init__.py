"""The course's shared package: run profiles, seeding, checks, and one canonical copy of each component."""

from helpers.deps import check_installed

__version__ = "0.1.0"

check_installed("torch", "numpy", "matplotlib", purpose="The course's helpers")
