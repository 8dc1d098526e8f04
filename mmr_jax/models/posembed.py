"""Fixed 2-D sin-cos position tables (MAE formula) and PyTorch-exact bicubic resizing of them (docs/spec.md §1).

Everything here is computed once in float64 NumPy at trace time and enters the compiled program as a constant.
"""

import functools

import numpy as np


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  """[sin(p·ω_k) for k < dim/2, cos(p·ω_k) for k < dim/2], ω_k = 10000^(−2k/dim): (len(positions), dim)."""
  if dim % 2:
    raise ValueError(f"sin-cos embedding width must be even, got {dim}")
  omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


@functools.lru_cache(maxsize=32)
def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
  """MAE's 2-D table for raster-ordered tokens (index = row·grid_w + col): (grid_h·grid_w, dim) float32.

  The first dim/2 channels encode the column (x), the last dim/2 the row (y). No cls row.
  """
  if dim % 4:
    raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
  rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
  table = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
  table = table.astype(np.float32)
  table.setflags(write=False)
  return table


def torch_bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) matrix of `F.interpolate(mode='bicubic', align_corners=False)` along one axis.

  PyTorch's kernel: cubic convolution with a = −0.75, source x = (i + 0.5)·in/out − 0.5 (not clamped), taps at
  floor(x) − 1 … floor(x) + 2 with indices clamped to the edge, no antialiasing.
  """
  a = -0.75

  def near(t):  # |t| <= 1
    return ((a + 2) * t - (a + 3)) * t * t + 1

  def far(t):  # 1 < |t| < 2
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

  matrix = np.zeros((size_out, size_in), np.float64)
  scale = size_in / size_out
  for i in range(size_out):
    x = (i + 0.5) * scale - 0.5
    x0 = int(np.floor(x))
    t = x - x0
    weights = (far(t + 1), near(t), near(1 - t), far(2 - t))
    for offset, weight in zip(range(-1, 3), weights):
      matrix[i, min(max(x0 + offset, 0), size_in - 1)] += weight
  return matrix


def resize_table(table: np.ndarray, grid_in: tuple[int, int], grid_out: tuple[int, int]) -> np.ndarray:
  """Resizes a (gh·gw, dim) position table to another grid the way the published code does (bicubic)."""
  if tuple(grid_in) == tuple(grid_out):
    return table
  dim = table.shape[-1]
  grid = table.reshape(*grid_in, dim).astype(np.float64)
  resized = np.einsum(
    "ai,bj,ijd->abd", torch_bicubic_matrix(grid_in[0], grid_out[0]), torch_bicubic_matrix(grid_in[1], grid_out[1]), grid
  )
  return resized.reshape(grid_out[0] * grid_out[1], dim).astype(np.float32)


@functools.lru_cache(maxsize=32)
def encoder_table(dim: int, pretrain_grid: int, grid_h: int, grid_w: int) -> np.ndarray:
  """The encoder's fixed table: sin-cos at the pretraining grid, resized bicubically to the image's grid."""
  table = resize_table(sincos_2d(dim, pretrain_grid, pretrain_grid), (pretrain_grid, pretrain_grid), (grid_h, grid_w))
  table.setflags(write=False)
  return table
