"""A procedurally generated AeBAD-like dataset, written in the published AeBAD-S and AeBAD-V layouts.

    python -m mmr_jax.data.synthetic --out data/synthetic --seed 0 [--size tiny|small|large]

AeBAD_S: one turbine blade per image (airfoil with a tilted tip, platform and root block, shaded by a
directional light, brushed texture), not aligned: varying scale, position and angle, on black and gray
backgrounds for training. Test domains shift what the paper's do:
  same          the training distribution;
  background    blue-gray cloth and a wooden bench instead of black / gray;
  illumination  light from the other side, over- or under-exposure, a colour cast, another gamma;
  view          the blade turned by 15-30° (training: up to 12°), foreshortened or closer, often mirrored.
Each domain holds `good` and the four AeBAD defect kinds, from large to thin, with pixel masks:
  breakdown     a chunk missing at the edge (the background shows through),
  ablation      a burnt, discoloured patch,
  fracture      a dark, jagged crack running in from the edge,
  groove        a thin scratch (dark groove with a bright lip).
Within each test folder the scene's either-or choices (which background, over- or under-exposure, viewpoint)
alternate with the image index, so that no scene property is confounded with the label.
AeBAD_V: frames of a rotating disk of blades; training sequences from two viewpoints (all blades good), three
test videos from three other viewpoints in which some blades are defective. A frame is anomalous when a
defect is visible in its centre crop (frames where one is barely visible are left out, as ambiguous).

Everything is a function of (seed, image): the same seed writes the same files, whatever the worker count.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import math
import multiprocessing
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np
from PIL import Image
from scipy import ndimage

DEFECT_TYPES = ("breakdown", "ablation", "fracture", "groove")
DOMAINS = ("same", "background", "illumination", "view")
VIDEOS = ("video1", "video2", "video3")
TRAIN_BACKGROUNDS = ("black", "gray")


@dataclasses.dataclass(frozen=True)
class Size:
  """How much to generate."""
  image_hw: tuple[int, int]  # AeBAD_S images (height, width).
  train_per_background: int  # AeBAD_S training images per background subfolder.
  test_good: int  # Per domain.
  test_per_defect: int  # Per domain and defect type.
  frame_hw: tuple[int, int]  # AeBAD_V frames.
  train_frames: int  # Per training sequence (two sequences).
  test_frames: int  # Per test video.


SIZES = {
    "tiny": Size((64, 72), 4, 2, 1, (64, 64), 4, 8),
    "small": Size((256, 288), 160, 24, 10, (256, 256), 80, 60),
    "large": Size((512, 576), 600, 60, 25, (512, 512), 300, 150),
}

# Stable codes for the per-image random streams.
_STREAM = {"train": 0, **{d: 1 + i for i, d in enumerate(DOMAINS)}, "v_train": 10,
           **{v: 11 + i for i, v in enumerate(VIDEOS)}}
_TYPE_CODE = {"good": 0, **{t: 1 + i for i, t in enumerate(DEFECT_TYPES)}}
_CROP_FRACTION = 224 / 256  # The published centre crop: a defect outside it is not seen by the model.


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
  return float(rng.uniform(low, high))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
  """Zero-mean, unit-ish low-frequency noise: a coarse random grid, bicubic-upsampled to `shape`."""
  coarse = Image.fromarray(rng.standard_normal(cells).astype(np.float32), mode="F")
  return np.asarray(coarse.resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------------------------------------------------------
# Geometry: a blade in its own (u along the span, t across the chord) frame, placed in a plane seen by a camera.
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Camera:
  """Plane -> pixel: rotate by `roll`, squash y by `tilt` (a disk seen at an angle), scale by `zoom`, shift."""
  cx: float = 0.0
  cy: float = 0.0
  zoom: float = 1.0
  tilt: float = 1.0
  roll: float = 0.0

  def to_plane(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = (x - self.cx) / self.zoom
    b = (y - self.cy) / (self.zoom * self.tilt)
    c, s = math.cos(self.roll), math.sin(self.roll)
    return c * a + s * b, -s * a + c * b

  def to_pixels(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(self.roll), math.sin(self.roll)
    a, b = c * px - s * py, s * px + c * py
    return self.cx + self.zoom * a, self.cy + self.zoom * self.tilt * b

  @property
  def pixel(self) -> float:
    """Plane units per pixel (for antialiased edges)."""
    return 1.0 / self.zoom


@dataclasses.dataclass
class Blade:
  """An airfoil from u = 0 (root) to its tilted tip at u ≈ length; optional platform and root block below."""
  origin: tuple[float, float]
  angle: float  # Direction of the span in the plane (radians, 0 = +x, y down).
  length: float
  half_chord: float
  taper: float
  bend: float
  tip_tilt: float
  twist: float
  with_root: bool = True

  @property
  def platform(self) -> tuple[float, float]:
    return 0.06 * self.length, 1.3 * self.half_chord  # (depth along u, half width)

  @property
  def root(self) -> tuple[float, float]:
    return 0.08 * self.length, 0.75 * self.half_chord

  def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = x - self.origin[0], y - self.origin[1]
    c, s = math.cos(self.angle), math.sin(self.angle)
    return dx * c + dy * s, -dx * s + dy * c

  def to_plane(self, u: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(self.angle), math.sin(self.angle)
    return self.origin[0] + u * c - t * s, self.origin[1] + u * s + t * c

  def midline(self, s: np.ndarray) -> np.ndarray:
    return self.bend * self.length * s**2

  def half_width(self, s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    return self.half_chord * (1.0 - self.taper * s) * (1.0 + 0.18 * np.exp(-12.0 * s))  # Fillet at the root.

  def edge_point(self, s: float, side: int) -> tuple[float, float]:
    """(u, t) of the leading (side -1) or trailing (+1) edge at span fraction s."""
    return s * self.length, float(self.midline(s) + side * self.half_width(s))

  def extent(self) -> tuple[float, float, float, float]:
    """(u_min, u_max, t_min, t_max) bounding the blade in its own frame."""
    depth = self.platform[0] + self.root[0] if self.with_root else 0.0
    reach = max(self.platform[1], self.half_chord * 1.2) + abs(self.bend) * self.length
    return -depth, self.length * (1.0 + abs(self.tip_tilt) * 0.5) + 2.0, -reach, reach


def _coverage(signed_distance: np.ndarray, pixel: float) -> np.ndarray:
  """Antialiased inside-ness from a signed distance (positive inside), in plane units."""
  return np.clip(signed_distance / pixel + 0.5, 0.0, 1.0)


@dataclasses.dataclass
class BladeFields:
  """Per-pixel quantities of one blade over its bounding box."""
  u: np.ndarray
  t: np.ndarray
  airfoil: np.ndarray  # Coverage of the airfoil.
  alpha: np.ndarray  # Coverage of the whole blade.
  normal: np.ndarray  # (h, w, 3) unit normals in camera space (x right, y down, z to the viewer).
  region: np.ndarray  # 0 airfoil, 1 platform, 2 root.


def _blade_fields(blade: Blade, u: np.ndarray, t: np.ndarray, pixel: float, camera: Camera) -> BladeFields:
  s = u / blade.length
  mid = blade.midline(s)
  half = blade.half_width(s)
  across = (t - mid) / half
  side_distance = half - np.abs(t - mid)
  tip = (1.0 + blade.tip_tilt * np.clip(across, -1, 1) * blade.half_chord / blade.length - s) * blade.length
  airfoil = _coverage(np.minimum(side_distance, tip), pixel) * (u >= 0)
  alpha = airfoil
  region = np.zeros(u.shape, np.int8)
  if blade.with_root:
    depth, width = blade.platform
    platform = _coverage(np.minimum(width - np.abs(t), u + depth), pixel) * (u < 0)
    root_depth, root_width = blade.root
    root = _coverage(np.minimum(root_width - np.abs(t), u + depth + root_depth), pixel) * (u < -depth)
    alpha = np.maximum(np.maximum(alpha, platform), root)
    region = np.where(u < 0, 1, region)
    region = np.where(u < -depth, 2, region)

  # Normals: the airfoil's cross-section is a flattened cylinder twisted along the span; platform and root are
  # flat, facing the camera at slightly different angles.
  nt = np.where(region == 0, 0.85 * np.clip(across, -1, 1), 0.0)
  nu = np.where(region == 0, blade.twist * (s - 0.5), np.where(region == 1, -0.1, 0.0))
  nz = np.sqrt(np.clip(1.0 - nt**2, 0.05, 1.0))
  c, sn = math.cos(blade.angle), math.sin(blade.angle)
  # (u, t) axes in the plane, then through the camera's roll (tilt only shades the z part, ignored).
  cr, sr = math.cos(camera.roll), math.sin(camera.roll)
  span = (cr * c - sr * sn, sr * c + cr * sn)
  chord = (-span[1], span[0])
  normal = np.stack([nt * chord[0] + nu * span[0], nt * chord[1] + nu * span[1], nz], axis=-1)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  return BladeFields(u, t, airfoil, alpha, normal, region)


# ---------------------------------------------------------------------------------------------------------------
# Defects, in the blade's (u, t) frame so that they move with it.
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Defect:
  kind: str
  centre: tuple[float, float] = (0.0, 0.0)  # Blobs (breakdown, ablation).
  radius: float = 0.0
  harmonics: tuple[tuple[float, float], ...] = ()  # (amplitude, phase) for k = 2, 3, ...
  paths: tuple[np.ndarray, ...] = ()  # Polylines (fracture, groove): arrays (n, 2) of (u, t).
  width: float = 0.0
  strength: float = 1.0


def _blob_distance(defect: Defect, u: np.ndarray, t: np.ndarray, margin: float) -> np.ndarray:
  """Signed distance to the blob's outline (positive inside); exact up to `margin` outside, very negative beyond."""
  reach = defect.radius * (1.0 + sum(a for a, _ in defect.harmonics)) + margin
  du, dt = u - defect.centre[0], t - defect.centre[1]
  near = (np.abs(du) < reach) & (np.abs(dt) < reach)
  du, dt = du[near], dt[near]
  theta = np.arctan2(dt, du)
  radius = defect.radius * (1.0 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(defect.harmonics)))
  distance = np.full(u.shape, -1e6, u.dtype)
  distance[near] = radius - np.hypot(du, dt)
  return distance


