"""The SAM data set: rendered scenes of 2–6 real 3D objects, each image with its instance map.

Each sample is an image (H, W, 3) uint8 and an instance map (H, W) uint8 (0 = ground or sky, k = the k-th object)
with the objects' names, their pixel counts and the camera. The objects are pybullet_data's meshes
(:mod:`helpers.common.render`):
sixteen named ones (duck, teddy, bunny, …) and the 1000 procedurally generated ``random_urdfs``. Every object covers
at least MIN_FRACTION of the image: views where one is clipped away or hidden behind another are drawn again.

Splits. ``train`` and ``val`` differ in their scenes *and* in their objects: val scenes are drawn from their own
seed stream, with objects that train never shows (VAL_NAMED and random_900 … random_999). Sample i of a split
depends only on (seed, split, i), so a larger build starts with the same scenes as a smaller one, and the result
does not depend on the number of worker processes.

    python data/sam/scenes.py --profile cpu     # writes what the cpu profile needs to data/cache/scenes/
    python data/sam/scenes.py --split val --count 16 --size 64

In a notebook: ``from helpers.sam import scenes`` then ``scenes.load("train", 600, 128)``.

``photographs()`` returns a few real photographs shipped with scikit-image (no masks), for qualitative demos.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np

from helpers.common import datacli, npz, render, textures
from helpers.course.deps import require
from helpers.paths import DATA_DIR
from helpers.profile import get_profile

VERSION = 2  # bump when the generator changes: cached files carry it in their name
CACHE_DIR = DATA_DIR / "cache" / "scenes"

SPLITS = ("train", "val")
SPLIT_STREAMS = {"train": 0, "val": 1}  # the SeedSequence entropy that keeps the splits' scenes apart
VAL_NAMED = ("teddy", "mug", "torus")  # held out: never in a train scene
VAL_RANDOM = range(900, render.RANDOM_OBJECTS)  # random_900 … random_999 held out too
PROFILE_SIZES = {  # profile → split → (count, image size in pixels)
    "smoke": {"train": (64, 64), "val": (16, 64)},
    "cpu": {"train": (600, 128), "val": (100, 128)},
    "gpu": {"train": (3000, 128), "val": (300, 128)},
}
MAX_OBJECTS = 6
OBJECTS_PER_SCENE = (2, MAX_OBJECTS)
OBJECT_SIZE = (0.2, 0.45)  # the largest side of an object, metres
NAMED_SHARE = 0.5  # chance that an object slot takes a named object rather than a random blob
MIN_FRACTION = 0.02  # each object covers at least 2 % of the image
SUPERSAMPLE = 2  # render 2×2 larger and average: smooth edges and textures
PROBE_SIZE, PROBE_SHARE = 48, 0.7  # a view is rendered in full only if a 48-px probe shows every object at 70 % …
PALETTE_SIZE = (3, 5)  # colours per scene, shared by the ground's and the objects' textures
PALETTE_DISTANCE = 0.35  # RGB distance between any two colours of a palette, at least
TEXTURE_SIZE = 64  # pixels a side of each procedural texture
OBJECT_FREQUENCY = (1.5, 4.0)  # pattern repeats across an object's largest side
GROUND_FREQUENCY = (1.0, 4.0)  # pattern repeats across a ground tile
GROUND_TILE = (0.3, 1.0)  # metres a side of a ground tile
AMBIENT, DIFFUSE = (0.25, 0.55), (0.45, 0.85)  # the light's strengths: ranges; it casts shadows
ZOOM = (0.6, 1.1)  # the camera frames the ball that holds every object, times this (< 1 crops it)
VIEWS_PER_LAYOUT, LAYOUTS = 6, 20
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket")


def split_objects(split: str) -> tuple[list[str], list[str]]:
    """The named and the random objects that ``split``'s scenes use; the two splits share none."""
    _check_split(split)
    held_out = split == "val"
    named = [n for n in render.NAMED_OBJECTS if (n in VAL_NAMED) == held_out]
    randoms = [f"random_{i:03d}" for i in range(render.RANDOM_OBJECTS) if (i in VAL_RANDOM) == held_out]
    return named, randoms


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def scene_rng(split: str, index: int, seed: int) -> np.random.Generator:
    """The random stream of sample ``index`` of ``split``: independent of every other sample and split."""
    _check_split(split)
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_STREAMS[split], index]))


