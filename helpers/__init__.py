"""The course's shared package: run profiles, seeding, checks, and one canonical copy of each component."""

__version__ = "0.1.0"
