"""helpers.zero123.camera follows Zero-1-to-3's conventions: its data loader's get_T (written out below from the
paper's code: camera centres from 3×4 world→camera matrices, polar angle from +z, azimuth difference mod 2π)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.common.render import Camera
from helpers.zero123.camera import (
    FOV_DEGREES,
    RADIUS_RANGE,
    camera_from_extrinsics,
    check_relative_pose,
    relative_pose,
    sample_cameras,
    to_cartesian,
    to_spherical,
)


def look_at_extrinsics(position: np.ndarray) -> np.ndarray:
    """World → camera [R | T] of a camera at ``position`` looking at the origin, z up (Blender's TRACK_TO with
    −Z forward and Y up, as Zero-1-to-3's renderer sets it)."""
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    rotation = np.stack([right, up, back])  # rows: the camera's axes in world coordinates
    return np.concatenate([rotation, -(rotation @ position)[:, None]], axis=1)


def zero123_get_T(target_RT: np.ndarray, cond_RT: np.ndarray) -> np.ndarray:
    """Zero-1-to-3's ObjaverseData.get_T, restated: camera centres −Rᵀ T, then θ = atan2(√(x² + y²), z),
    φ = atan2(y, x), r = |c|; [θ_t − θ_c, sin Δφ, cos Δφ, r_t − r_c] with Δφ = (φ_t − φ_c) mod 2π."""
    def spherical(RT):
        x, y, z = -RT[:3, :3].T @ RT[:, -1]
        return math.atan2(math.hypot(x, y), z), math.atan2(y, x), math.sqrt(x * x + y * y + z * z)

    (theta_t, phi_t, r_t), (theta_c, phi_c, r_c) = spherical(target_RT), spherical(cond_RT)
    d_phi = (phi_t - phi_c) % (2 * math.pi)
    return np.array([theta_t - theta_c, math.sin(d_phi), math.cos(d_phi), r_t - r_c])


def test_relative_pose_equals_zero123_get_T():
    rng = np.random.default_rng(0)
    source, target = sample_cameras(64, rng), sample_cameras(64, rng)
    positions_s, positions_t = to_cartesian(source).numpy(), to_cartesian(target).numpy()
    want = np.stack([zero123_get_T(look_at_extrinsics(t), look_at_extrinsics(s))
                     for s, t in zip(positions_s, positions_t, strict=True)])
    from_extrinsics = relative_pose(
        camera_from_extrinsics(np.stack([look_at_extrinsics(p) for p in positions_s])),
        camera_from_extrinsics(np.stack([look_at_extrinsics(p) for p in positions_t])))
    for got in (relative_pose(source, target), from_extrinsics):
        assert got.dtype == torch.float32 and got.shape == (64, 4)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_relative_pose_by_hand():
    """Level with the object at azimuth 0 → up 30° (polar 60°), a quarter turn, half a unit closer."""
    got = relative_pose([math.pi / 2, 0.0, 2.0], [math.pi / 3, math.pi / 2, 1.5])
    torch.testing.assert_close(got, torch.tensor([-math.pi / 6, 1.0, 0.0, -0.5]))
    # the azimuth wraps: from 0.5 to 0.2 is −0.3, i.e. 2π − 0.3
    wrapped = relative_pose([1.0, 0.5, 2.0], [1.0, 0.2, 2.0])
    torch.testing.assert_close(wrapped, torch.tensor([0.0, -math.sin(0.3), math.cos(0.3), 0.0]))
    assert torch.equal(relative_pose([1.0, 0.4, 2.0], [1.0, 0.4, 2.0]), torch.tensor([0.0, 0.0, 1.0, 0.0]))


def test_spherical_and_cartesian_invert_each_other():
    rng = np.random.default_rng(1)
    cameras = sample_cameras(100, rng, method="uniform")
    torch.testing.assert_close(to_spherical(to_cartesian(cameras)), torch.as_tensor(cameras))
    torch.testing.assert_close(to_cartesian([0.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(to_cartesian([math.pi / 2, math.pi / 2, 1.0]),
                               torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


def test_the_renderers_camera_sits_where_the_spherical_coordinates_say():
    """helpers.common.render.Camera (which renders the views) uses the same (θ, φ, r) convention."""
    for polar, azimuth, radius in sample_cameras(20, np.random.default_rng(3)):
        eye = Camera(float(polar), float(azimuth), float(radius), fov=FOV_DEGREES).eye()
        np.testing.assert_allclose(eye, to_cartesian([polar, azimuth, radius]).numpy(), atol=1e-12)


@pytest.mark.parametrize("method", ["zero123", "uniform"])
def test_camera_sampling_covers_the_whole_sphere(method):
    cameras = sample_cameras(4000, np.random.default_rng(2), method=method)
    polar, azimuth, radius = cameras.T
    assert RADIUS_RANGE[0] <= radius.min() and radius.max() <= RADIUS_RANGE[1]
    assert polar.min() < 0.2 and polar.max() > math.pi - 0.2  # above and below the object
    assert (polar > math.pi / 2).mean() == pytest.approx(0.5, abs=0.03)
    assert azimuth.min() < -math.pi + 0.05 and azimuth.max() > math.pi - 0.05
    assert np.histogram(azimuth, bins=8)[0].min() > 350  # no empty direction


def test_zero123_field_of_view():
    assert FOV_DEGREES == pytest.approx(49.13, abs=0.01)  # 2 atan(16 / 35)


def test_bad_input_gets_one_sentence():
    with pytest.raises(ValueError, match=r"in radians: expected 3 numbers .* got shape \(2,\)"):
        relative_pose([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"polar angle must lie in \[0, π\] radians, got 60 \(degrees\?"):
        relative_pose([60.0, 30.0, 2.0], [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match=r"target camera's azimuth must lie in \[−2π, 2π\] radians, got 270"):
        relative_pose([1.0, 0.0, 2.0], [1.0, 270.0, 2.0])
    with pytest.raises(ValueError, match="radius must be positive"):
        to_cartesian([1.0, 0.0, -1.0])
    with pytest.raises(ValueError, match=r"relative poses must have shape \(B, 4\).* got \(2, 3\)"):
        check_relative_pose(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"Δpolar must lie in \[−π, π\] radians, got 30 \(degrees\?"):
        check_relative_pose(torch.tensor([[30.0, 0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="sin Δazimuth and cos Δazimuth"):
        check_relative_pose(torch.tensor([[0.1, 90.0, 0.0, 0.0]]))