def random_palette(rng: np.random.Generator) -> np.ndarray:
    """The few colours (C, 3) RGB in [0, 1] that a scene's textures, ground and objects alike, are drawn from; any
    two lie at least PALETTE_DISTANCE apart (Euclidean, in RGB), so that every pattern shows."""
    colours: list[np.ndarray] = []
    count = int(rng.integers(PALETTE_SIZE[0], PALETTE_SIZE[1] + 1))
    while len(colours) < count:
        colour = np.asarray(render.random_colour(rng, saturation=(0.15, 1.0), value=(0.3, 1.0)))
        if all(np.linalg.norm(colour - c) >= PALETTE_DISTANCE for c in colours):
            colours.append(colour)
    return np.array(colours)


def random_scene_texture(rng: np.random.Generator, palette: np.ndarray, frequency: tuple[float, float]) -> np.ndarray:
    """A procedural texture (:mod:`helpers.common.textures`) in one to three of the palette's colours."""
    count = int(rng.integers(2, min(3, len(palette)) + 1))
    colours = palette[rng.choice(len(palette), size=count, replace=False)]
    kinds = [k for k in textures.KINDS if k != "plain"]
    return textures.random_texture(rng, colours, TEXTURE_SIZE, frequency, kinds)


def random_layout(rng: np.random.Generator, split: str) -> render.Scene:
    """2–6 distinct objects of the split, sized, turned and textured at random, standing apart on a textured
    ground; the textures share a few colours."""
    palette = random_palette(rng)
    named, randoms = split_objects(split)
    count = int(rng.integers(OBJECTS_PER_SCENE[0], OBJECTS_PER_SCENE[1] + 1))
    names: list[str] = []
    while len(names) < count:
        pool = named if rng.uniform() < NAMED_SHARE else randoms
        pick = pool[int(rng.integers(len(pool)))]
        if pick not in names:
            names.append(pick)
    placements: list[render.Placement] = []
    footprints: list[float] = []
    spread = 0.2 * math.sqrt(count)
    for name in names:
        spec = render.get_object(name)
        size = float(rng.uniform(*OBJECT_SIZE))
        obj = render.place(spec, size, (0.0, 0.0), render.random_orientation(spec, rng),
                           texture=random_scene_texture(rng, palette, OBJECT_FREQUENCY))
        footprint = obj.footprint()
        for attempt in range(400):  # a free spot: footprints do not overlap; the area grows if it is crowded
            r, angle = spread * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            xy = (r * math.cos(angle), r * math.sin(angle))
            if all(math.dist(xy, o.position[:2]) >= footprint + f for o, f in zip(placements, footprints, strict=True)):
                break
            if attempt % 20 == 19:
                spread *= 1.1
        placements.append(obj.moved(xy))
        footprints.append(footprint)
    sky = render.random_colour(rng, saturation=(0.0, 0.6), value=(0.5, 1.0))
    ground = render.Background((1.0, 1.0, 1.0), random_scene_texture(rng, palette, GROUND_FREQUENCY),
                               float(rng.uniform(*GROUND_TILE)), sky, tuple(float(0.5 * (c + 1)) for c in sky))
    return render.Scene(tuple(placements), ground)


def _aim(scene: render.Scene) -> tuple[np.ndarray, float]:
    """The point the camera looks at (the objects' centre) and the radius of a ball about it that holds them all."""
    points = np.concatenate([o.world_vertices() for o in scene.objects])
    target = (points.min(0) + points.max(0)) / 2
    return target, float(np.linalg.norm(points - target, axis=1).max())


def make_sample(split: str, index: int, seed: int, image_size: int) -> dict:
    """Sample ``index`` of ``split``: a layout and a camera whose view shows every object (≥ MIN_FRACTION)."""
    rng = scene_rng(split, index, seed)
    renderer = render.shared_renderer()
    min_pixels = MIN_FRACTION * image_size * image_size
    for _ in range(LAYOUTS):
        scene = random_layout(rng, split)
        renderer.build(scene)
        target, extent = _aim(scene)
        for _ in range(VIEWS_PER_LAYOUT):
            camera = render.random_camera(rng, target, extent, zoom=ZOOM)
            light = render.random_light(rng, ambient=AMBIENT, diffuse=DIFFUSE, shadow=True)
            probe = renderer.render(camera, size=PROBE_SIZE)  # cheap: small, no shadow, no supersampling
            if probe.pixel_counts().min() < PROBE_SHARE * MIN_FRACTION * PROBE_SIZE * PROBE_SIZE:
                continue
            view = renderer.render(camera, light, image_size, supersample=SUPERSAMPLE)
            counts = view.pixel_counts()
            if counts.min() >= min_pixels:
                return {"image": view.rgb, "mask": view.instances.astype(np.uint8), "names": view.names,
                        "pixels": counts,
                        "camera": np.array([camera.polar, camera.azimuth, camera.radius, camera.fov, *camera.target])}
    raise RuntimeError(f"no view of {split} sample {index} (seed {seed}) shows every object; "
                       f"MIN_FRACTION={MIN_FRACTION} may be too strict for {image_size}px images")


