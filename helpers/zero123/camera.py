"""Cameras on a sphere about the object, and the relative pose Zero-1-to-3 conditions on.

A camera looks at the origin from spherical coordinates (θ, φ, r), all angles in radians:
θ the polar angle measured from the +z (up) axis (0 above the object, π/2 level with it, π below), φ the azimuth
about +z measured from +x, r the distance. Its position is r (sin θ cos φ, sin θ sin φ, cos θ). These are the
conventions of Zero-1-to-3's data loader (``cartesian_to_spherical``: θ = atan2(√(x² + y²), z), φ = atan2(y, x))
and of the course's renderer (``helpers.common.render.Camera``).

The relative pose from a source view to a target view (Zero-1-to-3's ``get_T``) is
[θ_t − θ_s, sin Δφ, cos Δφ, r_t − r_s] with Δφ = (φ_t − φ_s) mod 2π: the azimuth enters through its sine and cosine
because it wraps around, the polar angle and the distance as plain differences. Positive Δθ moves the camera down.

Zero-1-to-3 rendered each Objaverse object, scaled to fit a unit cube and centred, from 12 cameras: a direction
drawn uniformly in the cube [−1, 1]³ and normalised (so the whole sphere, a little denser towards the cube's
corners), at a distance uniform in [1.5, 2.2], through a 35 mm lens on a 32 mm sensor (a 49.1° field of view).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

RADIUS_RANGE = (1.5, 2.2)  # Zero-1-to-3's camera distances (the object fits a unit cube)
FOV_DEGREES = math.degrees(2 * math.atan(32 / 2 / 35))  # 49.13°: Blender's 35 mm lens, 32 mm sensor
VIEWS_PER_OBJECT = 12
ANGLE_TOLERANCE = 1e-6

CameraLike = torch.Tensor | np.ndarray | Sequence[float] | Sequence[Sequence[float]]


def as_cameras(cameras: CameraLike, name: str = "camera") -> torch.Tensor:
    """(..., 3) float64 tensor of (θ, φ, r) in radians; refuses other lengths and angles that look like degrees."""
    t = torch.as_tensor(np.asarray(cameras, dtype=np.float64) if not isinstance(cameras, torch.Tensor) else cameras,
                        dtype=torch.float64)
    if t.dim() == 0 or t.shape[-1] != 3:
        raise ValueError(f"a {name} is (polar, azimuth, radius) in radians: expected 3 numbers in the last "
                         f"dimension, got shape {tuple(t.shape)}")
    polar, azimuth, radius = t.unbind(-1)
    if ((polar < -ANGLE_TOLERANCE) | (polar > math.pi + ANGLE_TOLERANCE)).any():
        raise ValueError(f"a {name}'s polar angle must lie in [0, π] radians, got {polar.max().item():.4g} "
                         f"(degrees? convert them with math.radians)")
    if (azimuth.abs() > 2 * math.pi + ANGLE_TOLERANCE).any():
        raise ValueError(f"a {name}'s azimuth must lie in [−2π, 2π] radians, got {azimuth.abs().max().item():.4g} "
                         f"(degrees? convert them with math.radians)")
    if (radius <= 0).any():
        raise ValueError(f"a {name}'s radius must be positive, got {radius.min().item():.4g}")
    return t


def to_cartesian(cameras: CameraLike) -> torch.Tensor:
    """(θ, φ, r) (..., 3) → camera positions (x, y, z) (..., 3)."""
    polar, azimuth, radius = as_cameras(cameras).unbind(-1)
    return torch.stack([radius * torch.sin(polar) * torch.cos(azimuth),
                        radius * torch.sin(polar) * torch.sin(azimuth),
                        radius * torch.cos(polar)], dim=-1)


def to_spherical(positions: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Camera positions (x, y, z) (..., 3) → (θ, φ, r) (..., 3), φ in (−π, π]."""
    p = torch.as_tensor(np.asarray(positions) if not isinstance(positions, torch.Tensor) else positions,
                        dtype=torch.float64)
    if p.shape[-1] != 3:
        raise ValueError(f"positions must be (..., 3), got shape {tuple(p.shape)}")
    x, y, z = p.unbind(-1)
    horizontal = torch.sqrt(x**2 + y**2)
    return torch.stack([torch.atan2(horizontal, z), torch.atan2(y, x), torch.sqrt(horizontal**2 + z**2)], dim=-1)


def camera_from_extrinsics(world_to_camera: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A 3×4 world → camera matrix [R | T] (as Zero-1-to-3 stores each view) → (θ, φ, r) of its centre −Rᵀ T."""
    m = torch.as_tensor(np.asarray(world_to_camera) if not isinstance(world_to_camera, torch.Tensor)
                        else world_to_camera, dtype=torch.float64)
    if m.shape[-2:] != (3, 4):
        raise ValueError(f"extrinsics must be 3×4 [R | T] matrices, got shape {tuple(m.shape)}")
    rotation, translation = m[..., :3], m[..., 3]
    return to_spherical(-(rotation.transpose(-1, -2) @ translation[..., None])[..., 0])


def relative_pose(source: CameraLike, target: CameraLike) -> torch.Tensor:
    """[Δθ, sin Δφ, cos Δφ, Δr] (..., 4) float32 from source cameras to target cameras, both (..., 3) (θ, φ, r)."""
    s, t = as_cameras(source, "source camera"), as_cameras(target, "target camera")
    d_azimuth = torch.remainder(t[..., 1] - s[..., 1], 2 * math.pi)
    return torch.stack([t[..., 0] - s[..., 0], torch.sin(d_azimuth), torch.cos(d_azimuth),
                        t[..., 2] - s[..., 2]], dim=-1).float()


def check_relative_pose(pose: torch.Tensor) -> None:
    """A relative pose must be (B, 4) [Δθ, sin Δφ, cos Δφ, Δr] with |Δθ| ≤ π and sin² + cos² = 1."""
    if pose.dim() != 2 or pose.shape[-1] != 4:
        raise ValueError(f"relative poses must have shape (B, 4) = [Δpolar, sin Δazimuth, cos Δazimuth, Δradius], "
                         f"got {tuple(pose.shape)}")
    if (pose[:, 0].abs() > math.pi + ANGLE_TOLERANCE).any():
        raise ValueError(f"a relative pose's Δpolar must lie in [−π, π] radians, got {pose[:, 0].abs().max():.4g} "
                         "(degrees? convert them with math.radians)")
    if ((pose[:, 1] ** 2 + pose[:, 2] ** 2 - 1).abs() > 1e-3).any():
        raise ValueError("a relative pose's 2nd and 3rd entries must be sin Δazimuth and cos Δazimuth "
                         "(their squares add up to 1): build it with relative_pose")


def sample_cameras(n: int, rng: np.random.Generator, radius: tuple[float, float] = RADIUS_RANGE,
                   method: str = "zero123") -> np.ndarray:
    """n cameras (n, 3) as (θ, φ, r), r ~ U(radius). ``zero123``: the direction of a point uniform in the cube
    [−1, 1]³ (Zero-1-to-3's renderer); ``uniform``: uniform on the sphere (a normalised Gaussian vector)."""
    if method == "zero123":
        directions = rng.uniform(-1.0, 1.0, size=(n, 3))
    elif method == "uniform":
        directions = rng.standard_normal(size=(n, 3))
    else:
        raise ValueError(f"method must be 'zero123' or 'uniform', got {method!r}")
    distances = rng.uniform(*radius, size=n)
    positions = directions / np.linalg.norm(directions, axis=1, keepdims=True) * distances[:, None]
    return to_spherical(positions).numpy()
