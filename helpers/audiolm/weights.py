"""Moving weights between the course's modules and the reference libraries' when both build the same layers in the
same order (only the names differ)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def copy_in_order(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s parameters into ``target``'s, pairing them in registration order; shapes must agree."""
    pairs = list(zip(source.parameters(), target.parameters(), strict=True))
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"the two networks differ: a parameter of shape {tuple(a.shape)} meets one of shape "
                             f"{tuple(b.shape)}")
    for a, b in pairs:
        b.copy_(a)