def _path_distance(path: np.ndarray, u: np.ndarray, t: np.ndarray, reach: float) -> np.ndarray:
  """Distance to a polyline, exact within `reach` of its bounding box and `inf` beyond (saves the far pixels)."""
  best = np.full(u.shape, np.inf)
  near = ((u > path[:, 0].min() - reach) & (u < path[:, 0].max() + reach) &
          (t > path[:, 1].min() - reach) & (t < path[:, 1].max() + reach))
  un, tn = u[near], t[near]
  local = np.full(un.shape, np.inf)
  for (u0, t0), (u1, t1) in zip(path[:-1], path[1:]):
    du, dt = u1 - u0, t1 - t0
    length2 = du * du + dt * dt + 1e-12
    k = np.clip(((un - u0) * du + (tn - t0) * dt) / length2, 0.0, 1.0)
    local = np.minimum(local, np.hypot(un - u0 - k * du, tn - t0 - k * dt))
  best[near] = local
  return best


def _jagged_path(rng: np.random.Generator, start: np.ndarray, direction: float, length: float, steps: int,
                 jitter: float) -> np.ndarray:
  points = [start]
  angle = direction
  for _ in range(steps):
    angle += rng.normal(0.0, jitter)
    step = length / steps * _uniform(rng, 0.6, 1.4)
    points.append(points[-1] + step * np.array([math.cos(angle), math.sin(angle)]))
  return np.array(points)


