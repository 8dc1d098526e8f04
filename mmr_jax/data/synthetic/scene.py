"""The scene of an AeBAD-like image: what is generated, seeded noise, and the blade's geometry in its own
(u along the span, t across the chord) frame, placed in a plane seen by a camera."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

DEFECT_TYPES = ("breakdown", "ablation", "fracture", "groove")
DOMAINS = ("same", "background", "illumination", "view")
VIDEOS = ("video1", "video2", "video3")
TRAIN_BACKGROUNDS = ("black", "gray")
CROP_FRACTION = 224 / 256  # The published centre crop: a defect outside it is not seen by the model.


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
  return float(rng.uniform(low, high))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
  """Zero-mean, unit-ish low-frequency noise: a coarse random grid, bicubic-upsampled to `shape`."""
  coarse = Image.fromarray(rng.standard_normal(cells).astype(np.float32), mode="F")
  return np.asarray(coarse.resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


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


def edge_coverage(signed_distance: np.ndarray, pixel: float) -> np.ndarray:
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


def blade_fields(blade: Blade, u: np.ndarray, t: np.ndarray, pixel: float, camera: Camera) -> BladeFields:
  s = u / blade.length
  mid = blade.midline(s)
  half = blade.half_width(s)
  across = (t - mid) / half
  side_distance = half - np.abs(t - mid)
  tip = (1.0 + blade.tip_tilt * np.clip(across, -1, 1) * blade.half_chord / blade.length - s) * blade.length
  airfoil = edge_coverage(np.minimum(side_distance, tip), pixel) * (u >= 0)
  alpha = airfoil
  region = np.zeros(u.shape, np.int8)
  if blade.with_root:
    depth, width = blade.platform
    platform = edge_coverage(np.minimum(width - np.abs(t), u + depth), pixel) * (u < 0)
    root_depth, root_width = blade.root
    root = edge_coverage(np.minimum(root_width - np.abs(t), u + depth + root_depth), pixel) * (u < -depth)
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
