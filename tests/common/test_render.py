"""helpers.common.render: pybullet scenes render to RGB, depth and instance maps that match the objects,
reproducibly."""

import dataclasses
import math
import sys

import numpy as np
import pytest

from helpers.common import render
from helpers.course.deps import MissingDependency

pybullet = pytest.importorskip("pybullet")


def _pixel(camera: render.Camera, point, size: int) -> tuple[int, int]:
    """Row and column where ``camera`` sees the world ``point`` in a size × size image."""
    clip = camera.projection_matrix() @ camera.view_matrix() @ np.append(point, 1.0)
    ndc = clip[:3] / clip[3]
    return int((1 - ndc[1]) / 2 * size), int((ndc[0] + 1) / 2 * size)


@pytest.fixture(scope="module")
def renderer():
    with render.Renderer() as r:
        yield r


@pytest.fixture(scope="module")
def two_objects():
    sphere = render.place(render.get_object("sphere"), 0.4, (0.0, -0.35), np.array([0, 0, 0, 1.0]), (0.9, 0.2, 0.2))
    cube = render.place(render.get_object("cube"), 0.3, (0.1, 0.4), np.array([0, 0, 0, 1.0]), (0.2, 0.4, 0.9))
    scene = render.Scene((sphere, cube), render.Background(ground=(0.5, 0.6, 0.5), texture="checker_blue.png"))
    camera = render.Camera(polar=math.radians(50), azimuth=math.radians(10), radius=2.2, target=(0.0, 0.0, 0.15))
    return scene, camera


def test_rotations_match_pybullet():
    rng = np.random.default_rng(0)
    for roll, pitch, yaw in rng.uniform(-3, 3, size=(5, 3)):
        q = render.quaternion_from_euler(roll, pitch, yaw)
        np.testing.assert_allclose(q, pybullet.getQuaternionFromEuler([roll, pitch, yaw]), atol=1e-7)
        np.testing.assert_allclose(render.rotation_matrix(q).ravel(), pybullet.getMatrixFromQuaternion(q), atol=1e-7)
    a, b = render.quaternion_from_euler(0.3, 0, 0), render.quaternion_from_euler(0, 0, 1.1)
    np.testing.assert_allclose(render.rotation_matrix(render.quaternion_multiply(b, a)),
                               render.rotation_matrix(b) @ render.rotation_matrix(a), atol=1e-12)


def test_camera_matrices_match_pybullet():
    camera = render.Camera(polar=1.0, azimuth=2.0, radius=3.0, target=(0.1, -0.2, 0.3), fov=50.0, near=0.1, far=20.0)
    eye = camera.eye()
    assert math.isclose(np.linalg.norm(eye - camera.target), 3.0)
    assert math.isclose(math.acos((eye[2] - 0.3) / 3.0), 1.0)  # polar from +z
    assert math.isclose(math.atan2(eye[1] + 0.2, eye[0] - 0.1), 2.0)  # azimuth about +z from +x
    expected_view = np.reshape(pybullet.computeViewMatrix(eye.tolist(), list(camera.target), [0, 0, 1]), (4, 4)).T
    np.testing.assert_allclose(camera.view_matrix(), expected_view, atol=1e-5)
    expected_proj = np.reshape(pybullet.computeProjectionMatrixFOV(50.0, 1.5, 0.1, 20.0), (4, 4)).T
    np.testing.assert_allclose(camera.projection_matrix(1.5), expected_proj, atol=1e-5)
    np.testing.assert_allclose(camera.pose()[:3, 3], eye, atol=1e-12)
    with pytest.raises(ValueError, match=r"polar must be in \(0, π\)"):
        render.Camera(polar=0.0, azimuth=0.0, radius=1.0)


def test_objects_stand_on_the_ground_at_their_size():
    rng = np.random.default_rng(1)
    for name in ("duck", "jenga", "random_042"):
        spec = render.get_object(name)
        obj = render.place(spec, 0.3, (0.5, -0.2), render.random_orientation(spec, rng))
        v = obj.world_vertices()
        assert abs(v[:, 2].min()) < 1e-9
        sides = np.ptp(spec.vertices(), axis=0) * 0.3 / np.ptp(spec.vertices(), axis=0).max()
        if name == "duck":  # stood up: its y axis (the file's up) points up
            assert math.isclose(np.ptp(v[:, 2]), sides[1], rel_tol=1e-9)
        np.testing.assert_allclose(obj.position[:2], (0.5, -0.2))
    jenga = render.place(render.get_object("jenga"), 0.3, (0, 0), np.array([0, 0, 0, 1.0]))
    np.testing.assert_allclose(np.ptp(jenga.world_vertices(), axis=0), [0.3, 0.1, 0.06], atol=1e-9)


