"""Scenes of real 3D objects rendered by pybullet's CPU renderer: RGB, depth and one mask per object.

pybullet ships meshes in its ``pybullet_data`` package (a duck, a teddy bear, the Stanford bunny, a soccer ball, a
Lego brick, a mug … and 1000 procedurally generated "random URDF" objects). :class:`Renderer` connects to pybullet
in DIRECT mode (no window; the TinyRenderer rasteriser on the CPU), builds a :class:`Scene` (objects as
:class:`Placement`, on a ground plane under a sky) and renders it from a :class:`Camera` given in spherical
coordinates, under a :class:`Light`. The segmentation buffer says which body each pixel shows; it becomes an instance
map (0 = ground or sky, k = the k-th object of the scene). Everything random takes a ``numpy.random.Generator``, so a
seed fixes a scene exactly.

Conventions: z is up; lengths are metres; the camera's polar angle is measured from +z (0 looks straight down,
π/2 looks horizontally) and its azimuth about +z from +x; quaternions are pybullet's (x, y, z, w).
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import hashlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from helpers.course.deps import require

T = TypeVar("T")
R = TypeVar("R")

RANDOM_OBJECTS = 1000  # pybullet_data/random_urdfs/000 … 999


def _pybullet() -> Any:
    """Import pybullet, without the "pybullet build time: …" line its import writes to the process's stderr."""
    if sys.modules.get("pybullet") is not None:
        return sys.modules["pybullet"]
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to silence
        return require("pybullet", purpose="Rendering scenes")
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        return require("pybullet", purpose="Rendering scenes")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.cache
def data_path() -> Path:
    """The folder of meshes and textures that the ``pybullet`` wheel ships (``pybullet_data``)."""
    module = require("pybullet_data", package="pybullet", purpose="Rendering scenes")
    return Path(module.getDataPath())


# ----------------------------------------------------------------------------------------------------------- objects

@dataclass(frozen=True)
class ObjectSpec:
    """A mesh in pybullet_data and how to stand it up.

    ``upright``: Euler angles (roll, pitch, yaw; pybullet's convention) that turn the mesh onto its base with z up.
    ``aspect``: a non-uniform stretch applied before sizing (a Jenga block is a stretched cube).
    ``textured``: the mesh carries a texture; it is then tinted lightly instead of painted.
    ``tumble``: the object lies in any orientation (random blobs) instead of upright with a random turn about z.
    """

    name: str
    mesh: str
    upright: tuple[float, float, float] = (0.0, 0.0, 0.0)
    aspect: tuple[float, float, float] = (1.0, 1.0, 1.0)
    textured: bool = False
    tumble: bool = False

    @property
    def path(self) -> Path:
        return data_path() / self.mesh

    def vertices(self) -> np.ndarray:
        """The mesh's vertices (V, 3), centred on their bounding box and stretched by ``aspect``."""
        return _centred_vertices(str(self.path)) * np.asarray(self.aspect)

    def offset(self) -> np.ndarray:
        """The centre of the mesh's bounding box in the file's own coordinates."""
        return _bounding_box_centre(str(self.path))


_HALF_PI = math.pi / 2
NAMED_OBJECTS: dict[str, ObjectSpec] = {spec.name: spec for spec in (
    ObjectSpec("duck", "duck.obj", upright=(_HALF_PI, 0, 0), textured=True),
    ObjectSpec("teddy", "teddy2_VHACD_CHs.obj", upright=(_HALF_PI, 0, 0)),
    ObjectSpec("bunny", "bunny.obj", upright=(_HALF_PI, 0, 0)),
    ObjectSpec("soccerball", "soccerball.obj", textured=True),
    ObjectSpec("lego", "lego/lego.obj", upright=(_HALF_PI, 0, 0)),
    ObjectSpec("jenga", "jenga/jenga.obj", aspect=(1.0, 1 / 3, 1 / 5), textured=True),
    ObjectSpec("sphere", "sphere_smooth.obj"),
    ObjectSpec("checkerball", "textured_sphere_smooth.obj", textured=True),
    ObjectSpec("cube", "cube.obj", textured=True),
    ObjectSpec("mug", "objects/mug.obj"),
    ObjectSpec("torus", "torus/torus_textured.obj", upright=(_HALF_PI, 0, 0), textured=True),
    ObjectSpec("cylinder", "toys/cylinder.obj", upright=(0, _HALF_PI, 0)),
    ObjectSpec("prism", "toys/prism.obj"),
    ObjectSpec("domino", "domino/domino.obj", textured=True),
    ObjectSpec("stone", "stone.obj"),
    ObjectSpec("tray", "tray/tray_textured2.obj", textured=True),
)}