def cache_path(split: str, count: int, image_size: int, seed: int = 0, cache_dir: Path = CACHE_DIR) -> Path:
    """Where ``build`` writes this split: one file per split, count, size, seed and generator version."""
    return Path(cache_dir) / f"{split}_{count}x{image_size}px_seed{seed}_v{VERSION}.npz"


def default_workers() -> int:
    """Worker processes for rendering: the CPU cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def build(split: str, count: int, image_size: int, seed: int = 0, *, workers: int | None = None,
          cache_dir: Path = CACHE_DIR, progress: bool = True, force: bool = False) -> Path:
    """Render ``count`` samples of ``split`` at ``image_size``² pixels into a compressed .npz; return its path.

    An existing file is reused unless ``force``; ``workers`` processes render (default: :func:`default_workers`).
    Arrays: images (N, H, W, 3) uint8, masks (N, H, W) uint8, names (N, 6) str ('' past the last object),
    counts (N,), pixels (N, 6) per-object pixel counts, cameras (N, 7) float32 (polar, azimuth, radius,
    fov in degrees, target x, y, z).
    """
    _check_split(split)
    if count < 1 or image_size < 16:
        raise ValueError(f"need count ≥ 1 and image_size ≥ 16 pixels, got count={count}, image_size={image_size}")
    path = cache_path(split, count, image_size, seed, cache_dir)
    if path.is_file() and not force:
        return path
    make = functools.partial(make_sample, split, seed=seed, image_size=image_size)
    samples = render.parallel_map(make, range(count), workers=workers or default_workers(),
                                  progress=f"rendering {split} scenes" if progress else None)
    names = np.full((count, MAX_OBJECTS), "", dtype="<U16")
    pixels = np.zeros((count, MAX_OBJECTS), dtype=np.int32)
    for i, s in enumerate(samples):
        names[i, :len(s["names"])] = s["names"]
        pixels[i, :len(s["pixels"])] = s["pixels"]
    arrays = {
        "images": np.stack([s["image"] for s in samples]),
        "masks": np.stack([s["mask"] for s in samples]),
        "names": names,
        "counts": np.array([len(s["names"]) for s in samples], dtype=np.int64),
        "pixels": pixels,
        "cameras": np.stack([s["camera"] for s in samples]).astype(np.float32),
    }
    return npz.save(path, arrays)


def load(split: str, count: int, image_size: int, seed: int = 0, *, cache_dir: Path = CACHE_DIR,
         workers: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``build(split, count, image_size, seed)``, building them on first use."""
    path = build(split, count, image_size, seed, workers=workers, cache_dir=cache_dir)
    return npz.load(path)


def profile_sizes(profile: str | None = None) -> dict[str, tuple[int, int]]:
    """split → (count, image size) for a run profile (default: $COURSE_PROFILE, else by hardware)."""
    return PROFILE_SIZES[get_profile(profile)]


def photographs(size: int | None = None) -> dict[str, np.ndarray]:
    """Real photographs from scikit-image (no masks): name → (H, W, 3) uint8; ``size``: centre-crop, resize square."""
    skdata = require("skimage.data", package="scikit-image", purpose="The photographs")
    images = {name: getattr(skdata, name)() for name in PHOTOGRAPHS}
    if size is None:
        return images
    transform = require("skimage.transform", package="scikit-image", purpose="The photographs")
    out = {}
    for name, image in images.items():
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = image[top:top + side, left:left + side]
        resized = transform.resize(square, (size, size), order=1, anti_aliasing=True, preserve_range=True)
        out[name] = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return out


def main(argv: list[str] | None = None) -> None:
    datacli.build_splits(argv, description="Render the SAM scenes into data/cache/scenes/.", splits=SPLITS,
                         profile_sizes=PROFILE_SIZES, build=build, cache_dir=CACHE_DIR, default_workers=None,
                         describe=lambda count, size: f"{count} scenes at {size}×{size} px")
