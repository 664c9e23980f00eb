"""The Zero-1-to-3 data set: 3D objects alone on white, each rendered from 12 random viewpoints.

Zero-1-to-3 (Liu et al., 2023) rendered 800,000 Objaverse objects, each scaled to fit a unit cube, from 12 random
cameras (:func:`helpers.zero123.camera.sample_cameras`: the whole sphere, radius 1.5–2.2, a 49.1° field of view),
and trained on pairs of views of one object with their relative pose. This module does the same with the meshes of
``pybullet_data`` and the course's renderer (:mod:`helpers.common.render`, no ground plane, a white sky, one fixed
light), at 32–64 px:

- ``train``: pybullet's procedurally generated objects ``random_000`` … ``random_899`` (blocks and blobs, one
  random colour each), in the pose of their file;
- ``test``: ``random_900`` … ``random_999``, the same kind of object but never seen in training (held out);
- ``named``: the named meshes (duck, teddy, mug, torus, soccer ball …), standing upright: objects of another kind
  that training never shows (the deck's "zero-shot": its Nefertiti bust was not in the training set either).

Each object is centred on its bounding box and scaled so that its largest side is ``OBJECT_SIZE`` (Zero-1-to-3's
unit cube) and its bounding sphere no larger than ``MAX_RADIUS``, so that the nearest camera still sees all of it.
Object i of a split depends only on (seed, split, i): a larger build starts with the same objects as a smaller one.

    python data/zero123/views.py --profile cpu       # what the cpu profile needs, into data/cache/views/
    python data/zero123/views.py --split test --count 8 --size 64

In a notebook: ``from helpers.zero123 import views`` then ``views.load("train", 900, 32)``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from helpers.common import datacli, npz, render
from helpers.paths import DATA_DIR
from helpers.profile import get_profile
from helpers.zero123.camera import FOV_DEGREES, VIEWS_PER_OBJECT, sample_cameras

VERSION = 1  # bump when the generator changes: cached files carry it in their name
CACHE_DIR = DATA_DIR / "cache" / "views"
SPLITS = ("train", "test", "named")
SPLIT_STREAMS = {"train": 0, "test": 1, "named": 2}  # SeedSequence entropy that keeps the splits' draws apart
TRAIN_RANDOM = range(0, 900)  # random_000 … random_899
TEST_RANDOM = range(900, render.RANDOM_OBJECTS)  # random_900 … random_999, never in training
OBJECT_SIZE = 1.0  # the largest side of the object's bounding box (Zero-1-to-3's unit cube)
MAX_RADIUS = 0.6  # at most this bounding-sphere radius: inside the view of a camera 1.5 away (sin 24.6° · 1.5 = 0.62)
POLAR_MARGIN = 1e-3  # radians kept from the poles, where "up" in the image is undefined
SUPERSAMPLE = 2  # render 2×2 larger and average: smooth edges
BACKGROUND = render.Background(sky=(1.0, 1.0, 1.0), horizon=(1.0, 1.0, 1.0), plane=False)
LIGHT = render.Light(direction=(0.5, -0.3, 1.0), ambient=0.55, diffuse=0.6, specular=0.1)  # fixed in the world
PROFILE_SIZES = {  # profile → split → (objects, image size in pixels)
    "smoke": {"train": (60, 32), "test": (12, 32), "named": (16, 32)},
    "cpu": {"train": (900, 32), "test": (100, 32), "named": (16, 32)},
    "gpu": {"train": (900, 64), "test": (100, 64), "named": (16, 64)},
}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_objects(split: str) -> list[str]:
    """The names of the objects ``split`` draws from, in order (object i of a build is the i-th)."""
    _check_split(split)
    if split == "named":
        return list(render.NAMED_OBJECTS)
    return [f"random_{i:03d}" for i in (TRAIN_RANDOM if split == "train" else TEST_RANDOM)]


def object_rng(split: str, index: int, seed: int) -> np.random.Generator:
    """The random stream of object ``index`` of ``split``: independent of every other object and split."""
    _check_split(split)
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_STREAMS[split], index]))


def normalised(spec: render.ObjectSpec, colour: tuple[float, float, float, float]) -> render.Placement:
    """``spec`` standing in its canonical pose (upright for named meshes), its bounding box centred on the origin,
    its largest side ``OBJECT_SIZE`` and its bounding sphere at most ``MAX_RADIUS``."""
    orientation = render.quaternion_from_euler(*spec.upright)
    rotated = spec.vertices() @ render.rotation_matrix(orientation).T
    centre = (rotated.min(0) + rotated.max(0)) / 2
    factor = min(OBJECT_SIZE / float(np.ptp(rotated, axis=0).max()),
                 MAX_RADIUS / float(np.linalg.norm(rotated - centre, axis=1).max()))
    return render.Placement(spec, tuple(float(-factor * c) for c in centre), tuple(float(q) for q in orientation),
                            tuple(float(factor * a) for a in spec.aspect), colour)


def object_placement(split: str, index: int, seed: int) -> tuple[render.Placement, np.random.Generator]:
    """Object ``index`` of ``split``, normalised and painted, and its random stream (the colour already drawn)."""
    names = split_objects(split)
    if not 0 <= index < len(names):
        raise ValueError(f"the {split} split has {len(names)} objects, got index {index}")
    rng = object_rng(split, index, seed)
    spec = render.get_object(names[index])
    return normalised(spec, render.random_paint(spec, rng)), rng


def render_cameras(placement: render.Placement, cameras: np.ndarray, image_size: int) -> dict[str, np.ndarray]:
    """``placement`` alone on white from cameras (V, 3) (polar, azimuth, radius): images (V, S, S, 3) uint8 and
    masks (V, S, S) bool."""
    cameras = np.asarray(cameras, dtype=np.float64)
    if cameras.ndim != 2 or cameras.shape[1] != 3:
        raise ValueError(f"cameras must have shape (V, 3) = (polar, azimuth, radius), got {cameras.shape}")
    renderer = render.shared_renderer()
    renderer.build(render.Scene((placement,), BACKGROUND))
    shots = [renderer.render(render.Camera(float(p), float(a), float(r), fov=FOV_DEGREES), LIGHT, image_size,
                             supersample=SUPERSAMPLE) for p, a, r in cameras]
    return {"images": np.stack([s.rgb for s in shots]), "masks": np.stack([s.instances > 0 for s in shots])}


def render_object(split: str, index: int, seed: int, image_size: int,
                  views: int = VIEWS_PER_OBJECT) -> dict[str, np.ndarray]:
    """Object ``index`` of ``split`` from ``views`` random cameras: images (V, S, S, 3) uint8, masks (V, S, S) bool,
    cameras (V, 3) float64 (polar, azimuth, radius), colour (4,)."""
    placement, rng = object_placement(split, index, seed)
    cameras = sample_cameras(views, rng)
    cameras[:, 0] = np.clip(cameras[:, 0], POLAR_MARGIN, math.pi - POLAR_MARGIN)
    return {**render_cameras(placement, cameras, image_size), "cameras": cameras,
            "colour": np.asarray(placement.colour)}


def render_views(split: str, index: int, cameras: np.ndarray, image_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Object ``index`` of ``split`` (the same colour as in :func:`build`) from the cameras given, (V, 3)."""
    return render_cameras(object_placement(split, index, seed)[0], cameras, image_size)


