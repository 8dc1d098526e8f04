"""Eq. 1 and Eq. 2 against independent references: scipy's Gaussian, a per-pixel align_corners=True loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from mmr_jax import objectives


def bilinear_align_corners_loop(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """PyTorch's bilinear interpolation with align_corners=True, one output pixel at a time."""
  in_h, in_w = image.shape
  out = np.zeros((out_h, out_w))
  for i in range(out_h):
    y = i * (in_h - 1) / (out_h - 1) if out_h > 1 else 0.0
    y0 = min(int(np.floor(y)), in_h - 1)
    y1 = min(y0 + 1, in_h - 1)
    for j in range(out_w):
      x = j * (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0
      x0 = min(int(np.floor(x)), in_w - 1)
      x1 = min(x0 + 1, in_w - 1)
      dy, dx = y - y0, x - x0
      out[i, j] = (
        (1 - dy) * (1 - dx) * image[y0, x0]
        + (1 - dy) * dx * image[y0, x1]
        + dy * (1 - dx) * image[y1, x0]
        + dy * dx * image[y1, x1]
      )
  return out


@pytest.mark.parametrize("shape", [(64, 64), (10, 7), (224, 224)])
def test_gaussian_matches_scipy_reflect(shape):
  maps = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
  ours = objectives._apply_separable(
    jnp.asarray(maps), objectives.gaussian_matrix(shape[0], 4.0), objectives.gaussian_matrix(shape[1], 4.0)
  )
  reference = np.stack(
    [ndimage.gaussian_filter(m.astype(np.float64), sigma=4, mode="reflect", truncate=4.0) for m in maps]
  )
  np.testing.assert_allclose(np.asarray(ours), reference, atol=2e-6)


@pytest.mark.parametrize("size_in,size_out", [((4, 4), (64, 64)), ((14, 14), (224, 224)), ((3, 5), (9, 11))])
def test_bilinear_align_corners(size_in, size_out):
  image = np.random.default_rng(1).random(size_in)
  ours = objectives._apply_separable(
    jnp.asarray(image, jnp.float32),
    objectives.align_corners_matrix(size_in[0], size_out[0]),
    objectives.align_corners_matrix(size_in[1], size_out[1]),
  )
  np.testing.assert_allclose(np.asarray(ours), bilinear_align_corners_loop(image, *size_out), atol=1e-6)
  # The corners are the input's corners exactly (that is what align_corners means).
  np.testing.assert_allclose(
    np.asarray(ours)[[0, 0, -1, -1], [0, -1, 0, -1]], image[[0, 0, -1, -1], [0, -1, 0, -1]], atol=1e-6
  )


def feature_pyramid(key, batch=2):
  keys = jax.random.split(key, 3)
  shapes = [(batch, 16, 16, 8), (batch, 8, 8, 16), (batch, 4, 4, 32)]
  return tuple(jax.random.normal(k, s) for k, s in zip(keys, shapes))


def cosine_distance_f64(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return 1 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_loss_is_mean_cosine_distance_summed_over_scales():
  teacher, student = feature_pyramid(jax.random.key(0)), feature_pyramid(jax.random.key(1))
  total, per_scale = objectives.reconstruction_loss(teacher, student)
  expected = [cosine_distance_f64(t, s).mean() for t, s in zip(teacher, student)]
  np.testing.assert_allclose(per_scale, expected, rtol=1e-5)
  np.testing.assert_allclose(total, sum(expected), rtol=1e-5)
  same, _ = objectives.reconstruction_loss(teacher, teacher)
  assert abs(float(same)) < 1e-5


def test_weighted_loss_is_the_mean_over_the_real_images_only():
  """An epoch's last batch is padded to the compiled shape with weight-0 rows: its loss and gradients must be
  those of the real images alone, as the published code computes on its smaller last batch."""
  teacher, student = feature_pyramid(jax.random.key(4)), feature_pyramid(jax.random.key(5))
  weights = jnp.array([1.0, 0.0])  # Image 1 pads.
  weighted = lambda student: objectives.reconstruction_loss(teacher, student, weights)[0]
  real_only = lambda student: objectives.reconstruction_loss([t[:1] for t in teacher], student)[0]
  np.testing.assert_allclose(weighted(student), real_only([s[:1] for s in student]), rtol=1e-6)
  grads, real_grads = jax.grad(weighted)(student), jax.grad(real_only)([s[:1] for s in student])
  for g, real in zip(grads, real_grads):
    np.testing.assert_allclose(g[:1], real, rtol=1e-5, atol=1e-9)
    assert not np.asarray(g[1:]).any()  # Padding contributes nothing.
  all_real, _ = objectives.reconstruction_loss(teacher, student, jnp.ones(2))
  np.testing.assert_allclose(all_real, objectives.reconstruction_loss(teacher, student)[0], rtol=1e-6)


def test_anomaly_map_pipeline():
  teacher, student = feature_pyramid(jax.random.key(2)), feature_pyramid(jax.random.key(3))
  maps = objectives.anomaly_maps(teacher, student, (64, 64))
  upsampled = [
    np.stack([bilinear_align_corners_loop(cosine_distance_f64(t, s)[b], 64, 64) for b in range(2)])
    for t, s in zip(teacher, student)
  ]
  np.testing.assert_allclose(maps.per_scale, np.stack(upsampled, axis=1), atol=2e-5)
  raw = sum(upsampled)
  np.testing.assert_allclose(maps.raw, raw, atol=5e-5)
  smoothed = np.stack([ndimage.gaussian_filter(r, sigma=4) for r in raw])
  np.testing.assert_allclose(maps.smoothed, smoothed, atol=5e-5)
  np.testing.assert_allclose(maps.score, smoothed.reshape(2, -1).max(axis=1), atol=5e-5)