def random_object(index: int) -> ObjectSpec:
    """pybullet_data's procedurally generated object ``random_urdfs/NNN`` as ``random_NNN`` (0 ≤ index < 1000)."""
    if not 0 <= index < RANDOM_OBJECTS:
        raise ValueError(f"random object index must be in [0, {RANDOM_OBJECTS}), got {index}")
    return ObjectSpec(f"random_{index:03d}", f"random_urdfs/{index:03d}/{index:03d}.obj", tumble=True)


def get_object(name: str) -> ObjectSpec:
    """The :class:`ObjectSpec` called ``name``: one of :data:`NAMED_OBJECTS` or ``random_000`` … ``random_999``."""
    if name in NAMED_OBJECTS:
        return NAMED_OBJECTS[name]
    if name.startswith("random_") and name[7:].isdigit():
        return random_object(int(name[7:]))
    raise KeyError(f"unknown object {name!r}: use one of {', '.join(NAMED_OBJECTS)} or random_000 … random_999")


@functools.lru_cache(maxsize=2048)
def _read_obj_vertices(path: str) -> np.ndarray:
    """The mesh file's vertices (V, 3), read-only (they are cached)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        rows = [line.split()[1:4] for line in f if line.startswith("v ")]
    if not rows:
        raise ValueError(f"{path} has no vertices")
    vertices = np.asarray(rows, dtype=np.float64)
    vertices.flags.writeable = False
    return vertices


def _read_obj_triangles(path: str) -> np.ndarray:
    """The mesh's faces as triangles of 0-based vertex indices (F, 3); polygons are cut into fans."""
    triangles: list[list[int]] = []
    count = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("v "):
                count += 1
            elif line.startswith("f "):
                corners = [int(token.split("/")[0]) for token in line.split()[1:]]
                corners = [c - 1 if c > 0 else count + c for c in corners]  # OBJ counts from 1; −1 is the last
                triangles += [[corners[0], corners[k], corners[k + 1]] for k in range(1, len(corners) - 1)]
    if not triangles:
        raise ValueError(f"{path} has no faces")
    return np.asarray(triangles, dtype=np.int64)


def box_uv(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Texture coordinates by a box projection: each triangle takes the two coordinates of the plane it faces most
    (its normal's largest component picks the axis dropped), measured from the mesh's lowest corner in units of its
    largest side. vertices (V, 3), triangles (F, 3) → (F, 3, 2) in [0, 1], one (u, v) per corner."""
    v = np.asarray(vertices, dtype=np.float64)
    unit = (v - v.min(0)) / max(float(np.ptp(v, axis=0).max()), 1e-12)
    corners = v[triangles]  # (F, 3, 3)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    kept = np.array([[1, 2], [0, 2], [0, 1]])[np.abs(normals).argmax(1)]  # (F, 2): the axes that stay
    return np.take_along_axis(unit[triangles], kept[:, None, :].repeat(3, axis=1), axis=2)


def uv_mesh_text(spec: ObjectSpec) -> str:
    """``spec``'s mesh as OBJ text with :func:`box_uv` texture coordinates: the same vertices (so the same
    placement), the faces as triangles, one (u, v) per corner; no normals (pybullet computes them)."""
    path = str(spec.path)
    vertices, triangles = _read_obj_vertices(path), _read_obj_triangles(path)
    uv = box_uv(vertices * np.asarray(spec.aspect), triangles).reshape(-1, 2)
    corner = np.arange(1, len(uv) + 1).reshape(-1, 3)
    faces = np.stack([triangles + 1, corner], axis=-1).reshape(len(triangles), 6)
    with open(path, encoding="utf-8", errors="replace") as f:  # the vertices exactly as the file writes them
        lines = ["v " + " ".join(line.split()[1:4]) + "\n" for line in f if line.startswith("v ")]
    return ("".join(lines)
            + "vt %.5f %.5f\n" * len(uv) % tuple(uv.ravel().tolist())
            + "f %d/%d %d/%d %d/%d\n" * len(faces) % tuple(faces.ravel().tolist()))


@functools.lru_cache(maxsize=2048)
def _bounding_box_centre(path: str) -> np.ndarray:
    v = _read_obj_vertices(path)
    return (v.min(0) + v.max(0)) / 2


@functools.lru_cache(maxsize=2048)
def _centred_vertices(path: str) -> np.ndarray:
    return _read_obj_vertices(path) - _bounding_box_centre(path)


# ------------------------------------------------------------------------------------------------------ rotations

def quaternion_from_euler(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """pybullet's ``getQuaternionFromEuler``: rotate about x by roll, then y by pitch, then z by yaw; (x, y, z, w)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array([sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
                     cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy])


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation ``a ∘ b`` (first b, then a), quaternions as (x, y, z, w)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz])