def make_defect(kind: str, blade: Blade, rng: np.random.Generator, pixel: float) -> Defect:
  """A random defect of `kind` on `blade` (sizes relative to its half chord; line widths in pixels)."""
  chord = blade.half_chord
  harmonics = tuple((_uniform(rng, 0.05, 0.22), _uniform(rng, 0, 2 * math.pi)) for _ in range(3))
  side = int(rng.choice([-1, 1]))
  if kind == "breakdown":
    if rng.random() < 0.25:  # A corner of the tip.
      s = 1.0
      u, t = blade.edge_point(s, side)
      u += blade.tip_tilt * side * chord
    else:
      s = _uniform(rng, 0.25, 0.92)
      u, t = blade.edge_point(s, side)
    radius = _uniform(rng, 0.7, 1.1) * chord
    return Defect(kind, centre=(u, t + side * 0.25 * radius), radius=radius, harmonics=harmonics)
  if kind == "ablation":
    s = _uniform(rng, 0.2, 0.85)
    radius = _uniform(rng, 0.6, 1.0) * chord
    room = max(float(blade.half_width(s)) - 0.6 * radius, 0.0)
    t = float(blade.midline(s)) + _uniform(rng, -room, room)
    return Defect(kind, centre=(s * blade.length, t), radius=radius, harmonics=harmonics,
                  strength=_uniform(rng, 0.65, 0.95))
  if kind == "fracture":
    s = _uniform(rng, 0.2, 0.9)
    start = np.array(blade.edge_point(s, side)) + np.array([0.0, side * 2.0 * pixel])  # Begins outside the edge.
    inward = math.atan2(-side, 0.0) + _uniform(rng, -0.6, 0.6)  # Across the chord, into the blade.
    main = _jagged_path(rng, start, inward, _uniform(rng, 1.0, 1.8) * chord, 8, 0.35)
    paths = [main]
    if rng.random() < 0.5:  # A branch from somewhere along the crack.
      fork = main[int(rng.integers(2, len(main) - 1))]
      paths.append(_jagged_path(rng, fork, inward + _uniform(rng, 0.5, 1.0) * side, 0.4 * chord, 4, 0.3))
    return Defect(kind, paths=tuple(paths), width=_uniform(rng, 2.5, 3.5) * pixel, strength=_uniform(rng, 0.6, 0.8))
  if kind == "groove":
    s = _uniform(rng, 0.2, 0.85)
    length = _uniform(rng, 1.0, 2.0) * chord
    angle = _uniform(rng, 0, math.pi)
    centre = np.array([s * blade.length, float(blade.midline(s)) + _uniform(rng, -0.4, 0.4) * chord])
    direction = np.array([math.cos(angle), math.sin(angle)])
    bow = _uniform(rng, -0.08, 0.08) * length * np.array([-direction[1], direction[0]])
    k = np.linspace(-0.5, 0.5, 7)[:, None]
    path = centre + k * length * direction + (1 - 4 * k**2) * bow
    return Defect(kind, paths=(path,), width=_uniform(rng, 2.0, 3.0) * pixel, strength=_uniform(rng, 0.45, 0.65))
  raise ValueError(f"unknown defect kind {kind!r}")


def _defect_coverage(defect: Defect, surface: Surface) -> tuple[np.ndarray, np.ndarray]:
  """(coverage for drawing, binary ground-truth region) of the defect over the blade's box."""
  fields, pixel = surface.fields, surface.pixel
  if defect.kind in ("breakdown", "ablation"):
    distance = _blob_distance(defect, fields.u, fields.t, 4 * pixel)
    if defect.kind == "breakdown":
      distance = distance + 1.5 * pixel * surface.grain  # A broken edge is jagged.
    return _coverage(distance, pixel), distance >= 0
  reach = defect.width + 3 * pixel
  distance = np.min([_path_distance(p, fields.u, fields.t, reach) for p in defect.paths], axis=0)
  # Annotations of thin defects are drawn a little wider than the defect itself.
  return _coverage(defect.width / 2 - distance, pixel), distance <= defect.width / 2 + pixel


