"""The paper's two equations: the training loss (Eq. 1) and the anomaly map with its image score (Eq. 2).

All functions are pure jnp and jit-compatible; the resampling and smoothing are exact linear maps built once in
float64 NumPy (as matrices) and applied as matmuls, so they run on the accelerator with the rest.
"""

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST


def cosine_distance(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """1 − cos(a, b) along the channel (last) axis, PyTorch's `F.cosine_similarity` (norms clamped at eps)."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  norms = jnp.maximum(jnp.linalg.norm(a, axis=-1), eps) * jnp.maximum(jnp.linalg.norm(b, axis=-1), eps)
  return 1.0 - jnp.sum(a * b, axis=-1) / norms


def reconstruction_loss(
  teacher: Sequence[jax.Array], student: Sequence[jax.Array], weights: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  """Eq. 1: per scale, 1 − cos at every position, mean over all B·H·W positions; summed over scales.

  Returns (total, per_scale (S,)). Visible and hidden positions count alike, as in the published code.
  `weights` (B,), 1 for real images and 0 for padding rows, makes the mean one over the real images only (every
  image has the same H·W positions, so it is the mean over their positions).
  """
  if weights is None:
    per_scale = [jnp.mean(cosine_distance(t, s)) for t, s in zip(teacher, student)]
  else:
    weights = weights.astype(jnp.float32)
    per_scale = [
      jnp.sum(weights * jnp.mean(cosine_distance(t, s), axis=(1, 2))) / jnp.sum(weights)
      for t, s in zip(teacher, student)
    ]
  per_scale = jnp.stack(per_scale)
  return jnp.sum(per_scale), per_scale


@functools.lru_cache(maxsize=64)
def align_corners_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) matrix of bilinear resampling with align_corners=True along one axis."""
  matrix = np.zeros((size_out, size_in), np.float64)
  if size_in == 1 or size_out == 1:
    matrix[:, 0] = 1.0
    return matrix.astype(np.float32)
  source = np.arange(size_out) * ((size_in - 1) / (size_out - 1))
  left = np.minimum(np.floor(source).astype(int), size_in - 2)
  frac = source - left
  matrix[np.arange(size_out), left] = 1.0 - frac
  matrix[np.arange(size_out), left + 1] += frac
  return matrix.astype(np.float32)


@functools.lru_cache(maxsize=64)
def gaussian_matrix(size: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
  """(size, size) matrix of `scipy.ndimage.gaussian_filter1d(mode='reflect')`: radius int(truncate·σ + 0.5),
  borders mirrored with the edge sample repeated (d c b a | a b c d | d c b a), as often as the radius needs."""
  radius = int(truncate * sigma + 0.5)
  offsets = np.arange(-radius, radius + 1)
  weights = np.exp(-0.5 * (offsets / sigma) ** 2)
  weights /= weights.sum()
  matrix = np.zeros((size, size), np.float64)
  for i in range(size):
    j = np.mod(i + offsets, 2 * size)
    j = np.where(j >= size, 2 * size - 1 - j, j)
    np.add.at(matrix[i], j, weights)
  return matrix.astype(np.float32)


def _apply_separable(maps: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
  """maps (..., h, w) → rows @ maps @ colsᵀ: (..., H, W)."""
  maps = jnp.einsum("Hh,...hw->...Hw", jnp.asarray(rows), maps, precision=HIGHEST)
  return jnp.einsum("...Hw,Ww->...HW", maps, jnp.asarray(cols), precision=HIGHEST)


class AnomalyMaps(NamedTuple):
  per_scale: jax.Array  # (B, S, H, W): 1 − cos per scale, upsampled.
  raw: jax.Array  # (B, H, W): their sum.
  smoothed: jax.Array  # (B, H, W): after the Gaussian; the anomaly map.
  score: jax.Array  # (B,): the image score, max of the smoothed map.


def anomaly_maps(
  teacher: Sequence[jax.Array],
  student: Sequence[jax.Array],
  image_size: tuple[int, int],
  sigma: float = 4.0,
  truncate: float = 4.0,
) -> AnomalyMaps:
  """Eq. 2: per scale 1 − cos(teacher, student), bilinearly upsampled (align_corners=True) to the image size,
  summed, smoothed with a Gaussian (σ = 4, scipy's 'reflect' borders); image score = max of the result."""
  distances = [cosine_distance(t, s) for t, s in zip(teacher, student)]
  return maps_from_distances(distances, image_size, sigma, truncate)


def maps_from_distances(
  distances: Sequence[jax.Array], image_size: tuple[int, int], sigma: float = 4.0, truncate: float = 4.0
) -> AnomalyMaps:
  """Eq. 2 from its per-scale distance maps (B, h, w): upsampled, summed, smoothed, maximum. `anomaly_maps` gives it
  1 − cos(t, s); the domain adaptation its own distances (mmr_jax/adaptation.py)."""
  height, width = image_size
  per_scale = []
  for distance in distances:
    h, w = distance.shape[1:]
    per_scale.append(_apply_separable(distance, align_corners_matrix(h, height), align_corners_matrix(w, width)))
  per_scale = jnp.stack(per_scale, axis=1)
  raw = jnp.sum(per_scale, axis=1)
  smoothed = _apply_separable(raw, gaussian_matrix(height, sigma, truncate), gaussian_matrix(width, sigma, truncate))
  return AnomalyMaps(per_scale, raw, smoothed, image_score(smoothed))


def image_score(anomaly_map: jax.Array) -> jax.Array:
  """Eq. 2's image-level score: the maximum of the smoothed map, (B, H, W) → (B,)."""
  return jnp.max(anomaly_map, axis=(-2, -1))
