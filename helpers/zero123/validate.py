"""One-sentence checks of what the Zero-1-to-3 modules are given: images, latents, channel counts."""

from __future__ import annotations

import torch

RANGE_TOLERANCE = 1e-3  # how far outside [-1, 1] an image may stray (rounding) before it is refused


def check_channels(x: torch.Tensor, channels: int, name: str) -> None:
    """x must be (B, channels, H, W)."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")


def check_images(images: torch.Tensor, size: int, channels: int = 3, name: str = "images") -> None:
    """Images must be (B, channels, size, size) with values in [-1, 1] (0 … 255 or 0 … 1 images are refused or
    are the caller's to rescale: x ↦ 2x − 1 for [0, 1])."""
    if images.dim() != 4 or images.shape[1] != channels or tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"{name} must have shape (B, {channels}, {size}, {size}), got {tuple(images.shape)}")
    low, high = images.min().item(), images.max().item()
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{name} must have values in [-1, 1], got values in [{low:.3g}, {high:.3g}] "
                         "(rescale 0…1 images with 2x − 1, 0…255 ones with x / 127.5 − 1)")


def check_latents(latents: torch.Tensor, channels: int, size: int | None = None, name: str = "latents") -> None:
    """Latents must be (B, channels, h, w), with h = w = ``size`` when given."""
    spatial = f"{size}, {size}" if size is not None else "h, w"
    if latents.dim() != 4 or latents.shape[1] != channels or (
            size is not None and tuple(latents.shape[-2:]) != (size, size)):
        raise ValueError(f"{name} must have shape (B, {channels}, {spatial}), got {tuple(latents.shape)}")