def rotation_matrix(q: np.ndarray) -> np.ndarray:
    """The 3×3 rotation matrix of the unit quaternion ``q`` = (x, y, z, w)."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def random_orientation(spec: ObjectSpec, rng: np.random.Generator) -> np.ndarray:
    """Upright with a uniform turn about z, or (``spec.tumble``) a uniformly random rotation."""
    if spec.tumble:
        q = rng.normal(size=4)
        return q / np.linalg.norm(q)
    turn = quaternion_from_euler(0.0, 0.0, rng.uniform(0, 2 * math.pi))
    return quaternion_multiply(turn, quaternion_from_euler(*spec.upright))


# ------------------------------------------------------------------------------------------------------ placements

@dataclass(frozen=True)
class Placement:
    """One object in a scene: its mesh, where its bounding-box centre is, how it is turned, scaled and painted.

    ``texture``: an (n, n, 3) uint8 image wrapped onto the object (:func:`box_uv`: each face takes the texture
    on the plane it faces most, across the object's largest side), multiplied by ``colour``; None: the mesh's own
    look (its own texture, if it has one, tinted by ``colour``)."""

    spec: ObjectSpec
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    scale: tuple[float, float, float]
    colour: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    texture: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def world_vertices(self) -> np.ndarray:
        """The object's vertices in the world, (V, 3)."""
        local = self.spec.vertices() * (np.asarray(self.scale) / np.asarray(self.spec.aspect))
        return local @ rotation_matrix(np.asarray(self.orientation)).T + np.asarray(self.position)

    def radius(self) -> float:
        """The radius of the smallest sphere about ``position`` that holds the object."""
        return float(np.linalg.norm(self.world_vertices() - np.asarray(self.position), axis=1).max())

    def footprint(self) -> float:
        """The radius of the smallest vertical cylinder about ``position`` that holds the object (seen from above)."""
        return float(np.linalg.norm((self.world_vertices() - np.asarray(self.position))[:, :2], axis=1).max())

    def moved(self, xy: Sequence[float]) -> Placement:
        """The same object at another spot on the ground."""
        return dataclasses.replace(self, position=(float(xy[0]), float(xy[1]), self.position[2]))


def place(spec: ObjectSpec, size: float, xy: Sequence[float], orientation: np.ndarray,
          colour: Sequence[float] = (1.0, 1.0, 1.0, 1.0), texture: np.ndarray | None = None) -> Placement:
    """Scale ``spec`` so its largest side is ``size`` metres, turn it, and stand it on the ground (z = 0) at ``xy``;
    paint it ``colour`` (RGB or RGBA in [0, 1]) and wrap ``texture`` ((n, n, 3) uint8 or None) onto it."""
    if size <= 0:
        raise ValueError(f"size must be positive (metres), got {size}")
    vertices = spec.vertices()
    factor = size / float((vertices.max(0) - vertices.min(0)).max())
    rotated = (vertices * factor) @ rotation_matrix(orientation).T
    position = (float(xy[0]), float(xy[1]), float(-rotated[:, 2].min()))
    scale = tuple(float(factor * a) for a in spec.aspect)
    rgba = tuple(float(c) for c in colour)
    if len(rgba) == 3:
        rgba = (*rgba, 1.0)
    return Placement(spec, position, tuple(float(q) for q in orientation), scale, rgba,
                     None if texture is None else _check_texture(texture))


def random_colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.25, 1.0),
                  value: tuple[float, float] = (0.35, 1.0)) -> tuple[float, float, float]:
    """A colour of uniformly random hue, with saturation and value drawn from the given ranges; RGB in [0, 1]."""
    return colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))


