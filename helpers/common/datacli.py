"""One command line for the course's rendered data sets (SAM's scenes, Zero-1-to-3's views): build every split of a
run profile, or one split at a given count and size, into the cache."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from helpers.profile import get_profile

Builder = Callable[..., Path]  # build(split, count, size, seed, *, workers, cache_dir, force) → the file written


def build_splits(argv: Sequence[str] | None, *, description: str, splits: Sequence[str],
                 profile_sizes: dict[str, dict[str, tuple[int, int]]], build: Builder, cache_dir: Path,
                 describe: Callable[[int, int], str], default_workers: int | None = 1) -> None:
    """Parse ``argv`` and build what it asks for; ``describe(count, size)`` words one built split for the log line
    (e.g. "8 scenes at 64×64 px"). Without --split, every split of --profile (default: by hardware) is built."""
    workers_help = "processes (default: the CPU cores, at most 8)" if default_workers is None else \
        f"processes (default {default_workers})"
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", choices=sorted(profile_sizes), help="build every split at this profile's sizes")
    parser.add_argument("--split", choices=splits, help="build one split (with --count and --size)")
    parser.add_argument("--count", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=default_workers, help=workers_help)
    parser.add_argument("--force", action="store_true", help="render again even if the file exists")
    parser.add_argument("--cache-dir", type=Path, default=cache_dir, help=f"where to write (default {cache_dir})")
    args = parser.parse_args(argv)
    if args.split:
        if args.count is None or args.size is None:
            parser.error("--split needs --count and --size")
        jobs = {args.split: (args.count, args.size)}
    else:
        jobs = profile_sizes[get_profile(args.profile)]
    for split, (count, size) in jobs.items():
        start = time.perf_counter()
        path = build(split, count, size, args.seed, workers=args.workers, cache_dir=args.cache_dir, force=args.force)
        print(f"{split}: {describe(count, size)} → {path} ({time.perf_counter() - start:.1f} s)")
