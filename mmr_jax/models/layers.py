"""Convolution layers written as matrix products where that is exact.

XLA's CPU convolution backward is slow (docs/cpu-performance.md): a 1×1 convolution, a 16×16 stride-16
patch embedding and a 2×2 stride-2 transposed convolution (non-overlapping outputs) are plain matrix products on
reshaped tensors, on every backend. k×k convolutions take one of two forms, named by the caller (`CONV_FORMS`):
the windows of the input + one matmul ("im2col") or `lax.conv` ("native"). Which is faster depends on the
platform, so the choice is made where a run starts (`mmr_jax.runtime.Platform.conv3x3_form`, with the
measurements) and arrives here as a plain value: nothing in this package looks at the host.

Kernels are stored HWIO (kh, kw, in, out) whatever the form, so weight import has one layout per layer type.
Every matmul takes its operands in the compute dtype and accumulates in float32 (`matmul`): with bfloat16 this
is the fast and accurate form on every backend (a bf16-output dot is slower than float32 on the CPU), and the
backward products take the compute dtype too (their float32 cotangent rounded to it).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
# How k×k convolutions are computed: the windows of the input + one matmul, or `lax.conv`. The choice is the
# caller's (mmr_jax.runtime.Platform resolves model.conv3x3 from the platform); both give the same result to rounding.
CONV_FORMS = ("im2col", "native")
# model.precision: of every dot and convolution without an explicit one (training.steps.at_precision).
PRECISIONS = ("default", "high", "highest")


def check_conv_form(form: str) -> str:
  if form not in CONV_FORMS:
    raise ValueError(
      f"a convolution form must be one of {CONV_FORMS} (model.conv3x3 is resolved at start-up), got {form!r}"
    )
  return form


def torch_default_kernel(in_axis: int = -2, out_axis: int = -1) -> nn.initializers.Initializer:
  """PyTorch's default for Conv2d / ConvTranspose2d weights: kaiming_uniform(a=√5) = U(±1/√fan_in).

  The published MMR initialises only Linear and LayerNorm layers, so its FPN convolutions keep this default
  (docs/spec.md §2). fan_in is PyTorch's: dimension 1 of the weight times the kernel area, which for a
  ConvTranspose2d weight (in, out, k, k) is out·k², so its HWIO kernel passes in_axis=-1.
  """
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=in_axis, out_axis=out_axis)


def torch_default_bias(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's default bias of a convolution: U(±1/√fan_in), fan_in as for its weight."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _dot_f32(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


@jax.custom_vjp
def _low_precision_dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return _dot_f32(x, kernel)


def _low_precision_dot_fwd(x, kernel):
  return _dot_f32(x, kernel), (x, kernel)


def _low_precision_dot_bwd(residuals, cotangent):
  # The cotangent arrives in float32 (the forward's output dtype); JAX's own transpose would then multiply
  # float32 by bfloat16, which XLA computes as a float32 dot. Rounded to the operands' dtype first, both backward
  # products run as bfloat16 dots with float32 accumulation, as the forward does (docs/cpu-performance.md).
  x, kernel = residuals
  g = cotangent.astype(x.dtype)
  batch_axes = tuple(range(x.ndim - 1))
  dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  dkernel = jax.lax.dot_general(x, g, ((batch_axes, batch_axes), ((), ())), preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_low_precision_dot.defvjp(_low_precision_dot_fwd, _low_precision_dot_bwd)


def matmul(x: jax.Array, kernel: jax.Array, dtype: Dtype) -> jax.Array:
  """x @ kernel (last axis of x, first of kernel) on `dtype` operands, accumulated and returned in float32.

  With a dtype below float32 the backward products take the same dtype (the cotangent is rounded to it, as
  mixed-precision training does everywhere); in float32 this is a plain dot and JAX's own gradient."""
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  if jnp.dtype(dtype) == jnp.float32:
    return _dot_f32(x, kernel)
  return _low_precision_dot(x, kernel)


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
    kernel = self.param(
      "kernel", nn.initializers.xavier_uniform(), (self.patch, self.patch, self.in_channels, self.width)
    )
    bias = self.param("bias", nn.initializers.zeros, (self.width,))
    return (matmul(patches, kernel.reshape(-1, self.width), self.dtype) + bias).astype(self.dtype)