def random_paint(spec: ObjectSpec, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A random RGBA for ``spec``: a full colour for a plain mesh, a light tint (texture stays readable) otherwise."""
    rgb = np.asarray(random_colour(rng))
    if spec.textured:
        rgb = 1 - rng.uniform(0.0, 0.5) * (1 - rgb)
    return (*(float(c) for c in rgb), 1.0)


# -------------------------------------------------------------------------------------------- camera, light, scene

def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World → camera (4, 4) for a camera at ``eye`` looking at ``target`` with z up (x up if it looks straight
    down or up), OpenGL's convention: the camera looks down its −z axis."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:
        right = np.cross(forward, [1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    view = np.eye(4)
    view[0, :3], view[1, :3], view[2, :3] = right, up, -forward
    view[:3, 3] = -view[:3, :3] @ eye
    return view


@dataclass(frozen=True)
class Camera:
    """A pinhole camera on a sphere about ``target``, looking at it with z up.

    ``polar`` (radians, from +z), ``azimuth`` (radians, about +z from +x), ``radius`` (metres); ``fov`` is the
    vertical field of view in degrees. This is the spherical pose that Zero-1-to-3 conditions on.
    """

    polar: float
    azimuth: float
    radius: float
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fov: float = 45.0
    near: float = 0.02
    far: float = 100.0

    def __post_init__(self) -> None:
        if not 0 < self.polar < math.pi:
            raise ValueError(f"polar must be in (0, π) radians (0 looks straight down the up axis), got {self.polar}")
        if self.radius <= 0 or not 0 < self.fov < 180 or not 0 < self.near < self.far:
            raise ValueError(f"need radius > 0, 0 < fov < 180 degrees and 0 < near < far; got radius={self.radius}, "
                             f"fov={self.fov}, near={self.near}, far={self.far}")

    def eye(self) -> np.ndarray:
        """The camera's position in the world."""
        s = math.sin(self.polar)
        direction = np.array([s * math.cos(self.azimuth), s * math.sin(self.azimuth), math.cos(self.polar)])
        return np.asarray(self.target, dtype=np.float64) + self.radius * direction

    def view_matrix(self) -> np.ndarray:
        """World → camera (4, 4), OpenGL's convention: the camera looks down its −z axis, y is up in the image."""
        return look_at(self.eye(), np.asarray(self.target, dtype=np.float64))

    def pose(self) -> np.ndarray:
        """Camera → world (4, 4): the inverse of :meth:`view_matrix`."""
        return np.linalg.inv(self.view_matrix())

    def projection_matrix(self, aspect: float = 1.0) -> np.ndarray:
        """Camera → clip space (4, 4), OpenGL's perspective matrix for width/height ``aspect``."""
        f = 1 / math.tan(math.radians(self.fov) / 2)
        n, fa = self.near, self.far
        return np.array([[f / aspect, 0, 0, 0], [0, f, 0, 0],
                         [0, 0, (fa + n) / (n - fa), 2 * fa * n / (n - fa)], [0, 0, -1, 0]])

    def focal_length(self, height: int) -> float:
        """The focal length in pixels for an image ``height`` pixels tall."""
        return height / 2 / math.tan(math.radians(self.fov) / 2)


@dataclass(frozen=True)
class Light:
    """A directional light: ``direction`` points from the scene towards the light; ``colour`` is RGB in [0, 1].

    ``shadow``: the objects cast shadows, onto the ground and onto each other: where the light is blocked, a pixel
    keeps only its ambient light (a shadow map, :meth:`Renderer.render`). TinyRenderer's own shadows are not used:
    they only take a fifth of the diffuse light away."""

    direction: tuple[float, float, float] = (0.5, -0.3, 1.0)
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.5
    diffuse: float = 0.6
    specular: float = 0.2
    shadow: bool = False


@dataclass(frozen=True)
class Background:
    """The ground plane (a colour, or a tiled texture tinted by it) and the sky behind it.

    The ground is pybullet_data's ``plane.obj``, 15 tiles a side: ``tile`` metres a tile, 15·tile metres across;
    ``plane=False`` leaves it out (objects float in front of the sky alone, as Zero-1-to-3 renders them).
    ``texture``: an image file (a name in pybullet_data, or a path) or an (n, n, 3) uint8 image, repeated once per
    tile. ``sky`` is the colour at the top of the image; it fades towards ``horizon`` lower down.
    """

    ground: tuple[float, float, float] = (0.6, 0.6, 0.6)
    texture: str | np.ndarray | None = field(default=None, compare=False)
    tile: float = 0.4
    sky: tuple[float, float, float] = (0.55, 0.7, 0.9)
    horizon: tuple[float, float, float] = (0.9, 0.9, 0.9)
    plane: bool = True


@dataclass(frozen=True)
class Scene:
    """Objects on a background. Instance k (1-based) in every rendering is ``objects[k - 1]``."""

    objects: tuple[Placement, ...]
    background: Background = field(default_factory=Background)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]