def cache_path(split: str, count: int, image_size: int, seed: int = 0, cache_dir: Path = CACHE_DIR) -> Path:
    """Where :func:`build` writes this split: one file per split, count, size, seed and generator version."""
    return Path(cache_dir) / f"{split}_{count}x{image_size}px_seed{seed}_v{VERSION}.npz"


def build(split: str, count: int | None, image_size: int, seed: int = 0, *, workers: int = 1,
          cache_dir: Path = CACHE_DIR, progress: bool = True, force: bool = False) -> Path:
    """Render the first ``count`` objects of ``split`` (None: all) at ``image_size``² pixels into an .npz; return it.

    An existing file is reused unless ``force``. Arrays: images (N, V, S, S, 3) uint8, masks (N, V, S, S) bool,
    cameras (N, V, 3) float64 (polar, azimuth, radius in radians and object units), names (N,) str, colours (N, 4).
    """
    available = len(split_objects(split))
    count = available if count is None else count
    if not 1 <= count <= available or image_size < 16:
        raise ValueError(f"the {split} split has 1 … {available} objects and images need ≥ 16 pixels, "
                         f"got count={count}, image_size={image_size}")
    path = cache_path(split, count, image_size, seed, cache_dir)
    if path.is_file() and not force:
        return path
    make = functools.partial(render_object, split, seed=seed, image_size=image_size)
    objects = render.parallel_map(make, range(count), workers=workers,
                                  progress=f"rendering {split} objects" if progress else None)
    arrays = {key: np.stack([o[key] for o in objects]) for key in ("images", "masks", "cameras")}
    arrays["colours"] = np.stack([o["colour"] for o in objects]).astype(np.float32)
    arrays["names"] = np.array(split_objects(split)[:count])
    return npz.save(path, arrays)


def load(split: str, count: int | None, image_size: int, seed: int = 0, *, cache_dir: Path = CACHE_DIR,
         workers: int = 1, progress: bool = False) -> dict[str, np.ndarray]:
    """The arrays of ``build(split, count, image_size, seed)``, building them on first use (silently unless
    ``progress``: a notebook's output should not depend on whether the cache was there)."""
    path = build(split, count, image_size, seed, workers=workers, cache_dir=cache_dir, progress=progress)
    return npz.load(path)


def profile_sizes(profile: str | None = None) -> dict[str, tuple[int, int]]:
    """split → (objects, image size) for a run profile (default: $COURSE_PROFILE, else by hardware)."""
    return PROFILE_SIZES[get_profile(profile)]


def main(argv: list[str] | None = None) -> None:
    datacli.build_splits(argv, description="Render Zero-1-to-3's views into data/cache/views/.", splits=SPLITS,
                         profile_sizes=PROFILE_SIZES, build=build, cache_dir=CACHE_DIR,
                         describe=lambda count, size: f"{count} objects × {VIEWS_PER_OBJECT} views at {size}×{size} px")