# ---------------------------------------------------------------------------------------------------------------
# Shading and composition.
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Look:
  """Light and material."""
  light: np.ndarray  # Unit vector towards the light.
  light_colour: np.ndarray
  albedo: np.ndarray
  ambient: float = 0.28
  diffuse: float = 0.8
  specular: float = 0.45
  shininess: float = 24.0

  def __post_init__(self):
    # float32 throughout: the renderer is memory-bound, and float64 constants would promote every array.
    self.light = np.asarray(self.light, np.float32)
    self.light_colour = np.asarray(self.light_colour, np.float32)
    self.albedo = np.asarray(self.albedo, np.float32)


def _light(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
  a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
  return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)], np.float32)


@dataclasses.dataclass
class Surface:
  """A blade's geometry and texture over its pixel box, before light and defects."""
  box: tuple[slice, slice]
  fields: BladeFields
  albedo: np.ndarray  # (h, w, 3)
  blotch: np.ndarray  # (h, w) low-frequency noise, reused by burns.
  grain: np.ndarray  # (h, w) pixel-scale noise (unit variance): rough surfaces of burns and breaks.
  pixel: float


def _blade_surface(blade: Blade, camera: Camera, look: Look, rng: np.random.Generator,
                   hw: tuple[int, int]) -> Surface | None:
  """None when the blade lies outside the image."""
  height, width = hw
  u0, u1, t0, t1 = blade.extent()
  corners = np.array([blade.to_plane(u, t) for u in (u0, u1) for t in (t0, t1)])
  xs, ys = camera.to_pixels(corners[:, 0], corners[:, 1])
  x0, x1 = max(int(xs.min()) - 2, 0), min(int(xs.max()) + 3, width)
  y0, y1 = max(int(ys.min()) - 2, 0), min(int(ys.max()) + 3, height)
  if x0 >= x1 or y0 >= y1:
    return None
  gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
  u, t = blade.local(*camera.to_plane(gx, gy))
  pixel = camera.pixel
  fields = _blade_fields(blade, u, t, pixel, camera)
  # Brushed texture along the span (a 1-D noise indexed by t), plus blotches.
  count = int((t1 - t0) / pixel) + 2
  streaks = ndimage.gaussian_filter1d(rng.standard_normal(count), 1.5)
  streak = streaks[np.clip(((t - t0) / pixel).astype(int), 0, count - 1)]
  blotch = _smooth_noise(rng, u.shape, (4, 4))
  grain = ndimage.gaussian_filter(rng.standard_normal(u.shape, dtype=np.float32), 0.7)
  grain /= grain.std() + 1e-6
  albedo = look.albedo * (1.0 + 0.05 * streak + 0.05 * blotch)[..., None]
  albedo = np.where((fields.region == 0)[..., None], albedo, albedo * np.array([0.92, 0.91, 0.9], np.float32))
  return Surface((slice(y0, y1), slice(x0, x1)), fields, albedo, blotch, grain, pixel)


def _defect_truth(surface: Surface, defect: Defect, hw: tuple[int, int]) -> np.ndarray:
  """The defect's ground-truth mask over the whole image (bool)."""
  truth = np.zeros(hw, bool)
  truth[surface.box] = _defect_coverage(defect, surface)[1] & (surface.fields.airfoil >= 0.5)
  return truth


def _shade(surface: Surface, look: Look, defect: Defect | None) -> tuple[np.ndarray, np.ndarray]:
  """(colour (h, w, 3), alpha (h, w)) of the lit blade with its defect."""
  fields, pixel = surface.fields, surface.pixel
  u, t = fields.u, fields.t
  albedo = surface.albedo
  specular = np.full(u.shape, look.specular)
  alpha = fields.alpha
  cover = None
  if defect is not None:
    cover = _defect_coverage(defect, surface)[0]
    if defect.kind == "ablation":
      # Burnt core, brown body, a bluish heat tint at the rim; matte, mottled with soot and heat-tinted flecks.
      radial = np.clip(_blob_distance(defect, u, t, 4 * pixel) / defect.radius, 0.0, 1.0)
      burnt = np.stack([0.30 - 0.2 * radial, 0.2 - 0.14 * radial, 0.16 - 0.1 * radial], -1)
      rim = np.exp(-((radial - 0.12) / 0.08) ** 2)[..., None] * np.array([0.05, 0.05, 0.18], np.float32)
      flecks = np.clip(surface.grain - 1.0, 0.0, None)[..., None] * np.array([0.35, 0.28, 0.4], np.float32)
      burnt = burnt * (1.0 + 0.45 * surface.grain[..., None]) + rim + flecks + 0.04 * surface.blotch[..., None]
      mix = (defect.strength * cover * fields.airfoil)[..., None]
      albedo = albedo * (1 - mix) + burnt * mix
      specular = specular * (1 - 0.85 * mix[..., 0])
    elif defect.kind == "breakdown":
      alpha = alpha * (1.0 - cover)

  half = look.light + np.array([0.0, 0.0, 1.0], np.float32)
  half /= np.linalg.norm(half)
  n_dot_l = np.clip(fields.normal @ look.light, 0.0, None)
  n_dot_h = np.clip(fields.normal @ half, 0.0, None)
  colour = albedo * (look.ambient + look.diffuse * n_dot_l)[..., None] + (specular * n_dot_h**look.shininess)[..., None]
  colour = colour * look.light_colour

  if defect is not None and defect.kind == "breakdown":
    # The fracture surface along the break: rough, bright where it catches the light, dark in its pits.
    distance = _blob_distance(defect, u, t, 4 * pixel) + 1.5 * pixel * surface.grain
    edge = np.clip(1.0 + distance / (2.5 * pixel), 0.0, 1.0) * (1.0 - cover)
    rough = np.clip(0.55 + 0.35 * surface.grain, 0.0, 1.0)[..., None] * look.light_colour
    colour = colour * (1.0 - edge[..., None]) + rough * edge[..., None]
  elif defect is not None:
    if defect.kind in ("fracture", "groove"):
      colour *= (1.0 - defect.strength * cover)[..., None]
    if defect.kind == "groove":
      # The lip of the groove catches the light: the same line, shifted by about one width.
      shift = np.array([0.0, defect.width * 1.2])
      lip_distance = np.min([_path_distance(p + shift, u, t, defect.width + 3 * pixel) for p in defect.paths],
                            axis=0)
      lip = _coverage(defect.width * 0.35 - lip_distance, pixel) * (1.0 - cover)
      colour += (0.35 * lip)[..., None] * look.light_colour
  return colour, alpha


