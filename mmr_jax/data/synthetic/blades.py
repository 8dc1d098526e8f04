"""AeBAD-S images: one blade per image, in a test domain's scene."""

from __future__ import annotations

import math

import numpy as np

from mmr_jax.data.synthetic.scene import Blade
from mmr_jax.data.synthetic.scene import Camera
from mmr_jax.data.synthetic.scene import TRAIN_BACKGROUNDS
from mmr_jax.data.synthetic.scene import CROP_FRACTION
from mmr_jax.data.synthetic.scene import uniform
from mmr_jax.data.synthetic.defects import make_defect
from mmr_jax.data.synthetic.shading import Look
from mmr_jax.data.synthetic.shading import background_image
from mmr_jax.data.synthetic.shading import blade_surface
from mmr_jax.data.synthetic.shading import defect_truth
from mmr_jax.data.synthetic.shading import drop_shadow
from mmr_jax.data.synthetic.shading import finish
from mmr_jax.data.synthetic.shading import light_direction
from mmr_jax.data.synthetic.shading import paste
from mmr_jax.data.synthetic.shading import shade
from mmr_jax.data.synthetic.shading import visible_pixels


def _train_look(rng: np.random.Generator) -> Look:
  grey = uniform(rng, 0.55, 0.72)
  tint = np.array([1.0, uniform(rng, 0.96, 1.0), uniform(rng, 0.9, 1.02)])
  return Look(
    light=light_direction(uniform(rng, 200, 250), uniform(rng, 35, 60)), light_colour=np.ones(3), albedo=grey * tint
  )


def render_blade_image(
  rng: np.random.Generator,
  domain: str,
  defect_kind: str,
  hw: tuple[int, int],
  background: str | None = None,
  variant: int | None = None,
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
  exposure, gamma, mirror = uniform(rng, 0.92, 1.08), 1.0, False
  angle = math.radians(uniform(rng, -12, 12))
  length = uniform(rng, 0.42, 0.52) * height  # With platform and root: 0.5-0.65 of the height, inside the crop.
  half_chord = uniform(rng, 0.11, 0.14) * height
  second = either(0)
  if background is None:
    background = (("blue", "bench") if domain == "background" else TRAIN_BACKGROUNDS)[int(second)]
  if domain == "illumination":
    look.light = light_direction(uniform(rng, -40, 80), uniform(rng, 15, 75))
    warm, cool = np.array([1.0, 0.92, 0.82], np.float32), np.array([0.86, 0.93, 1.0], np.float32)
    look.light_colour = warm if either(1) else cool
    exposure = uniform(rng, 0.6, 0.8) if second else uniform(rng, 1.2, 1.4)
    gamma = uniform(rng, 0.8, 1.25)
  elif domain == "view":
    angle = math.radians(uniform(rng, 15, 30) * rng.choice([-1, 1]))  # Training: within ±12°.
    if second:
      half_chord *= uniform(rng, 0.65, 0.8)  # Seen more edge-on: foreshortened chord.
    else:
      length *= uniform(rng, 1.1, 1.2)  # Closer.
    mirror = either(1)
  blade = Blade(
    origin=(0.0, 0.0),
    angle=angle - math.pi / 2,
    length=length,
    half_chord=half_chord,
    # One blade model, as in AeBAD: the shape varies only a little from image to image.
    taper=uniform(rng, 0.3, 0.36),
    bend=uniform(rng, -0.015, 0.015),
    tip_tilt=uniform(rng, 0.12, 0.2),
    twist=uniform(rng, 0.15, 0.3),
  )
  # Centre the blade's span (root block to tip) on a jittered image centre.
  centre_u = 0.5 * (blade.extent()[0] + blade.length)
  cx = width / 2 + uniform(rng, -0.05, 0.05) * height
  cy = height / 2 + uniform(rng, -0.05, 0.05) * height
  span = (math.cos(blade.angle), math.sin(blade.angle))
  blade.origin = (cx - centre_u * span[0], cy - centre_u * span[1])

  camera = Camera()
  scale = height / 256
  surface = blade_surface(blade, camera, look, rng, hw)
  defect, truth = None, None
  if defect_kind != "good":
    for _ in range(50):  # Redraw a defect that the centre crop would cut away.
      defect = make_defect(defect_kind, blade, rng, camera.pixel * scale)
      truth = defect_truth(surface, defect, hw)
      if visible_pixels(truth, CROP_FRACTION) >= max(4 * scale**2, 2):
        break
  colour, alpha = shade(surface, look, defect)
  canvas = background_image(background, height, width, rng)
  if background != "black":
    full_alpha = np.zeros(hw, np.float32)
    full_alpha[surface.box] = alpha
    canvas = drop_shadow(canvas, full_alpha, look.light, scale)
  paste(canvas, np.zeros(hw), surface, colour, alpha)
  image = finish(canvas, rng, exposure, gamma)
  if mirror:
    image = image[:, ::-1]
    truth = None if truth is None else truth[:, ::-1]
  return image, truth
