"""Convolution layers written as matrix products where that is exact.

XLA's CPU convolution backward is slow (shared/notes/cpu-performance.md): a 1×1 convolution, a 16×16 stride-16
patch embedding and a 2×2 stride-2 transposed convolution (non-overlapping outputs) are plain matrix products on
reshaped tensors, on every backend. 3×3 convolutions are a real choice, made here and nowhere else: patches + one
matmul ("im2col"), `lax.conv` ("native") or Winograd's F(2×2, 3×3) as 16 matmuls ("winograd"). "auto" is
Winograd on the CPU (the FPN's three 3×3 convolutions, forward and backward at batch 16, 224²: 3.7 s against
4.9 s native and 5.7 s im2col) and native elsewhere, where the vendor libraries choose their own algorithms.
The native form is fast on the CPU only with YNNPACK's convolution fusion off, as it is in every compiled
function of a run (`training.steps.compiler_options`).

Kernels are stored HWIO (kh, kw, in, out) whatever the form, so weight import has one layout per layer type.
Every matmul takes its operands in the compute dtype and accumulates in float32 (`matmul`): with bfloat16 this
is the fast and accurate form on every backend (a bf16-output dot is slower than float32 on the CPU).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
CONV3X3_FORMS = ("auto", "im2col", "native", "winograd")


def conv3x3_form(form: str) -> str:
  """The form a config's `model.conv3x3` stands for: "auto" is Winograd on the CPU, native elsewhere."""
  if form not in CONV3X3_FORMS:
    raise ValueError(f"model.conv3x3 must be one of {CONV3X3_FORMS}, got {form!r}")
  if form == "auto":
    return "winograd" if jax.default_backend() == "cpu" else "native"
  return form


def matmul(x: jax.Array, kernel: jax.Array, dtype: Dtype) -> jax.Array:
  """x @ kernel (last axis of x, first of kernel) on `dtype` operands, accumulated and returned in float32."""
  return jnp.dot(x.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32)


class Dense(nn.Module):
  """`flax.linen.Dense` (same parameters and initialisers) computed by `matmul`, the bias added in float32."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return (matmul(x, kernel, self.dtype) + bias).astype(self.dtype)


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """(B, H, W, C) → (B, H/p · W/p, p·p·C), raster token order, each patch flattened as (row, col, channel)."""
  b, h, w, c = images.shape
  if h % patch or w % patch:
    raise ValueError(f"image size {h}×{w} is not a multiple of the patch size {patch}")
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class PatchEmbed(nn.Module):
  """Conv(k=p, s=p) on already-patchified pixels (B, T, p·p·C) → (B, T, width): one matmul."""
  width: int
  patch: int
  in_channels: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.xavier_uniform(),
                        (self.patch, self.patch, self.in_channels, self.width))
    bias = self.param("bias", nn.initializers.zeros, (self.width,))
    return (matmul(patches, kernel.reshape(-1, self.width), self.dtype) + bias).astype(self.dtype)


class Conv1x1(nn.Module):
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.kaiming_normal(), (1, 1, x.shape[-1], self.features))
    return matmul(x, kernel[0, 0], self.dtype).astype(self.dtype)


class Conv3x3(nn.Module):
  """3×3 convolution, stride 1, zero padding 1, no bias (the FPN's)."""
  features: int
  form: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.kaiming_normal(), (3, 3, x.shape[-1], self.features))
    form = conv3x3_form(self.form)
    if form == "winograd":
      return winograd_conv3x3(x, kernel, self.dtype).astype(self.dtype)
    x = x.astype(self.dtype)
    if form == "native":
      return jax.lax.conv_general_dilated(x, kernel.astype(self.dtype), (1, 1), ((1, 1), (1, 1)),
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                          preferred_element_type=jnp.float32).astype(self.dtype)
    b, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # Channel order (dy, dx, c) matches kernel.reshape(9c, out).
    columns = jnp.concatenate([padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=-1)
    return matmul(columns, kernel.reshape(9 * c, self.features), self.dtype).astype(self.dtype)


# Winograd's F(2×2, 3×3) (Lavin & Gray 2016): a 2×2 output tile is A^T [(G k G^T) ⊙ (B^T d B)] A for its 4×4
# input tile d, 16 products instead of 36. The transforms have entries 0, ±1, ±1/2, so they are written as adds.
_WINOGRAD_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_WINOGRAD_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_WINOGRAD_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def _combine(matrix, parts: list) -> list:
  """[Σ_j matrix[i][j] · parts[j] for each row i], with no work for zero coefficients."""
  rows = []
  for coefficients in matrix:
    terms = [p if c == 1 else -p if c == -1 else c * p for c, p in zip(coefficients, parts) if c != 0]
    rows.append(sum(terms[1:], terms[0]))
  return rows


def winograd_conv3x3(x: jax.Array, kernel: jax.Array, dtype: Dtype) -> jax.Array:
  """3×3 convolution, stride 1, zero padding 1, by Winograd F(2×2, 3×3): the 16 tile products are 16 matmuls
  (B·H·W/4, C) @ (C, out), 4/9 of the direct method's multiplies. Transforms in float32, products in `dtype`
  with float32 accumulation; agrees with `lax.conv` to float32 rounding (tests/test_models.py)."""
  b, h, w, c = x.shape
  x = x.astype(jnp.float32)
  # Odd sides get one more zero row/column (beyond the padding), whose outputs are cropped.
  padded = jnp.pad(x, ((0, 0), (1, 1 + h % 2), (1, 1 + w % 2), (0, 0)))
  th, tw = (h + 1) // 2, (w + 1) // 2
  tiles = [[padded[:, i:i + 2 * th:2, j:j + 2 * tw:2] for j in range(4)] for i in range(4)]  # d[i][j]
  columns = [_combine(_WINOGRAD_BT, [tiles[i][j] for i in range(4)]) for j in range(4)]  # (B^T d)[p] per j
  v = jnp.stack([t for p in range(4) for t in _combine(_WINOGRAD_BT, [columns[j][p] for j in range(4)])])
  u = jnp.einsum("pi,ijco,qj->pqco", jnp.asarray(_WINOGRAD_G, jnp.float32), kernel.astype(jnp.float32),
                 jnp.asarray(_WINOGRAD_G, jnp.float32)).reshape(16, c, -1)
  m = jnp.einsum("tbhwc,tco->tbhwo", v.astype(dtype), u.astype(dtype), preferred_element_type=jnp.float32)
  m = m.reshape(4, 4, *m.shape[1:])
  rows = [_combine(_WINOGRAD_AT, [m[p, q] for p in range(4)]) for q in range(4)]  # (A^T m)[r] per q
  y = jnp.stack([jnp.stack(_combine(_WINOGRAD_AT, [rows[q][r] for q in range(4)]), axis=3) for r in range(2)],
                axis=2)  # (B, th, r, tw, s, out)
  return y.reshape(b, 2 * th, 2 * tw, -1)[:, :h, :w]


class ConvTranspose2x2(nn.Module):
  """ConvTranspose k=2, s=2 with bias: out[2i+a, 2j+b, o] = Σ_c x[i, j, c]·K[a, b, c, o] + bias[o]."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.kaiming_normal(), (2, 2, c, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    flat = kernel.transpose(2, 0, 1, 3).reshape(c, 4 * self.features)
    y = matmul(x, flat, self.dtype).reshape(b, h, w, 2, 2, self.features)
    y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.features)
    return (y + bias).astype(self.dtype)