GROUND_TEXTURES: dict[str, tuple[float, float]] = {  # texture in pybullet_data → range of tile sizes (metres)
    "checker_blue.png": (0.2, 0.6),
    "checker_huge.gif": (0.6, 1.5),
    "checker_grid.jpg": (0.5, 1.2),
    "colors16.png": (0.4, 1.0),
    "tex256.png": (0.4, 1.0),
    "table/table.png": (0.4, 0.8),
    "tray/tray.jpg": (0.3, 0.8),
}


def random_background(rng: np.random.Generator, textured: float = 0.5) -> Background:
    """A plain ground of random colour or (probability ``textured``) a tiled, tinted texture; a random sky."""
    sky = random_colour(rng, saturation=(0.0, 0.6), value=(0.5, 1.0))
    horizon = tuple(float(0.5 * (c + 1)) for c in sky)
    if rng.uniform() < textured:
        names = sorted(GROUND_TEXTURES)
        texture = names[int(rng.integers(len(names)))]
        tint = 1 - rng.uniform(0.0, 0.6) * (1 - np.asarray(random_colour(rng)))
        return Background(tuple(float(c) for c in tint), texture, float(rng.uniform(*GROUND_TEXTURES[texture])),
                          sky, horizon)
    return Background(random_colour(rng, saturation=(0.0, 0.7), value=(0.25, 0.95)), None,
                      float(rng.uniform(0.2, 0.6)), sky, horizon)


def random_light(rng: np.random.Generator, ambient: tuple[float, float] = (0.35, 0.7),
                 diffuse: tuple[float, float] = (0.3, 0.7), shadow: bool = False) -> Light:
    """A light from a random direction in the upper sky, slightly warm or cool, with random strengths drawn from
    the ranges given (specular from [0, 0.4]); ``shadow``: it casts shadows."""
    polar, azimuth = rng.uniform(0, math.radians(65)), rng.uniform(0, 2 * math.pi)
    direction = (math.sin(polar) * math.cos(azimuth), math.sin(polar) * math.sin(azimuth), math.cos(polar))
    colour = 1 - rng.uniform(0.0, 0.25) * (1 - np.asarray(random_colour(rng)))
    return Light(direction, tuple(float(c) for c in colour), ambient=float(rng.uniform(*ambient)),
                 diffuse=float(rng.uniform(*diffuse)), specular=float(rng.uniform(0.0, 0.4)), shadow=shadow)


def random_camera(rng: np.random.Generator, target: Sequence[float], extent: float,
                  polar: tuple[float, float] = (math.radians(15), math.radians(75)),
                  fov: tuple[float, float] = (35.0, 60.0), zoom: tuple[float, float] = (0.95, 1.35)) -> Camera:
    """A camera on a random point of the sphere about ``target``, far enough that a ball of radius ``extent``
    about the target fills the view (``zoom`` > 1 leaves a margin, < 1 crops)."""
    fov_deg = float(rng.uniform(*fov))
    radius = extent / math.sin(math.radians(fov_deg) / 2) * float(rng.uniform(*zoom))
    return Camera(float(rng.uniform(*polar)), float(rng.uniform(0, 2 * math.pi)), radius,
                  tuple(float(t) for t in target), fov_deg)


# -------------------------------------------------------------------------------------------------------- renderer

@dataclass
class Rendering:
    """One view: ``rgb`` (H, W, 3) uint8, ``depth`` (H, W) float32 metres along the view axis (inf where nothing
    was hit), ``instances`` (H, W) int32 (0 = ground or sky, k = ``names[k - 1]``)."""

    rgb: np.ndarray
    depth: np.ndarray
    instances: np.ndarray
    names: list[str]

    def masks(self) -> np.ndarray:
        """One boolean mask per object, (K, H, W)."""
        return self.instances[None] == np.arange(1, len(self.names) + 1)[:, None, None]

    def pixel_counts(self) -> np.ndarray:
        """How many pixels each object covers, (K,)."""
        return np.bincount(self.instances.ravel(), minlength=len(self.names) + 1)[1:len(self.names) + 1]