def _paste(canvas: np.ndarray, coverage: np.ndarray, surface: Surface, colour: np.ndarray,
           alpha: np.ndarray) -> None:
  a = alpha[..., None]
  canvas[surface.box] = canvas[surface.box] * (1 - a) + colour * a
  coverage[surface.box] = np.maximum(coverage[surface.box], alpha)


def _visible(truth: np.ndarray, fraction: float) -> int:
  """Mask pixels inside the centre crop that keeps `fraction` of each side (what the model will see)."""
  height, width = truth.shape
  dy, dx = int(height * (1 - fraction) / 2), int(width * (1 - fraction) / 2)
  return int(truth[dy:height - dy, dx:width - dx].sum())


def _background(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  yy = (np.arange(height, dtype=np.float32) / max(height, width))[:, None]
  xx = (np.arange(width, dtype=np.float32) / max(height, width))[None, :]
  angle = _uniform(rng, 0, 2 * math.pi)
  ramp = (math.cos(angle) * (xx - 0.5) + math.sin(angle) * (yy - 0.5))[..., None]
  noise = _smooth_noise(rng, (height, width), (6, 6))[..., None]
  if kind == "black":
    base = np.full(3, _uniform(rng, 0.01, 0.06), np.float32)
    image = np.broadcast_to(base + 0.02 * ramp + 0.008 * noise, (height, width, 3))
  elif kind == "gray":
    base = np.float32(_uniform(rng, 0.36, 0.58)) * np.array([1.0, 1.0, _uniform(rng, 0.97, 1.04)], np.float32)
    image = base * (1.0 + 0.25 * ramp + 0.03 * noise)
  elif kind == "blue":
    base = np.array([0.22, 0.32, 0.52], np.float32) * _uniform(rng, 0.8, 1.2)
    period = _uniform(rng, 3.0, 6.0) / max(height, width)
    weave = 0.5 * (np.sin(2 * math.pi * xx / period) * np.sin(2 * math.pi * yy / period))[..., None]
    image = base * (1.0 + 0.3 * ramp + 0.08 * noise + 0.05 * weave)
  elif kind == "bench":
    base = np.array([0.46, 0.39, 0.31], np.float32) * _uniform(rng, 0.8, 1.2)
    grain = np.sin(2 * math.pi * (yy * _uniform(rng, 8, 20) + 0.3 * noise[..., 0]))[..., None]
    image = base * (1.0 + 0.3 * ramp + 0.04 * grain)
  else:
    raise ValueError(f"unknown background {kind!r}")
  return np.clip(image, 0, 1)


def _drop_shadow(canvas: np.ndarray, alpha: np.ndarray, light: np.ndarray, scale: float) -> np.ndarray:
  """The background darkened where the blade's shadow falls (away from the light)."""
  dy, dx = int(round(-light[1] * 6 * scale)), int(round(-light[0] * 6 * scale))
  # Blurred at half resolution: a soft shadow has no detail to lose.
  half = np.roll(alpha, (dy, dx), axis=(0, 1))[::2, ::2]
  shadow = ndimage.gaussian_filter(half, 1.5 * scale).repeat(2, axis=0).repeat(2, axis=1)
  return canvas * (1.0 - 0.45 * shadow[:canvas.shape[0], :canvas.shape[1]])[..., None]


def _finish(image: np.ndarray, rng: np.random.Generator, exposure: float = 1.0, gamma: float = 1.0) -> np.ndarray:
  """Exposure, gamma, 8-bit quantisation, sensor noise (uniform, ±4 grey levels)."""
  image = np.clip(image * np.float32(exposure * 255), 0, 255)
  if gamma != 1.0:
    image = 255 * (image / 255) ** np.float32(gamma)
  levels = (image + 0.5).astype(np.int16) + rng.integers(-4, 5, image.shape, dtype=np.int16)
  return np.clip(levels, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# AeBAD-S images.
# ---------------------------------------------------------------------------------------------------------------


def _train_look(rng: np.random.Generator) -> Look:
  grey = _uniform(rng, 0.55, 0.72)
  tint = np.array([1.0, _uniform(rng, 0.96, 1.0), _uniform(rng, 0.9, 1.02)])
  return Look(light=_light(_uniform(rng, 200, 250), _uniform(rng, 35, 60)), light_colour=np.ones(3),
              albedo=grey * tint)


def render_blade_image(rng: np.random.Generator, domain: str, defect_kind: str, hw: tuple[int, int],
                       background: str | None = None, variant: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray | None]:
  """One AeBAD-S-like image of `domain` ("train" is the same distribution as "same"): (uint8 RGB, bool mask).

  `variant` (the image's index in its folder) makes the scene's either-or choices (which background, over- or
  under-exposed, foreshortened or closer, mirrored) alternate instead of being drawn, so that each type folder
  holds them in equal shares: a score that depends on the background cannot then pass for one that finds
  defects.
  """

  def either(bit: int) -> bool:
    drawn = bool(rng.random() < 0.5)  # Drawn in any case, so that the other draws do not depend on `variant`.
    return drawn if variant is None else bool((variant >> bit) & 1)

  height, width = hw
  look = _train_look(rng)
  exposure, gamma, mirror = _uniform(rng, 0.92, 1.08), 1.0, False
  angle = math.radians(_uniform(rng, -12, 12))
  length = _uniform(rng, 0.42, 0.52) * height  # With platform and root: 0.5-0.65 of the height, inside the crop.
  half_chord = _uniform(rng, 0.11, 0.14) * height
  second = either(0)
  if background is None:
    background = (("blue", "bench") if domain == "background" else TRAIN_BACKGROUNDS)[int(second)]
  if domain == "illumination":
    look.light = _light(_uniform(rng, -40, 80), _uniform(rng, 15, 75))
    warm, cool = np.array([1.0, 0.92, 0.82], np.float32), np.array([0.86, 0.93, 1.0], np.float32)
    look.light_colour = warm if either(1) else cool
    exposure = _uniform(rng, 0.6, 0.8) if second else _uniform(rng, 1.2, 1.4)
    gamma = _uniform(rng, 0.8, 1.25)
  elif domain == "view":
    angle = math.radians(_uniform(rng, 15, 30) * rng.choice([-1, 1]))  # Training: within ±12°.
    if second:
      half_chord *= _uniform(rng, 0.65, 0.8)  # Seen more edge-on: foreshortened chord.
    else:
      length *= _uniform(rng, 1.1, 1.2)  # Closer.
    mirror = either(1)
  blade = Blade(origin=(0.0, 0.0), angle=angle - math.pi / 2, length=length, half_chord=half_chord,
                # One blade model, as in AeBAD: the shape varies only a little from image to image.
                taper=_uniform(rng, 0.3, 0.36), bend=_uniform(rng, -0.015, 0.015),
                tip_tilt=_uniform(rng, 0.12, 0.2), twist=_uniform(rng, 0.15, 0.3))
  # Centre the blade's span (root block to tip) on a jittered image centre.
  centre_u = 0.5 * (blade.extent()[0] + blade.length)
  cx = width / 2 + _uniform(rng, -0.05, 0.05) * height
  cy = height / 2 + _uniform(rng, -0.05, 0.05) * height
  span = (math.cos(blade.angle), math.sin(blade.angle))
  blade.origin = (cx - centre_u * span[0], cy - centre_u * span[1])

  camera = Camera()
  scale = height / 256
  surface = _blade_surface(blade, camera, look, rng, hw)
  defect, truth = None, None
  if defect_kind != "good":
    for _ in range(50):  # Redraw a defect that the centre crop would cut away.
      defect = make_defect(defect_kind, blade, rng, camera.pixel * scale)
      truth = _defect_truth(surface, defect, hw)
      if _visible(truth, _CROP_FRACTION) >= max(4 * scale**2, 2):
        break
  colour, alpha = _shade(surface, look, defect)
  canvas = _background(background, height, width, rng)
  if background != "black":
    full_alpha = np.zeros(hw, np.float32)
    full_alpha[surface.box] = alpha
    canvas = _drop_shadow(canvas, full_alpha, look.light, scale)
  _paste(canvas, np.zeros(hw), surface, colour, alpha)
  image = _finish(canvas, rng, exposure, gamma)
  if mirror:
    image = image[:, ::-1]
    truth = None if truth is None else truth[:, ::-1]
  return image, truth


# ---------------------------------------------------------------------------------------------------------------
# AeBAD-V frames: a disk of blades turning in front of a camera.
# ---------------------------------------------------------------------------------------------------------------

_DISK_BLADES = 12
_HUB_RADIUS = 0.55


@dataclasses.dataclass(frozen=True)
class View:
  """Where the camera looks at the disk from, and the light."""
  hub: tuple[float, float]  # Hub centre, in fractions of the frame's (width, height); below the frame.
  zoom: float  # Frame heights per plane unit.
  tilt: float  # Disk seen at an angle: plane y squashed by this.
  roll_deg: float
  light: tuple[float, float]  # Azimuth, elevation in degrees.
  exposure: float = 1.0


_TRAIN_VIEWS = {
    "seq1": View((0.5, 1.08), 0.6, 0.95, 0.0, (225, 50)),
    "seq2": View((0.4, 1.02), 0.62, 0.85, 8.0, (210, 45)),
}
_TEST_VIEWS = {
    "video1": View((0.6, 0.95), 0.58, 0.68, -16.0, (240, 40)),  # Steeper angle on the disk.
    "video2": View((0.5, 1.25), 0.8, 0.9, 4.0, (220, 55), 1.15),  # Closer, brighter.
    "video3": View((0.45, 1.0), 0.55, 0.8, 20.0, (320, 30), 0.8),  # Rolled, lit from the other side, darker.
}


@dataclasses.dataclass
class Disk:
  blades: list[Blade]
  defects: dict[int, Defect]  # Blade index -> its defect.
  look: Look
  start: float  # Disk angle at frame 0.
  speed: float  # Radians per frame.


def _make_disk(seed: int, stream: int, view: View, hw: tuple[int, int], defective: bool) -> Disk:
  rng = np.random.default_rng([seed, stream, 0])
  grey = _uniform(rng, 0.55, 0.68)
  look = Look(light=_light(*view.light), light_colour=np.ones(3), albedo=grey * np.array([1.0, 0.98, 0.95]))
  blades = [Blade(origin=(0.0, 0.0), angle=0.0, length=0.95 * _uniform(rng, 0.98, 1.02),
                  half_chord=0.11 * _uniform(rng, 0.97, 1.03), taper=0.3, bend=0.04, tip_tilt=0.15,
                  twist=0.3, with_root=False) for _ in range(_DISK_BLADES)]
  defects = {}
  if defective:
    pixel = 1.0 / (view.zoom * hw[0]) * (hw[0] / 256)
    for index in rng.choice(_DISK_BLADES, size=2, replace=False):
      defects[int(index)] = make_defect(str(rng.choice(DEFECT_TYPES)), blades[index], rng, pixel)
  pitch = 2 * math.pi / _DISK_BLADES
  return Disk(blades, defects, look, _uniform(rng, 0, 2 * math.pi), pitch * _uniform(rng, 0.2, 0.3))


def render_disk_frame(seed: int, stream: int, view: View, frame: int, hw: tuple[int, int],
                      defective: bool) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 RGB frame, bool visible-defect mask) of one frame."""
  height, width = hw
  disk = _make_disk(seed, stream, view, hw, defective)
  camera = Camera(cx=view.hub[0] * width, cy=view.hub[1] * height, zoom=view.zoom * height, tilt=view.tilt,
                  roll=math.radians(view.roll_deg))
  rng = np.random.default_rng([seed, stream, 1000 + frame])
  canvas = _background("black", height, width, rng) + 0.06 * _uniform(rng, 0.8, 1.2)
  # The hub: a dark disk, brighter towards the light.
  gy, gx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
  hx, hy = camera.to_plane(gx, gy)
  hub = _coverage(_HUB_RADIUS - np.hypot(hx, hy), camera.pixel)[..., None]
  hub_shade = 0.22 + 0.06 * np.clip((hx * disk.look.light[0] + hy * disk.look.light[1]) / _HUB_RADIUS, -1, 1)
  canvas = canvas * (1 - hub) + hub_shade[..., None] * hub
  coverage = np.zeros(hw)
  truth = np.zeros(hw, bool)
  angle0 = disk.start + frame * disk.speed
  for index, blade in enumerate(disk.blades):
    angle = angle0 + 2 * math.pi * index / _DISK_BLADES
    blade.angle = angle
    blade.origin = (0.97 * _HUB_RADIUS * math.cos(angle), 0.97 * _HUB_RADIUS * math.sin(angle))
    surface = _blade_surface(blade, camera, disk.look, np.random.default_rng([seed, stream, 100 + index]), hw)
    if surface is None:
      continue
    defect = disk.defects.get(index)
    colour, alpha = _shade(surface, disk.look, defect)
    truth[surface.box] &= alpha < 0.5  # This blade hides what lies under it.
    if defect is not None:
      truth |= _defect_truth(surface, defect, hw)
    _paste(canvas, coverage, surface, colour, alpha)
  return _finish(canvas, rng, view.exposure), truth


# ---------------------------------------------------------------------------------------------------------------
# Writing the layouts.
# ---------------------------------------------------------------------------------------------------------------


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
  return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def _s_tasks(seed: int, size: Size) -> list[tuple]:
  tasks = []
  for b, background in enumerate(TRAIN_BACKGROUNDS):
    for i in range(size.train_per_background):
      tasks.append(("s", seed, "train", "good", b, i, background, f"AeBAD_S/train/good/{background}/{i:04d}.png"))
  for domain in DOMAINS:
    for defect_type in ("good",) + DEFECT_TYPES:
      count = size.test_good if defect_type == "good" else size.test_per_defect
      for i in range(count):
        tasks.append(("s", seed, domain, defect_type, 0, i, None, f"AeBAD_S/test/{defect_type}/{domain}/{i:04d}.png"))
  return tasks


def _v_tasks(seed: int, size: Size) -> list[tuple]:
  tasks = []
  for sequence in _TRAIN_VIEWS:
    for frame in range(size.train_frames):
      tasks.append(("v", seed, sequence, frame))
  for video in VIDEOS:
    # Some frames are left out as ambiguous; render enough candidates to keep `test_frames`.
    for frame in range(int(math.ceil(size.test_frames * 1.3)) + 4):
      tasks.append(("v", seed, video, frame))
  return tasks


def _render_task(task: tuple, size: Size) -> tuple:
  """Runs in a worker: renders one image and returns its encoded file(s)."""
  if task[0] == "s":
    _, seed, domain, defect_type, background_code, index, background, path = task
    rng = np.random.default_rng([seed, _STREAM["train" if domain == "train" else domain], background_code,
                                 _TYPE_CODE[defect_type], index])
    image, truth = render_blade_image(rng, domain, defect_type, size.image_hw, background,
                                      variant=None if domain == "train" else index)
    mask = None if truth is None else _png(truth.astype(np.uint8) * 255)
    return path, _png(image), mask
  _, seed, name, frame = task
  train = name in _TRAIN_VIEWS
  view = _TRAIN_VIEWS[name] if train else _TEST_VIEWS[name]
  stream = _STREAM["v_train"] * 100 + list(_TRAIN_VIEWS).index(name) if train else _STREAM[name]
  image, truth = render_disk_frame(seed, stream, view, frame, size.frame_hw, defective=not train)
  return name, frame, _jpeg(image), _visible(truth, _CROP_FRACTION)


def _render_all(tasks: list[tuple], size: Size, workers: int) -> list[tuple]:
  if workers <= 1:
    return [_render_task(task, size) for task in tasks]
  # 'spawn': the caller may already run JAX or TF threads, which a fork would copy in a broken state.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    return list(pool.map(_render_task, tasks, [size] * len(tasks), chunksize=max(1, len(tasks) // (8 * workers))))


def _write(path: pathlib.Path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def generate(out: str | os.PathLike, seed: int = 0, size: str = "small", workers: int | None = None,
             keep_existing: bool = False) -> dict:
  """Writes OUT/AeBAD_S and OUT/AeBAD_V; returns file counts.

  Both must be absent, unless keep_existing: then a folder already there is kept (each is moved into place
  whole, so one that exists is complete) and only the missing one is written.
  """
  out = pathlib.Path(out)
  spec = SIZES[size]
  existing = [name for name in ("AeBAD_S", "AeBAD_V") if (out / name).exists()]
  if existing and not keep_existing:
    raise FileExistsError(f"{out / existing[0]} already exists; delete it or choose another --out")
  workers = workers or os.cpu_count() or 1
  out.mkdir(parents=True, exist_ok=True)
  # Written under a temporary folder and moved into place, so that a half-written dataset is never found.
  staging = pathlib.Path(tempfile.mkdtemp(prefix=".synthetic-", dir=out))
  try:
    s_tasks = _s_tasks(seed, spec)
    results = _render_all(s_tasks + _v_tasks(seed, spec), spec, workers)
    s_results, v_results = results[:len(s_tasks)], results[len(s_tasks):]
    counts = {"AeBAD_S": 0, "AeBAD_S masks": 0, "AeBAD_V": 0}
    for path, image, mask in s_results:
      _write(staging / path, image)
      counts["AeBAD_S"] += 1
      if mask is not None:
        _write(staging / path.replace("/test/", "/ground_truth/", 1), mask)
        counts["AeBAD_S masks"] += 1
    # A frame is anomalous when enough of a defect shows in its centre crop; a sliver is ambiguous.
    least = max(10 * (spec.frame_hw[0] / 256) ** 2, 2)
    kept = {video: 0 for video in VIDEOS}
    for name, frame, image, visible in v_results:
      if name in _TRAIN_VIEWS:
        _write(staging / "AeBAD_V" / "train" / "good" / name / f"{frame:04d}.jpg", image)
      elif kept[name] < spec.test_frames and (visible == 0 or visible >= least):
        folder = "good" if visible == 0 else "anomaly"
        _write(staging / "AeBAD_V" / "test" / name / folder / f"{frame:04d}.jpg", image)
        kept[name] += 1
        counts[f"AeBAD_V {name} {folder}"] = counts.get(f"AeBAD_V {name} {folder}", 0) + 1
      else:
        continue
      counts["AeBAD_V"] += 1
    # AeBAD_S last: its presence is what `ensure_synthetic` looks for.
    for name in ("AeBAD_V", "AeBAD_S"):
      try:
        os.replace(staging / name, out / name)
      except OSError:
        if not (keep_existing and (out / name).is_dir()):  # Another process moved its copy in first.
          raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return counts


def ensure_synthetic(root: str | os.PathLike, seed: int = 0, size: str = "small",
                     workers: int | None = None) -> bool:
  """Generates the dataset under `root` unless `root/AeBAD_S` exists. Returns whether it generated.

  Safe when several processes call it at once: each writes its own staging copy; whichever finishes first
  is kept (they are identical, the generator being deterministic).
  """
  root = pathlib.Path(os.path.expanduser(root))
  if (root / "AeBAD_S").is_dir():
    return False
  generate(root, seed=seed, size=size, workers=workers, keep_existing=True)
  return True


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  counts = generate(flags.FLAGS.out, seed=flags.FLAGS.seed, size=flags.FLAGS.size, workers=flags.FLAGS.workers)
  elapsed = time.perf_counter() - start
  for key, value in sorted(counts.items()):
    print(f"{key:28s} {value:6d}")
  print(f"wrote {flags.FLAGS.out}/AeBAD_S and {flags.FLAGS.out}/AeBAD_V in {elapsed:.1f} s")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "Folder to write AeBAD_S/ and AeBAD_V/ into.", required=True)
  flags.DEFINE_integer("seed", 0, "Seed; the same seed writes the same files.")
  flags.DEFINE_enum("size", "small", list(SIZES), "How much to generate.")
  flags.DEFINE_integer("workers", 0, "Processes (0: one per CPU core).")
  app.run(main)