def test_rendering_has_the_documented_shapes_and_masks_match_the_objects(renderer, two_objects):
    scene, camera = two_objects
    renderer.build(scene)
    view = renderer.render(camera, render.Light(), size=(96, 128))
    assert view.rgb.shape == (96, 128, 3) and view.rgb.dtype == np.uint8
    assert view.depth.shape == (96, 128) and view.depth.dtype == np.float32
    assert view.instances.shape == (96, 128) and view.instances.dtype == np.int32
    assert set(np.unique(view.instances)) == {0, 1, 2} and view.names == ["sphere", "cube"]
    np.testing.assert_array_equal(view.pixel_counts(), view.masks().sum(axis=(1, 2)))
    square = renderer.render(camera, size=128)
    for k, obj in enumerate(scene.objects, start=1):  # each object's centre projects onto its own mask
        row, col = _pixel(camera, obj.position, 128)
        assert square.instances[row, col] == k, (obj.name, row, col)
    assert square.instances[0, 0] == 0 and square.instances[-1, -1] == 0  # ground or sky around them


def test_depth_is_metric(renderer, two_objects):
    scene, camera = two_objects
    renderer.build(scene)
    sphere = scene.objects[0]
    aimed = render.Camera(polar=camera.polar, azimuth=camera.azimuth, radius=2.0, target=sphere.position)
    view = renderer.render(aimed, size=129)
    assert view.instances[64, 64] == 1
    expected = 2.0 - sphere.radius()  # the front of the sphere, straight ahead
    assert abs(view.depth[64, 64] - expected) < 0.02, (view.depth[64, 64], expected)
    sky = renderer.render(render.Camera(polar=math.radians(89), azimuth=0.0, radius=2.0, target=(0, 0, 0.5)), size=64)
    assert np.isinf(sky.depth[0]).all() and (sky.instances[0] == 0).all()  # top row: sky


def test_without_the_ground_plane_only_the_objects_cover_the_sky(renderer, two_objects):
    scene, camera = two_objects
    white = render.Background(sky=(1.0, 1.0, 1.0), horizon=(1.0, 1.0, 1.0), plane=False)
    renderer.build(render.Scene(scene.objects, white))
    view = renderer.render(camera, size=64)
    assert set(np.unique(view.instances)) == {0, 1, 2}
    assert (view.rgb[view.instances == 0] == 255).all() and np.isinf(view.depth[view.instances == 0]).all()
    renderer.build(render.Scene(scene.objects, dataclasses.replace(white, plane=True)))
    ground = renderer.render(camera, size=64)
    assert np.isfinite(ground.depth[ground.instances == 0]).mean() > 0.5  # with the plane, it fills the background


def test_same_scene_same_pixels(renderer, two_objects):
    scene, camera = two_objects
    renderer.build(scene)
    first = renderer.render(camera, size=64, supersample=2)
    rng = np.random.default_rng(3)
    other = render.Scene((render.place(render.get_object("duck"), 0.3, (0, 0), np.array([0, 0, 0, 1.0])),),
                         render.random_background(rng))
    renderer.build(other)
    renderer.render(render.random_camera(rng, (0, 0, 0.1), 0.3), render.random_light(rng), size=64)
    with render.Renderer() as fresh:
        fresh.build(scene)
        again = fresh.render(camera, size=64, supersample=2)
    renderer.build(scene)
    third = renderer.render(camera, size=64, supersample=2)
    for view in (again, third):
        np.testing.assert_array_equal(view.rgb, first.rgb)
        np.testing.assert_array_equal(view.instances, first.instances)
        np.testing.assert_array_equal(view.depth, first.depth)


def test_random_draws_follow_the_seed():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return (render.random_background(rng), render.random_light(rng), render.random_camera(rng, (0, 0, 0), 1.0),
                render.random_paint(render.get_object("duck"), rng))
    assert draw(5) == draw(5) and draw(5) != draw(6)


def test_objects_are_found_by_name():
    assert render.get_object("random_007").mesh == "random_urdfs/007/007.obj"
    for name in [*render.NAMED_OBJECTS, "random_000", "random_999"]:
        assert render.get_object(name).path.is_file(), name
    with pytest.raises(KeyError, match="unknown object 'dragon'"):
        render.get_object("dragon")
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        render.random_object(1000)


def test_parallel_map_keeps_order_and_matches_serial():
    offset = 10
    square = lambda x: x * x + offset  # noqa: E731 - a closure: not picklable, inherited by the forked workers
    assert render.parallel_map(square, range(7), workers=2) == render.parallel_map(square, range(7), workers=1)
    assert render.parallel_map(square, range(7), workers=2) == [x * x + 10 for x in range(7)]


def test_missing_pybullet_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pybullet", None)
    with pytest.raises(MissingDependency, match="Rendering scenes needs the Python package `pybullet`"):
        render.Renderer()


def test_box_uv_takes_the_plane_each_face_faces_most():
    cube = np.array([[0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 1, 0], [0, 0, 1], [2, 0, 1]], dtype=float)
    triangles = np.array([[0, 1, 2], [0, 1, 5]])  # the bottom (normal ±z) and the front (normal ±y)
    uv = render.box_uv(cube, triangles)
    assert uv.shape == (2, 3, 2)
    np.testing.assert_allclose(uv[0], [[0, 0], [1, 0], [1, 0.5]])  # (x, y) over the largest side, 2
    np.testing.assert_allclose(uv[1], [[0, 0], [1, 0], [1, 0.5]])  # (x, z)


