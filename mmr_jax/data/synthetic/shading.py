"""Shading a blade and its defect under a light, composing it on a background, and the camera's finish."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from mmr_jax.data.synthetic.scene import Blade
from mmr_jax.data.synthetic.scene import BladeFields
from mmr_jax.data.synthetic.scene import Camera
from mmr_jax.data.synthetic.scene import blade_fields
from mmr_jax.data.synthetic.scene import edge_coverage
from mmr_jax.data.synthetic.scene import smooth_noise
from mmr_jax.data.synthetic.scene import uniform
from mmr_jax.data.synthetic.defects import Defect
from mmr_jax.data.synthetic.defects import blob_distance
from mmr_jax.data.synthetic.defects import path_distance


def _defect_coverage(defect: Defect, surface: Surface) -> tuple[np.ndarray, np.ndarray]:
  """(coverage for drawing, binary ground-truth region) of the defect over the blade's box."""
  fields, pixel = surface.fields, surface.pixel
  if defect.kind in ("breakdown", "ablation"):
    distance = blob_distance(defect, fields.u, fields.t, 4 * pixel)
    if defect.kind == "breakdown":
      distance = distance + 1.5 * pixel * surface.grain  # A broken edge is jagged.
    return edge_coverage(distance, pixel), distance >= 0
  reach = defect.width + 3 * pixel
  distance = np.min([path_distance(p, fields.u, fields.t, reach) for p in defect.paths], axis=0)
  # Annotations of thin defects are drawn a little wider than the defect itself.
  return edge_coverage(defect.width / 2 - distance, pixel), distance <= defect.width / 2 + pixel


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


def light_direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
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


def blade_surface(
  blade: Blade, camera: Camera, look: Look, rng: np.random.Generator, hw: tuple[int, int]
) -> Surface | None:
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
  fields = blade_fields(blade, u, t, pixel, camera)
  # Brushed texture along the span (a 1-D noise indexed by t), plus blotches.
  count = int((t1 - t0) / pixel) + 2
  streaks = ndimage.gaussian_filter1d(rng.standard_normal(count), 1.5)
  streak = streaks[np.clip(((t - t0) / pixel).astype(int), 0, count - 1)]
  blotch = smooth_noise(rng, u.shape, (4, 4))
  grain = ndimage.gaussian_filter(rng.standard_normal(u.shape, dtype=np.float32), 0.7)
  grain /= grain.std() + 1e-6
  albedo = look.albedo * (1.0 + 0.05 * streak + 0.05 * blotch)[..., None]
  albedo = np.where((fields.region == 0)[..., None], albedo, albedo * np.array([0.92, 0.91, 0.9], np.float32))
  return Surface((slice(y0, y1), slice(x0, x1)), fields, albedo, blotch, grain, pixel)


def defect_truth(surface: Surface, defect: Defect, hw: tuple[int, int]) -> np.ndarray:
  """The defect's ground-truth mask over the whole image (bool)."""
  truth = np.zeros(hw, bool)
  truth[surface.box] = _defect_coverage(defect, surface)[1] & (surface.fields.airfoil >= 0.5)
  return truth


def shade(surface: Surface, look: Look, defect: Defect | None) -> tuple[np.ndarray, np.ndarray]:
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
      radial = np.clip(blob_distance(defect, u, t, 4 * pixel) / defect.radius, 0.0, 1.0)
      burnt = np.stack([0.30 - 0.2 * radial, 0.2 - 0.14 * radial, 0.16 - 0.1 * radial], -1)
      rim = np.exp(-(((radial - 0.12) / 0.08) ** 2))[..., None] * np.array([0.05, 0.05, 0.18], np.float32)
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
    distance = blob_distance(defect, u, t, 4 * pixel) + 1.5 * pixel * surface.grain
    edge = np.clip(1.0 + distance / (2.5 * pixel), 0.0, 1.0) * (1.0 - cover)
    rough = np.clip(0.55 + 0.35 * surface.grain, 0.0, 1.0)[..., None] * look.light_colour
    colour = colour * (1.0 - edge[..., None]) + rough * edge[..., None]
  elif defect is not None:
    if defect.kind in ("fracture", "groove"):
      colour *= (1.0 - defect.strength * cover)[..., None]
    if defect.kind == "groove":
      # The lip of the groove catches the light: the same line, shifted by about one width.
      shift = np.array([0.0, defect.width * 1.2])
      lip_distance = np.min([path_distance(p + shift, u, t, defect.width + 3 * pixel) for p in defect.paths], axis=0)
      lip = edge_coverage(defect.width * 0.35 - lip_distance, pixel) * (1.0 - cover)
      colour += (0.35 * lip)[..., None] * look.light_colour
  return colour, alpha