def _majority(blocks: np.ndarray) -> np.ndarray:
    """The most frequent value of each block, blocks: (H, W, n); ties go to the earliest sample."""
    votes = (blocks[..., :, None] == blocks[..., None, :]).sum(-1)
    return np.take_along_axis(blocks, votes.argmax(-1)[..., None], -1)[..., 0]


def _check_texture(texture: Any) -> np.ndarray:
    if not (isinstance(texture, np.ndarray) and texture.ndim == 3 and texture.shape[-1] == 3
            and texture.dtype == np.uint8 and min(texture.shape[:2]) >= 1):
        got = f"{getattr(texture, 'shape', type(texture).__name__)} {getattr(texture, 'dtype', '')}".rstrip()
        raise ValueError(f"texture: expected an (n, n, 3) uint8 RGB image, got {got}")
    return texture


class Renderer:
    """A pybullet client in DIRECT mode (CPU rendering, no window); build a scene, then render views of it.

    >>> with Renderer() as renderer:
    ...     renderer.build(scene)
    ...     view = renderer.render(camera, light, size=128)

    Textures given as images and the texture-mapped copies of meshes are written to a folder of the renderer's own
    (removed by :meth:`close`); pybullet keeps every texture it loaded until it disconnects, so the renderer
    connects afresh once it has loaded more than ``TEXTURE_LIMIT`` of them.
    """

    TEXTURE_LIMIT = 2000
    SHADOW_MAP = 256  # pixels a side of the shadow map

    def __init__(self) -> None:
        self._p = _pybullet()
        self.client: int = self._p.connect(self._p.DIRECT)
        self.scene: Scene | None = None
        self._bodies: list[int] = []
        self._folder = Path(tempfile.mkdtemp(prefix="course-render-"))
        self._textures: dict[str, int] = {}  # file → pybullet's texture id, in the scene built last
        self._loaded = 0  # textures loaded on this connection
        self._meshes: dict[str, Path] = {}  # object name → its texture-mapped mesh file

    def close(self) -> None:
        if self.client >= 0:
            self._p.disconnect(physicsClientId=self.client)
            self.client = -1
            shutil.rmtree(self._folder, ignore_errors=True)

    def _texture(self, texture: str | np.ndarray) -> int:
        """pybullet's id of a texture: a file (a name in pybullet_data, or a path) or an image written to a file
        named after its content (pybullet keeps a texture by its file's name)."""
        if isinstance(texture, str):
            path = data_path() / texture
        else:
            Image = require("PIL.Image", package="pillow", purpose="Textures")  # noqa: N806
            image = _check_texture(texture)
            path = self._folder / f"{hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()}.png"
            if not path.is_file():
                Image.fromarray(image).save(path, compress_level=1)
        key = str(path)
        if key not in self._textures:
            self._textures[key] = self._p.loadTexture(key, physicsClientId=self.client)
            self._loaded += 1
        return self._textures[key]

    def _uv_mesh(self, spec: ObjectSpec) -> Path:
        if spec.name not in self._meshes:
            path = self._folder / f"{spec.name}.obj"
            path.write_text(uv_mesh_text(spec))
            self._meshes[spec.name] = path
        return self._meshes[spec.name]

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _body(self, shape: int, position: Sequence[float], orientation: Sequence[float] = (0, 0, 0, 1)) -> int:
        return self._p.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, basePosition=list(position),
                                       baseOrientation=list(orientation), physicsClientId=self.client)

    def build(self, scene: Scene) -> None:
        """Clear the simulation and load ``scene``'s ground and objects."""
        p, cid = self._p, self.client
        if cid < 0:
            raise RuntimeError("this Renderer was closed; make a new one")
        if self._loaded > self.TEXTURE_LIMIT:  # free pybullet's textures: a new connection
            p.disconnect(physicsClientId=cid)
            self.client = cid = p.connect(p.DIRECT)
            self._loaded = 0
        p.resetSimulation(physicsClientId=cid)
        self._textures = {}  # a reset forgets the ids (not the images: pybullet keeps those by file name)
        bg = scene.background
        if bg.plane:
            ground = p.createVisualShape(p.GEOM_MESH, fileName=str(data_path() / "plane.obj"),
                                         meshScale=[bg.tile / 2, bg.tile / 2, 1.0], rgbaColor=[*bg.ground, 1.0],
                                         physicsClientId=cid)
            ground_id = self._body(ground, (0.0, 0.0, 0.0))
            texture = -1 if bg.texture is None else self._texture(bg.texture)
            p.changeVisualShape(ground_id, -1, textureUniqueId=texture, physicsClientId=cid)
        self._bodies = []
        for obj in scene.objects:
            scale = np.asarray(obj.scale)
            mesh = obj.spec.path if obj.texture is None else self._uv_mesh(obj.spec)
            shape = p.createVisualShape(p.GEOM_MESH, fileName=str(mesh), meshScale=scale.tolist(),
                                        rgbaColor=list(obj.colour),
                                        visualFramePosition=(-obj.spec.offset() * scale).tolist(),
                                        physicsClientId=cid)
            body = self._body(shape, obj.position, obj.orientation)
            if obj.texture is not None:
                p.changeVisualShape(body, -1, textureUniqueId=self._texture(obj.texture), physicsClientId=cid)
            self._bodies.append(body)
        self.scene = scene

    def render(self, camera: Camera, light: Light | None = None, size: int | tuple[int, int] = 128,
               supersample: int = 1) -> Rendering:
        """Render the built scene: ``size`` is the side of a square image or (height, width).

        ``supersample`` > 1 renders that many times larger and averages blocks (smoother edges and textures);
        the instance map takes each block's most frequent id.
        """
        if self.scene is None:
            raise RuntimeError("build(scene) before render()")
        height, width = (size, size) if isinstance(size, int) else size
        if height < 1 or width < 1 or supersample < 1:
            raise ValueError(f"size must be positive (height, width) and supersample ≥ 1, got {size}, {supersample}")
        light = light or Light()
        s = supersample
        H, W = height * s, width * s
        rgb, depth_buffer, seg = self._draw(camera.view_matrix(), camera.projection_matrix(W / H), (H, W), light)
        depth = camera.far * camera.near / (camera.far - (camera.far - camera.near) * depth_buffer)
        sky = seg < 0
        depth[sky] = np.inf
        if light.shadow and self.scene.objects:
            dark, _, _ = self._draw(camera.view_matrix(), camera.projection_matrix(W / H), (H, W),
                                    dataclasses.replace(light, diffuse=0.0, specular=0.0))  # the ambient light alone
            shade = self._shadow(camera, light, depth, every=s)
            rgb = rgb - shade[..., None] * (rgb - dark)
        bg = self.scene.background
        fade = np.linspace(0.0, 1.0, H)[:, None, None] ** 0.7
        sky_colour = 255 * ((1 - fade) * np.asarray(bg.sky) + fade * np.asarray(bg.horizon))
        rgb = np.where(sky[..., None], np.broadcast_to(sky_colour, (H, W, 3)), rgb)
        lookup = np.zeros(max(self._bodies, default=0) + 2, dtype=np.int32)  # index: body id + 1 (sky is −1)
        for k, body in enumerate(self._bodies, start=1):
            lookup[body + 1] = k
        instances = lookup[seg + 1]
        if s > 1:
            rgb = rgb.reshape(height, s, width, s, 3).mean(axis=(1, 3))
            depth = depth.reshape(height, s, width, s).min(axis=(1, 3))
            blocks = instances.reshape(height, s, width, s).transpose(0, 2, 1, 3).reshape(height, width, s * s)
            instances = _majority(blocks)
        return Rendering(np.rint(rgb).astype(np.uint8), depth.astype(np.float32), instances.astype(np.int32),
                         self.scene.names)


    def _draw(self, view: np.ndarray, projection: np.ndarray, shape: tuple[int, int],
              light: Light) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One TinyRenderer image: RGB (H, W, 3) float32, the depth buffer (H, W) in [0, 1], pybullet's body ids."""
        p, (H, W) = self._p, shape
        _, _, rgba, depth_buffer, seg = p.getCameraImage(
            W, H, viewMatrix=view.T.ravel().tolist(), projectionMatrix=projection.T.ravel().tolist(),
            lightDirection=list(light.direction), lightColor=list(light.colour),
            lightAmbientCoeff=light.ambient, lightDiffuseCoeff=light.diffuse, lightSpecularCoeff=light.specular,
            shadow=0, renderer=p.ER_TINY_RENDERER, physicsClientId=self.client)
        return (np.asarray(rgba, dtype=np.uint8).reshape(H, W, 4)[..., :3].astype(np.float32),
                np.asarray(depth_buffer, dtype=np.float64).reshape(H, W),
                np.asarray(seg, dtype=np.int64).reshape(H, W))

    def _shadow(self, camera: Camera, light: Light, depth: np.ndarray, every: int = 1) -> np.ndarray:
        """How much of each pixel lies in shadow, (H, W) in [0, 1]: a shadow map, tested at every ``every``-th
        pixel of each row and column and repeated over each ``every`` × ``every`` block.

        The scene is seen from the light: a camera far along the light's direction (20 times the radius of the ball
        that holds the objects, so its rays are nearly parallel) frames that ball in ``SHADOW_MAP`` pixels a side.
        A pixel of the view is in shadow where its point in the world lies farther from the light than what the
        light sees there. The test is made at 3 × 3 neighbouring places of the map and averaged (soft edges)."""
        assert self.scene is not None
        points = np.concatenate([o.world_vertices() for o in self.scene.objects])
        centre = (points.min(0) + points.max(0)) / 2
        radius = float(np.linalg.norm(points - centre, axis=1).max()) * 1.05
        dx, dy, dz = np.asarray(light.direction, dtype=np.float64) / np.linalg.norm(light.direction)
        polar = min(max(math.acos(dz), 1e-6), math.pi - 1e-6)
        sun = Camera(polar, math.atan2(dy, dx), 20 * radius, tuple(centre.tolist()),
                     fov=math.degrees(2 * math.asin(1 / 20)), near=18 * radius, far=20 * radius + 100.0)
        view = sun.view_matrix()
        n = self.SHADOW_MAP
        _, map_buffer, _ = self._draw(view, sun.projection_matrix(), (n, n), Light())
        blocker = sun.far * sun.near / (sun.far - (sun.far - sun.near) * map_buffer)  # along the light's axis
        H, W = depth.shape
        seen = np.isfinite(depth[::every, ::every])
        half = math.tan(math.radians(camera.fov) / 2)
        rows, cols = (every * index for index in np.nonzero(seen))
        x = (2 * (cols + 0.5) / W - 1) * half * W / H
        y = (1 - 2 * (rows + 0.5) / H) * half
        d = depth[rows, cols]
        world = camera.pose() @ np.stack([x * d, y * d, -d, np.ones_like(d)])  # (4, P)
        local = view @ world
        distance = -local[2]
        focal = 1 / math.tan(math.radians(sun.fov) / 2)
        u = (local[0] * focal / distance + 1) / 2 * n - 0.5
        v = (1 - local[1] * focal / distance) / 2 * n - 0.5
        bias = 4 * radius / n + 0.01 * radius  # about two texels of slope, and a little more
        shadowed = np.zeros(len(d))
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                iu, iv = np.rint(u + du).astype(int), np.rint(v + dv).astype(int)
                inside = (iu >= 0) & (iu < n) & (iv >= 0) & (iv < n)
                hit = np.zeros(len(d), dtype=bool)
                hit[inside] = blocker[iv[inside], iu[inside]] < distance[inside] - bias
                shadowed += hit
        shade = np.zeros(seen.shape)
        shade[seen] = shadowed / 9
        return np.repeat(np.repeat(shade, every, axis=0), every, axis=1)[:H, :W]


