"""AeBAD-V frames: a disk of blades turning in front of a camera."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mmr_jax.data.synthetic.scene import Blade
from mmr_jax.data.synthetic.scene import Camera
from mmr_jax.data.synthetic.scene import DEFECT_TYPES
from mmr_jax.data.synthetic.scene import edge_coverage
from mmr_jax.data.synthetic.scene import uniform
from mmr_jax.data.synthetic.defects import Defect
from mmr_jax.data.synthetic.defects import make_defect
from mmr_jax.data.synthetic.shading import Look
from mmr_jax.data.synthetic.shading import background_image
from mmr_jax.data.synthetic.shading import blade_surface
from mmr_jax.data.synthetic.shading import defect_truth
from mmr_jax.data.synthetic.shading import finish
from mmr_jax.data.synthetic.shading import light_direction
from mmr_jax.data.synthetic.shading import paste
from mmr_jax.data.synthetic.shading import shade

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


TRAIN_VIEWS = {
  "seq1": View((0.5, 1.08), 0.6, 0.95, 0.0, (225, 50)),
  "seq2": View((0.4, 1.02), 0.62, 0.85, 8.0, (210, 45)),
}
TEST_VIEWS = {
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
  grey = uniform(rng, 0.55, 0.68)
  look = Look(light=light_direction(*view.light), light_colour=np.ones(3), albedo=grey * np.array([1.0, 0.98, 0.95]))
  blades = [
    Blade(
      origin=(0.0, 0.0),
      angle=0.0,
      length=0.95 * uniform(rng, 0.98, 1.02),
      half_chord=0.11 * uniform(rng, 0.97, 1.03),
      taper=0.3,
      bend=0.04,
      tip_tilt=0.15,
      twist=0.3,
      with_root=False,
    )
    for _ in range(_DISK_BLADES)
  ]
  defects = {}
  if defective:
    pixel = 1.0 / (view.zoom * hw[0]) * (hw[0] / 256)
    for index in rng.choice(_DISK_BLADES, size=2, replace=False):
      defects[int(index)] = make_defect(str(rng.choice(DEFECT_TYPES)), blades[index], rng, pixel)
  pitch = 2 * math.pi / _DISK_BLADES
  return Disk(blades, defects, look, uniform(rng, 0, 2 * math.pi), pitch * uniform(rng, 0.2, 0.3))


def render_disk_frame(
  seed: int, stream: int, view: View, frame: int, hw: tuple[int, int], defective: bool
) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 RGB frame, bool visible-defect mask) of one frame."""
  height, width = hw
  disk = _make_disk(seed, stream, view, hw, defective)
  camera = Camera(
    cx=view.hub[0] * width,
    cy=view.hub[1] * height,
    zoom=view.zoom * height,
    tilt=view.tilt,
    roll=math.radians(view.roll_deg),
  )
  rng = np.random.default_rng([seed, stream, 1000 + frame])
  canvas = background_image("black", height, width, rng) + 0.06 * uniform(rng, 0.8, 1.2)
  # The hub: a dark disk, brighter towards the light.
  gy, gx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
  hx, hy = camera.to_plane(gx, gy)
  hub = edge_coverage(_HUB_RADIUS - np.hypot(hx, hy), camera.pixel)[..., None]
  hub_shade = 0.22 + 0.06 * np.clip((hx * disk.look.light[0] + hy * disk.look.light[1]) / _HUB_RADIUS, -1, 1)
  canvas = canvas * (1 - hub) + hub_shade[..., None] * hub
  coverage = np.zeros(hw)
  truth = np.zeros(hw, bool)
  angle0 = disk.start + frame * disk.speed
  for index, blade in enumerate(disk.blades):
    angle = angle0 + 2 * math.pi * index / _DISK_BLADES
    blade.angle = angle
    blade.origin = (0.97 * _HUB_RADIUS * math.cos(angle), 0.97 * _HUB_RADIUS * math.sin(angle))
    surface = blade_surface(blade, camera, disk.look, np.random.default_rng([seed, stream, 100 + index]), hw)
    if surface is None:
      continue
    defect = disk.defects.get(index)
    colour, alpha = shade(surface, disk.look, defect)
    truth[surface.box] &= alpha < 0.5  # This blade hides what lies under it.
    if defect is not None:
      truth |= defect_truth(surface, defect, hw)
    paste(canvas, coverage, surface, colour, alpha)
  return finish(canvas, rng, view.exposure), truth
