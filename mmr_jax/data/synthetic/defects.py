"""The four AeBAD defect kinds, in the blade's (u, t) frame so that they move with it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mmr_jax.data.synthetic.scene import Blade
from mmr_jax.data.synthetic.scene import uniform


@dataclasses.dataclass
class Defect:
  kind: str
  centre: tuple[float, float] = (0.0, 0.0)  # Blobs (breakdown, ablation).
  radius: float = 0.0
  harmonics: tuple[tuple[float, float], ...] = ()  # (amplitude, phase) for k = 2, 3, ...
  paths: tuple[np.ndarray, ...] = ()  # Polylines (fracture, groove): arrays (n, 2) of (u, t).
  width: float = 0.0
  strength: float = 1.0


def blob_distance(defect: Defect, u: np.ndarray, t: np.ndarray, margin: float) -> np.ndarray:
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


def path_distance(path: np.ndarray, u: np.ndarray, t: np.ndarray, reach: float) -> np.ndarray:
  """Distance to a polyline, exact within `reach` of its bounding box and `inf` beyond (saves the far pixels)."""
  best = np.full(u.shape, np.inf)
  near = (
    (u > path[:, 0].min() - reach)
    & (u < path[:, 0].max() + reach)
    & (t > path[:, 1].min() - reach)
    & (t < path[:, 1].max() + reach)
  )
  un, tn = u[near], t[near]
  local = np.full(un.shape, np.inf)
  for (u0, t0), (u1, t1) in zip(path[:-1], path[1:]):
    du, dt = u1 - u0, t1 - t0
    length2 = du * du + dt * dt + 1e-12
    k = np.clip(((un - u0) * du + (tn - t0) * dt) / length2, 0.0, 1.0)
    local = np.minimum(local, np.hypot(un - u0 - k * du, tn - t0 - k * dt))
  best[near] = local
  return best


def _jagged_path(
  rng: np.random.Generator, start: np.ndarray, direction: float, length: float, steps: int, jitter: float
) -> np.ndarray:
  points = [start]
  angle = direction
  for _ in range(steps):
    angle += rng.normal(0.0, jitter)
    step = length / steps * uniform(rng, 0.6, 1.4)
    points.append(points[-1] + step * np.array([math.cos(angle), math.sin(angle)]))
  return np.array(points)


def make_defect(kind: str, blade: Blade, rng: np.random.Generator, pixel: float) -> Defect:
  """A random defect of `kind` on `blade` (sizes relative to its half chord; line widths in pixels)."""
  chord = blade.half_chord
  harmonics = tuple((uniform(rng, 0.05, 0.22), uniform(rng, 0, 2 * math.pi)) for _ in range(3))
  side = int(rng.choice([-1, 1]))
  if kind == "breakdown":
    if rng.random() < 0.25:  # A corner of the tip.
      s = 1.0
      u, t = blade.edge_point(s, side)
      u += blade.tip_tilt * side * chord
    else:
      s = uniform(rng, 0.25, 0.92)
      u, t = blade.edge_point(s, side)
    radius = uniform(rng, 0.7, 1.1) * chord
    return Defect(kind, centre=(u, t + side * 0.25 * radius), radius=radius, harmonics=harmonics)
  if kind == "ablation":
    s = uniform(rng, 0.2, 0.85)
    radius = uniform(rng, 0.6, 1.0) * chord
    room = max(float(blade.half_width(s)) - 0.6 * radius, 0.0)
    t = float(blade.midline(s)) + uniform(rng, -room, room)
    return Defect(
      kind, centre=(s * blade.length, t), radius=radius, harmonics=harmonics, strength=uniform(rng, 0.65, 0.95)
    )
  if kind == "fracture":
    s = uniform(rng, 0.2, 0.9)
    start = np.array(blade.edge_point(s, side)) + np.array([0.0, side * 2.0 * pixel])  # Begins outside the edge.
    inward = math.atan2(-side, 0.0) + uniform(rng, -0.6, 0.6)  # Across the chord, into the blade.
    main = _jagged_path(rng, start, inward, uniform(rng, 1.0, 1.8) * chord, 8, 0.35)
    paths = [main]
    if rng.random() < 0.5:  # A branch from somewhere along the crack.
      fork = main[int(rng.integers(2, len(main) - 1))]
      paths.append(_jagged_path(rng, fork, inward + uniform(rng, 0.5, 1.0) * side, 0.4 * chord, 4, 0.3))
    return Defect(kind, paths=tuple(paths), width=uniform(rng, 2.5, 3.5) * pixel, strength=uniform(rng, 0.6, 0.8))
  if kind == "groove":
    s = uniform(rng, 0.2, 0.85)
    length = uniform(rng, 1.0, 2.0) * chord
    angle = uniform(rng, 0, math.pi)
    centre = np.array([s * blade.length, float(blade.midline(s)) + uniform(rng, -0.4, 0.4) * chord])
    direction = np.array([math.cos(angle), math.sin(angle)])
    bow = uniform(rng, -0.08, 0.08) * length * np.array([-direction[1], direction[0]])
    k = np.linspace(-0.5, 0.5, 7)[:, None]
    path = centre + k * length * direction + (1 - 4 * k**2) * bow
    return Defect(kind, paths=(path,), width=uniform(rng, 2.0, 3.0) * pixel, strength=uniform(rng, 0.45, 0.65))
  raise ValueError(f"unknown defect kind {kind!r}")
