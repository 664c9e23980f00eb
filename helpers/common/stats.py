"""How far one method is ahead of another on the same test items, and how sure: the paired gap and its standard error.

Labs 3, 4 and 5 score two methods on the same items (objects, prompts, pairs of views) and report the mean of the
per-item differences ± its standard error. Items are often not independent: several objects of one scene, several
prompts of one chorale, several view pairs of one object share what makes them easy or hard. Pass ``groups`` (one
id per item) and the standard error counts each group once (the cluster-robust estimate), so that scoring more items
of the same groups does not pretend to more certainty than the groups give.
"""

from __future__ import annotations

import numpy as np


def paired_difference(a: np.ndarray, b: np.ndarray, groups: np.ndarray | None = None) -> tuple[float, float]:
    """Mean of a − b over the same items (N,) and its standard error.

    Without ``groups``: std(a − b) / √N, the items taken as independent. With ``groups`` (N,) (any ids, G ≥ 2 of
    them): the cluster-robust standard error √(G / (G − 1) · Σ_g (Σ_{i ∈ g} (d_i − d̄))²) / N, which is the first
    when every group holds one item, and the standard error of the groups' mean gaps when they hold equally many.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"expected two score vectors (N,) of one length N ≥ 2, got {a.shape} and {b.shape}")
    d = a - b
    if groups is None:
        return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    groups = np.asarray(groups)
    if groups.shape != d.shape:
        raise ValueError(f"expected one group id per item, shape {d.shape}, got {groups.shape}")
    _, index = np.unique(groups, return_inverse=True)
    count = index.max() + 1
    if count < 2:
        raise ValueError("expected items from at least 2 groups, got 1")
    sums = np.bincount(index, weights=d - d.mean(), minlength=count)  # Σ_{i ∈ g} (d_i − d̄), (G,)
    return float(d.mean()), float(np.sqrt(count / (count - 1) * (sums ** 2).sum()) / len(d))