def test_uv_mesh_keeps_the_vertices_and_gives_every_corner_a_texture_coordinate(tmp_path):
    spec = render.get_object("random_042")
    text = render.uv_mesh_text(spec)
    path = tmp_path / "uv.obj"
    path.write_text(text)
    np.testing.assert_array_equal(render._read_obj_vertices(str(path)), render._read_obj_vertices(str(spec.path)))
    faces = [line.split()[1:] for line in text.splitlines() if line.startswith("f ")]
    coords = [line for line in text.splitlines() if line.startswith("vt ")]
    assert len(coords) == 3 * len(faces) and all(len(f) == 3 and all("/" in c for c in f) for f in faces)
    assert len(faces) == len(render._read_obj_triangles(str(spec.path)))


def test_a_texture_image_covers_its_object_and_the_ground(renderer, two_objects):
    scene, camera = two_objects
    stripes = np.zeros((32, 32, 3), dtype=np.uint8)
    stripes[:, ::8] = stripes[:, 1::8] = stripes[:, 2::8] = stripes[:, 3::8] = (250, 250, 250)
    stripes[:, 4::8] = stripes[:, 5::8] = stripes[:, 6::8] = stripes[:, 7::8] = (250, 20, 20)
    green = np.full((8, 8, 3), (20, 200, 20), dtype=np.uint8)
    sphere = dataclasses.replace(scene.objects[0], colour=(1.0, 1.0, 1.0, 1.0), texture=stripes)
    textured = render.Scene((sphere, scene.objects[1]),
                            dataclasses.replace(scene.background, ground=(1.0, 1.0, 1.0), texture=green))
    renderer.build(textured)
    bright = render.Light(ambient=1.0, diffuse=0.0, specular=0.0)
    view = renderer.render(camera, bright, size=128)
    on_sphere = view.rgb[view.instances == 1].astype(float)
    white = (on_sphere.min(1) > 200).mean()
    red = ((on_sphere[:, 0] > 200) & (on_sphere[:, 1] < 60)).mean()
    assert white > 0.2 and red > 0.2, (white, red)  # both stripes show on the sphere
    ground = view.rgb[(view.instances == 0) & np.isfinite(view.depth)].astype(float)
    assert (np.abs(ground - (20, 200, 20)).max(1) < 3).mean() > 0.95  # the image, not pybullet_data's checker
    with pytest.raises(ValueError, match=r"texture: expected an \(n, n, 3\) uint8 RGB image, got \(8, 8\)"):
        render.place(render.get_object("cube"), 0.3, (0, 0), np.array([0, 0, 0, 1.0]), texture=green[..., 0])


def test_shadows_darken_the_ground_behind_an_object(renderer):
    block = render.place(render.get_object("cube"), 0.4, (0.0, 0.0), np.array([0, 0, 0, 1.0]))
    renderer.build(render.Scene((block,), render.Background(ground=(0.8, 0.8, 0.8))))
    camera = render.Camera(polar=0.01, azimuth=0.0, radius=3.0, target=(0.0, 0.0, 0.0), fov=40.0)  # from above
    low_sun = dict(direction=(1.0, 0.0, 0.6), ambient=0.3, diffuse=0.7, specular=0.0)
    lit = renderer.render(camera, render.Light(**low_sun), size=96)
    shaded = renderer.render(camera, render.Light(**low_sun, shadow=True), size=96)
    row, col = _pixel(camera, (-0.4, 0.0, 0.0), 96)  # on the ground, on the side away from the light
    assert lit.instances[row, col] == 0
    assert shaded.rgb[row, col].mean() < 0.8 * lit.rgb[row, col].mean()
    far_row, far_col = _pixel(camera, (0.4, 0.0, 0.0), 96)  # on the lit side: no shadow
    assert abs(float(shaded.rgb[far_row, far_col].mean()) - float(lit.rgb[far_row, far_col].mean())) < 8


def test_a_renderer_connects_afresh_past_its_texture_limit_and_renders_the_same(two_objects, monkeypatch):
    scene, camera = two_objects
    rng = np.random.default_rng(4)
    with render.Renderer() as r:
        r.build(scene)
        before = r.render(camera, size=48)
        monkeypatch.setattr(render.Renderer, "TEXTURE_LIMIT", 2)
        for _ in range(3):
            noise = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            r.build(render.Scene(scene.objects, dataclasses.replace(scene.background, texture=noise)))
        assert r._loaded < 3  # four textures were loaded: the renderer connected afresh on the way
        r.build(scene)
        np.testing.assert_array_equal(r.render(camera, size=48).rgb, before.rgb)
        folder = r._folder
    assert not folder.exists()  # close() removes the renderer's files