@functools.cache
def _process_renderer(pid: int) -> Renderer:
    return Renderer()


def shared_renderer() -> Renderer:
    """One :class:`Renderer` per process, made on first use (worker processes each get their own)."""
    return _process_renderer(os.getpid())


# -------------------------------------------------------------------------------------------------- process pool

_TASK: Callable[[Any], Any] | None = None


def _run_task(item: Any) -> Any:
    assert _TASK is not None
    return _TASK(item)


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 2, progress: str | None = None) -> list[R]:
    """``[fn(x) for x in items]`` in ``workers`` forked processes, in order; serial where fork is unavailable.

    ``fn`` need not be picklable (the workers inherit it when they fork); its arguments and results must be.
    Results depend only on each item, so they are the same for any number of workers. ``progress``: a tqdm label.
    """
    import multiprocessing as mp

    from tqdm.auto import tqdm

    items = list(items)
    bar = functools.partial(tqdm, total=len(items), desc=progress, disable=progress is None, leave=False)
    if workers <= 1 or len(items) < 2 or "fork" not in mp.get_all_start_methods():
        return [fn(x) for x in bar(items)]
    global _TASK
    _TASK = fn
    try:
        with mp.get_context("fork").Pool(min(workers, len(items))) as pool:
            return list(bar(pool.imap(_run_task, items, chunksize=max(1, min(16, len(items) // (8 * workers))))))
    finally:
        _TASK = None