def paste(canvas: np.ndarray, coverage: np.ndarray, surface: Surface, colour: np.ndarray, alpha: np.ndarray) -> None:
  a = alpha[..., None]
  canvas[surface.box] = canvas[surface.box] * (1 - a) + colour * a
  coverage[surface.box] = np.maximum(coverage[surface.box], alpha)


def visible_pixels(truth: np.ndarray, fraction: float) -> int:
  """Mask pixels inside the centre crop that keeps `fraction` of each side (what the model will see)."""
  height, width = truth.shape
  dy, dx = int(height * (1 - fraction) / 2), int(width * (1 - fraction) / 2)
  return int(truth[dy : height - dy, dx : width - dx].sum())


def background_image(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  yy = (np.arange(height, dtype=np.float32) / max(height, width))[:, None]
  xx = (np.arange(width, dtype=np.float32) / max(height, width))[None, :]
  angle = uniform(rng, 0, 2 * math.pi)
  ramp = (math.cos(angle) * (xx - 0.5) + math.sin(angle) * (yy - 0.5))[..., None]
  noise = smooth_noise(rng, (height, width), (6, 6))[..., None]
  if kind == "black":
    base = np.full(3, uniform(rng, 0.01, 0.06), np.float32)
    image = np.broadcast_to(base + 0.02 * ramp + 0.008 * noise, (height, width, 3))
  elif kind == "gray":
    base = np.float32(uniform(rng, 0.36, 0.58)) * np.array([1.0, 1.0, uniform(rng, 0.97, 1.04)], np.float32)
    image = base * (1.0 + 0.25 * ramp + 0.03 * noise)
  elif kind == "blue":
    base = np.array([0.22, 0.32, 0.52], np.float32) * uniform(rng, 0.8, 1.2)
    period = uniform(rng, 3.0, 6.0) / max(height, width)
    weave = 0.5 * (np.sin(2 * math.pi * xx / period) * np.sin(2 * math.pi * yy / period))[..., None]
    image = base * (1.0 + 0.3 * ramp + 0.08 * noise + 0.05 * weave)
  elif kind == "bench":
    base = np.array([0.46, 0.39, 0.31], np.float32) * uniform(rng, 0.8, 1.2)
    grain = np.sin(2 * math.pi * (yy * uniform(rng, 8, 20) + 0.3 * noise[..., 0]))[..., None]
    image = base * (1.0 + 0.3 * ramp + 0.04 * grain)
  else:
    raise ValueError(f"unknown background {kind!r}")
  return np.clip(image, 0, 1)


def drop_shadow(canvas: np.ndarray, alpha: np.ndarray, light: np.ndarray, scale: float) -> np.ndarray:
  """The background darkened where the blade's shadow falls (away from the light)."""
  dy, dx = int(round(-light[1] * 6 * scale)), int(round(-light[0] * 6 * scale))
  # Blurred at half resolution: a soft shadow has no detail to lose.
  half = np.roll(alpha, (dy, dx), axis=(0, 1))[::2, ::2]
  shadow = ndimage.gaussian_filter(half, 1.5 * scale).repeat(2, axis=0).repeat(2, axis=1)
  return canvas * (1.0 - 0.45 * shadow[: canvas.shape[0], : canvas.shape[1]])[..., None]


def finish(image: np.ndarray, rng: np.random.Generator, exposure: float = 1.0, gamma: float = 1.0) -> np.ndarray:
  """Exposure, gamma, 8-bit quantisation, sensor noise (uniform, ±4 grey levels)."""
  image = np.clip(image * np.float32(exposure * 255), 0, 255)
  if gamma != 1.0:
    image = 255 * (image / 255) ** np.float32(gamma)
  levels = (image + 0.5).astype(np.int16) + rng.integers(-4, 5, image.shape, dtype=np.int16)
  return np.clip(levels, 0, 255).astype(np.uint8)