class Conv1x1(nn.Module):
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", torch_default_kernel(), (1, 1, x.shape[-1], self.features))
    return matmul(x, kernel[0, 0], self.dtype).astype(self.dtype)


def _conv_padding(size: int, k: int, stride: int, rule: str) -> tuple[int, int]:
  if rule == "torch":
    return k // 2, k // 2
  total = max((-(-size // stride) - 1) * stride + k - size, 0)  # TensorFlow's SAME.
  return total // 2, total - total // 2


def _windows(x: jax.Array, k: int, stride: int, pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """(B, H, W, C) → (B, h, w, k²·C): the k² shifted, strided windows of the zero-padded input, channel order
  (dy, dx, c) as in kernel.reshape(k²C, out). Pure data movement."""
  b, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  out_h = (h + sum(pads[0]) - k) // stride + 1
  out_w = (w + sum(pads[1]) - k) // stride + 1
  limit = lambda dy, dx: (b, dy + (out_h - 1) * stride + 1, dx + (out_w - 1) * stride + 1, c)
  windows = [
    jax.lax.slice(padded, (0, dy, dx, 0), limit(dy, dx), (1, stride, stride, 1)) for dy in range(k) for dx in range(k)
  ]
  return windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)


def _bitwise_windows(x: jax.Array, k: int, stride: int, pads) -> jax.Array:
  """`_windows` of a bfloat16 array moved as its 16-bit patterns. XLA:CPU computes bfloat16 data movement in
  float32 (convert, pad, slice, concatenate, convert back): the k²-times-wider column array would be written
  twice and in twice the bytes (docs/cpu-performance.md). Not differentiable: callers define the gradient."""
  if x.dtype.itemsize != 2:
    return _windows(x, k, stride, pads)
  bits = jax.lax.bitcast_convert_type(x, jnp.uint16)
  return jax.lax.bitcast_convert_type(_windows(bits, k, stride, pads), x.dtype)


def patches_matmul(
  x: jax.Array, kernel: jax.Array, stride: int, pads: tuple[tuple[int, int], tuple[int, int]], dtype: Dtype
) -> jax.Array:
  """A k×k convolution (HWIO kernel) as one matmul on the windows of the padded input, returned in float32.

  Forward only (a frozen teacher's): no gradient reaches `x` or the kernel. `same_conv` is the differentiable
  form of the stride-1, size-preserving case."""
  x, kernel = jax.lax.stop_gradient(x), jax.lax.stop_gradient(kernel)
  columns = _bitwise_windows(x.astype(dtype), kernel.shape[0], stride, pads)
  return _dot_f32(columns, kernel.reshape(-1, kernel.shape[-1]).astype(dtype))


def _same_conv_f32(x: jax.Array, kernel: jax.Array) -> jax.Array:
  k = kernel.shape[0]
  pads = ((k // 2, k // 2),) * 2
  return _dot_f32(_bitwise_windows(x, k, 1, pads), kernel.reshape(-1, kernel.shape[-1]))


@jax.custom_vjp
def _same_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return _same_conv_f32(x, kernel)


def _same_conv_fwd(x, kernel):
  return _same_conv_f32(x, kernel), (x, kernel)


def _same_conv_bwd(residuals, cotangent):
  # dx is the convolution of the cotangent with the spatially flipped, in/out-transposed kernel; dkernel is
  # columnsᵀ · cotangent, the columns recomputed (a copy, cheaper to redo than to keep k² times the input).
  x, kernel = residuals
  k = kernel.shape[0]
  g = cotangent.astype(x.dtype)
  dx = _same_conv_f32(g, kernel[::-1, ::-1].transpose(0, 1, 3, 2))
  columns = _bitwise_windows(x, k, 1, ((k // 2, k // 2),) * 2)
  axes = tuple(range(x.ndim - 1))
  dkernel = jax.lax.dot_general(columns, g, ((axes, axes), ((), ())), preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dkernel.reshape(kernel.shape).astype(kernel.dtype)


_same_conv.defvjp(_same_conv_fwd, _same_conv_bwd)


def same_conv(x: jax.Array, kernel: jax.Array, dtype: Dtype) -> jax.Array:
  """Stride-1 k×k convolution, zero padding k // 2 (odd k), as im2col + one matmul on `dtype` operands,
  accumulated and returned in float32; its backward is two more such products (`_same_conv_bwd`)."""
  return _same_conv(x.astype(dtype), kernel.astype(dtype))


class Conv3x3(nn.Module):
  """3×3 convolution, stride 1, zero padding 1, no bias (the FPN's)."""

  features: int
  form: str = "native"  # CONV_FORMS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", torch_default_kernel(), (3, 3, x.shape[-1], self.features))
    if check_conv_form(self.form) == "im2col":
      return same_conv(x, kernel, self.dtype).astype(self.dtype)
    return jax.lax.conv_general_dilated(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      (1, 1),
      ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      preferred_element_type=jnp.float32,
    ).astype(self.dtype)


class ConvTranspose2x2(nn.Module):
  """ConvTranspose k=2, s=2 with bias: out[2i+a, 2j+b, o] = Σ_c x[i, j, c]·K[a, b, c, o] + bias[o]."""

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    kernel = self.param("kernel", torch_default_kernel(in_axis=-1, out_axis=-2), (2, 2, c, self.features))
    bias = self.param("bias", torch_default_bias(4 * self.features), (self.features,))
    flat = kernel.transpose(2, 0, 1, 3).reshape(c, 4 * self.features)
    y = matmul(x, flat, self.dtype).reshape(b, h, w, 2, 2, self.features)
    y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.features)
    return (y + bias).astype(self.dtype)


class Conv(nn.Module):
  """Bias-free convolution of a frozen teacher (HWIO kernel); no gradient flows through its im2col form.

  padding "torch": k // 2 on every side, as PyTorch pads (Flax's 'SAME' pads stride-2 layers differently and
  would break parity with torchvision's weights); "SAME": TensorFlow's rule, which puts the odd pixel of padding
  at the bottom/right (networks trained in TF, EfficientNet).
  """

  features: int
  kernel_size: int
  stride: int = 1
  padding: str = "torch"
  dtype: Dtype = jnp.float32
  form: str = "native"  # CONV_FORMS. im2col is forward-only: the teacher is frozen (`patches_matmul`).

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.kaiming_normal(), (k, k, x.shape[-1], self.features))
    if check_conv_form(self.form) == "im2col":
      pads = tuple(_conv_padding(size, k, self.stride, self.padding) for size in x.shape[1:3])
      return patches_matmul(x, kernel, self.stride, pads, self.dtype).astype(self.dtype)
    padding = ((k // 2, k // 2),) * 2 if self.padding == "torch" else self.padding
    y = jax.lax.conv_general_dilated(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      (self.stride,) * 2,
      padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      preferred_element_type=jnp.float32,
    )  # f32 accumulation, as in `matmul`.
    return y.astype(self.dtype)


class DepthwiseConv(nn.Module):
  """k×k depthwise convolution (one filter per channel), bias-free, TensorFlow 'SAME' padding; kernel (k, k, 1, C).

  Computed as k² shifted, strided slices times a per-channel weight, summed: one fused elementwise loop. XLA's
  grouped convolution is 20-40× slower than this on the CPU for EfficientNet's layers (16×64×64×96 at stride 2:
  93 ms against 4.6 ms), and the sum is the same operation on every backend.
  """

  kernel_size: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s = self.kernel_size, self.stride
    b, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.kaiming_normal(), (k, k, 1, c)).astype(self.dtype)
    out_h, out_w = -(-h // s), -(-w // s)
    pad_h, pad_w = max((out_h - 1) * s + k - h, 0), max((out_w - 1) * s + k - w, 0)
    padded = jnp.pad(
      x.astype(self.dtype), ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    total = jnp.zeros((b, out_h, out_w, c), jnp.float32)
    for dy in range(k):
      for dx in range(k):
        window = jax.lax.slice(
          padded, (0, dy, dx, 0), (b, dy + (out_h - 1) * s + 1, dx + (out_w - 1) * s + 1, c), (1, s, s, 1)
        )
        total = total + window.astype(jnp.float32) * kernel[dy, dx, 0].astype(jnp.float32)
    return total.astype(self.dtype)


class FrozenBatchNorm(nn.Module):
  """Inference-mode BatchNorm whose running statistics are ordinary, frozen parameters."""

  epsilon: float = 1e-5  # PyTorch's default; TF-trained networks use 1e-3.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean = self.param("mean", nn.initializers.zeros, (c,))
    var = self.param("var", nn.initializers.ones, (c,))
    multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
    return x * multiplier.astype(x.dtype) + (bias - mean * multiplier).astype(x.dtype)
