"""Convolution layers written as matrix products where that is exact.

XLA's CPU convolution backward is slow (shared/notes/cpu-performance.md): a 1×1 convolution, a 16×16 stride-16
patch embedding and a 2×2 stride-2 transposed convolution (non-overlapping outputs) are plain matrix products on
reshaped tensors, on every backend. 3×3 convolutions are a real choice, made here and nowhere else: patches + one
matmul ("im2col") or `lax.conv` ("native"). "auto" is native on every backend: on the CPU it is the faster form,
forward and backward, once YNNPACK's convolution fusion is off, as it is in every compiled function of a run
(`training.steps.compiler_options`); with it on, the native backward is several times slower than im2col.

Kernels are stored HWIO (kh, kw, in, out) whatever the form, so weight import has one layout per layer type.
Every matmul takes its operands in the compute dtype and accumulates in float32 (`matmul`): with bfloat16 this
is the fast and accurate form on every backend (a bf16-output dot is slower than float32 on the CPU).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
CONV3X3_FORMS = ("auto", "im2col", "native")


def conv3x3_form(form: str) -> str:
  if form not in CONV3X3_FORMS:
    raise ValueError(f"model.conv3x3 must be one of {CONV3X3_FORMS}, got {form!r}")
  return "native" if form == "auto" else form


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
    x = x.astype(self.dtype)
    if conv3x3_form(self.form) == "native":
      return jax.lax.conv_general_dilated(x, kernel.astype(self.dtype), (1, 1), ((1, 1), (1, 1)),
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                          preferred_element_type=jnp.float32).astype(self.dtype)
    b, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # Channel order (dy, dx, c) matches kernel.reshape(9c, out).
    columns = jnp.concatenate([padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=-1)
    return matmul(columns, kernel.reshape(9 * c, self.features), self.dtype).astype(self.dtype)


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
