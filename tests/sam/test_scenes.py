"""helpers.sam.scenes: the SAM scenes build reproducibly, with masks that match their objects and disjoint splits."""

import numpy as np
import pytest

from helpers.common import render
from helpers.sam import scenes

pytest.importorskip("pybullet")

SIZE = 48


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scenes")


@pytest.fixture(scope="module")
def train(cache):
    return scenes.load("train", 6, SIZE, seed=0, cache_dir=cache, workers=2)


@pytest.fixture(scope="module")
def val(cache):
    return scenes.load("val", 4, SIZE, seed=0, cache_dir=cache, workers=2)


def test_shapes_and_dtypes(train):
    n = 6
    assert train["images"].shape == (n, SIZE, SIZE, 3) and train["images"].dtype == np.uint8
    assert train["masks"].shape == (n, SIZE, SIZE) and train["masks"].dtype == np.uint8
    assert train["names"].shape == (n, scenes.MAX_OBJECTS) and train["names"].dtype.kind == "U"
    assert train["pixels"].shape == (n, scenes.MAX_OBJECTS) and train["cameras"].shape == (n, 7)
    assert ((train["counts"] >= 2) & (train["counts"] <= 6)).all()


def test_masks_match_the_listed_objects(train, val):
    min_pixels = scenes.MIN_FRACTION * SIZE * SIZE
    for data in (train, val):
        rows = zip(data["masks"], data["names"], data["counts"], data["pixels"], strict=True)
        for mask, names, count, pixels in rows:
            assert mask.max() <= count  # ids in range, 0 is the background
            assert (names[:count] != "").all() and (names[count:] == "").all() and len(set(names[:count])) == count
            area = np.bincount(mask.ravel(), minlength=scenes.MAX_OBJECTS + 1)
            np.testing.assert_array_equal(area[1:], pixels)  # recorded pixel counts are the mask's
            assert (pixels[:count] >= min_pixels).all() and (pixels[count:] == 0).all()
            assert area[0] > 0  # some background is visible


def test_objects_and_ground_are_textured_from_one_palette_of_few_colours():
    layout = scenes.random_layout(scenes.scene_rng("train", 7, 0), "train")
    palette = scenes.random_palette(scenes.scene_rng("train", 7, 0))  # random_layout's first draw
    assert scenes.PALETTE_SIZE[0] <= len(palette) <= scenes.PALETTE_SIZE[1]
    textures = [o.texture for o in layout.objects] + [layout.background.texture]
    for texture in textures:
        assert texture.shape == (scenes.TEXTURE_SIZE, scenes.TEXTURE_SIZE, 3) and texture.dtype == np.uint8
        pixels = texture.reshape(-1, 3).astype(float)
        distance = np.linalg.norm(pixels[:, None] - 255 * palette[None], axis=-1)  # (n, C)
        assert np.median(distance.min(1)) < 40  # painted in the palette's colours (grain and shading aside) …
        used = np.bincount(distance.argmin(1), minlength=len(palette)) > 0.1 * len(pixels)
        assert used.sum() >= 2  # … at least two of them: no object or ground is a flat colour


def test_every_view_is_lit_by_a_light_that_casts_shadows(monkeypatch):
    lights = []
    original = render.Renderer.render

    def spy(self, camera, light=None, *args, **kwargs):
        lights.append(light)
        return original(self, camera, light, *args, **kwargs)

    monkeypatch.setattr(render.Renderer, "render", spy)
    scenes.make_sample("val", 2, seed=0, image_size=32)
    lights = [light for light in lights if light is not None]  # None: the small probe, which is not kept
    assert lights and all(light.shadow for light in lights)
    assert all(scenes.AMBIENT[0] <= light.ambient <= scenes.AMBIENT[1] for light in lights)


def test_samples_are_reproducible_whatever_the_workers(train, cache, tmp_path):
    again = scenes.load("train", 6, SIZE, seed=0, cache_dir=tmp_path, workers=1)
    for key, value in train.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    one = scenes.make_sample("train", 4, seed=0, image_size=SIZE)  # sample i depends on (seed, split, i) only
    np.testing.assert_array_equal(one["image"], train["images"][4])
    np.testing.assert_array_equal(one["mask"], train["masks"][4])
    other = scenes.make_sample("train", 4, seed=1, image_size=SIZE)
    assert not np.array_equal(other["image"], one["image"])


def test_splits_share_no_objects_and_no_scenes(train, val):
    train_named, train_random = scenes.split_objects("train")
    val_named, val_random = scenes.split_objects("val")
    assert not set(train_named + train_random) & set(val_named + val_random)
    assert set(val_named) == set(scenes.VAL_NAMED) and len(val_random) == 100
    assert len(train_named + val_named) == len(render.NAMED_OBJECTS) and len(train_random + val_random) == 1000
    used_train = {n for n in train["names"].ravel() if n}
    used_val = {n for n in val["names"].ravel() if n}
    assert used_train <= set(train_named + train_random) and used_val <= set(val_named + val_random)
    assert not any(np.array_equal(a, b) for a in train["images"] for b in val["images"])
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'val'\)"):
        scenes.load("test", 4, SIZE)


def test_cache_is_reused(train, cache, monkeypatch):
    path = scenes.cache_path("train", 6, SIZE, 0, cache)
    assert path.is_file() and path.parent == cache and f"_v{scenes.VERSION}." in path.name
    stamp = path.stat().st_mtime_ns

    def must_not_render(*args, **kwargs):
        raise AssertionError("the cached file should have been used")

    monkeypatch.setattr(scenes, "make_sample", must_not_render)
    assert scenes.build("train", 6, SIZE, 0, cache_dir=cache) == path and path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(scenes.load("train", 6, SIZE, cache_dir=cache)["masks"], train["masks"])
    assert scenes.cache_path("train", 6, 64, 0, cache) != path and scenes.cache_path("val", 6, SIZE, 0, cache) != path


def test_command_line_builds_one_split(tmp_path, capsys):
    scenes.main(["--split", "val", "--count", "2", "--size", "32", "--cache-dir", str(tmp_path), "--workers", "1"])
    assert "val: 2 scenes at 32×32 px" in capsys.readouterr().out
    assert scenes.cache_path("val", 2, 32, 0, tmp_path).is_file()
    assert scenes.profile_sizes("smoke") == {"train": (64, 64), "val": (16, 64)}


def test_photographs_load():
    photos = scenes.photographs()
    assert set(photos) == {"astronaut", "coffee", "chelsea", "rocket"}
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 for p in photos.values())
    small = scenes.photographs(size=64)
    assert all(p.shape == (64, 64, 3) and p.dtype == np.uint8 for p in small.values())
    assert abs(float(small["astronaut"].mean()) - float(photos["astronaut"].mean())) < 10
