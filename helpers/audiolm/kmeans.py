"""Lloyd's k-means, shared by the RVQ codebooks' initialisation and the semantic tokenizer.

Squared distances are expanded as ‖x‖² − 2 x·c + ‖c‖², the form ``vector_quantize_pytorch`` uses, so that the same
inputs give the same nearest centroid. Shapes: N points, K centroids, D features.
"""

from __future__ import annotations

import torch


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """‖x_n − c_k‖² for x: (N, D), centroids: (K, D) → (N, K)."""
    return (x.pow(2).sum(-1)[:, None] + centroids.pow(2).sum(-1)[None, :]) + (x @ centroids.T) * -2


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The index of each point's nearest centroid: (N, D), (K, D) → (N,) long."""
    return squared_distances(x, centroids).argmin(dim=-1)


def lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``iters`` rounds of Lloyd's algorithm from the given centroids: assign each point to its nearest centroid,
    move each centroid to the mean of its points (a centroid with no point stays where it is).

    x: (N, D), centroids: (K, D) → (centroids (K, D), counts (K,) of the last assignment)."""
    k = centroids.shape[0]
    counts = torch.zeros(k, dtype=torch.long)
    for _ in range(iters):
        labels = nearest(x, centroids)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        means = sums / counts.clamp(min=1)[:, None].to(x.dtype)
        centroids = torch.where(counts[:, None] > 0, means, centroids)
    return centroids, counts


def sample_rows(x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n rows of x: distinct ones (a random permutation's first n) when x has enough, else drawn with replacement."""
    if x.shape[0] >= n:
        return x[torch.randperm(x.shape[0], generator=generator)[:n]]
    return x[torch.randint(0, x.shape[0], (n,), generator=generator)]
