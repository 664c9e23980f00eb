"""helpers.zero123.views: objects alone on white from Zero-1-to-3's cameras, split into training, held-out and named
objects, reproducibly."""

import math

import numpy as np
import pytest

from helpers.common import render
from helpers.zero123 import views
from helpers.zero123.camera import RADIUS_RANGE

pytest.importorskip("pybullet")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("views")
    path = views.build("test", 3, 32, cache_dir=folder, progress=False)
    with np.load(path) as f:
        return folder, {k: f[k] for k in f.files}


def test_arrays_have_the_documented_shapes(built):
    _, data = built
    assert data["images"].shape == (3, 12, 32, 32, 3) and data["images"].dtype == np.uint8
    assert data["masks"].shape == (3, 12, 32, 32) and data["masks"].dtype == bool
    assert data["cameras"].shape == (3, 12, 3) and data["colours"].shape == (3, 4)
    assert list(data["names"]) == ["random_900", "random_901", "random_902"]


def test_objects_stand_alone_on_white_inside_the_frame(built):
    _, data = built
    images, masks = data["images"], data["masks"]
    padded = np.pad(masks, [(0, 0), (0, 0), (1, 1), (1, 1)])
    near = np.zeros_like(masks)  # the object and its neighbouring pixels (edges are blended by supersampling)
    for dy in range(3):
        for dx in range(3):
            near |= padded[..., dy:dy + 32, dx:dx + 32]
    assert (images[~near] == 255).all()  # no ground plane: everything else is the white sky
    assert (masks.mean(axis=(2, 3)) > 0.02).all()  # every view shows its object
    border = masks[..., 0, :] | masks[..., -1, :] | masks[..., :, 0] | masks[..., :, -1]
    assert not border.any()  # the bounding sphere fits the nearest camera's view


def test_cameras_follow_zero123(built):
    _, data = built
    polar, azimuth, radius = np.moveaxis(data["cameras"], -1, 0)
    assert ((radius >= RADIUS_RANGE[0]) & (radius <= RADIUS_RANGE[1])).all()
    assert ((polar > 0) & (polar < math.pi)).all() and (np.abs(azimuth) <= math.pi).all()
    assert len(np.unique(data["cameras"].reshape(-1, 3), axis=0)) == 36  # 12 different cameras per object


def test_an_object_is_the_same_in_every_build(built):
    folder, data = built
    again = views.render_object("test", 1, seed=0, image_size=32)
    np.testing.assert_array_equal(again["images"], data["images"][1])
    np.testing.assert_array_equal(again["cameras"], data["cameras"][1])
    assert views.load("test", 3, 32, cache_dir=folder)["images"].shape == (3, 12, 32, 32, 3)  # the cached file
    other = views.render_object("test", 1, seed=1, image_size=32)
    assert not np.array_equal(other["cameras"], data["cameras"][1])


def test_splits_share_no_object():
    train, test, named = (set(views.split_objects(s)) for s in views.SPLITS)
    assert not train & test and not (train | test) & named
    assert len(train) == 900 and len(test) == 100 and named == set(render.NAMED_OBJECTS)


def test_objects_are_normalised_to_zero123s_unit_cube():
    for name in ("random_007", "duck", "mug"):
        placement = views.normalised(render.get_object(name), (1.0, 1.0, 1.0, 1.0))
        vertices = placement.world_vertices()
        centre = (vertices.min(0) + vertices.max(0)) / 2
        np.testing.assert_allclose(centre, 0, atol=1e-9)
        assert np.ptp(vertices, axis=0).max() <= views.OBJECT_SIZE + 1e-9
        assert np.linalg.norm(vertices, axis=1).max() <= views.MAX_RADIUS + 1e-9


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        views.split_objects("val")
    with pytest.raises(ValueError, match=r"the named split has 1 … 16 objects"):
        views.build("named", 17, 32, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="images need ≥ 16 pixels"):
        views.build("train", 2, 8, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="has 100 objects, got index 100"):
        views.render_object("test", 100, 0, 32)


def test_views_from_chosen_cameras_match_the_data_set(built):
    _, data = built
    again = views.render_views("test", 2, data["cameras"][2, :4], image_size=32)
    np.testing.assert_array_equal(again["images"], data["images"][2, :4])
    np.testing.assert_array_equal(again["masks"], data["masks"][2, :4])
    with pytest.raises(ValueError, match=r"cameras must have shape \(V, 3\)"):
        views.render_views("test", 2, data["cameras"][2, 0], image_size=32)


def test_command_line_builds_one_split_or_asks_for_its_size(tmp_path, capsys):
    views.main(["--split", "test", "--count", "2", "--size", "16", "--cache-dir", str(tmp_path)])
    assert "test: 2 objects × 12 views at 16×16 px" in capsys.readouterr().out
    assert views.cache_path("test", 2, 16, 0, tmp_path).is_file()
    with pytest.raises(SystemExit):
        views.main(["--split", "test", "--count", "2"])
    assert "--split needs --count and --size" in capsys.readouterr().err
