"""Frozen ResNet teachers (torchvision structure and padding) returning layer1..layer3 features (spec §3).

The teacher is never trained: BatchNorm uses its running statistics, and its parameters (running statistics
included) are one plain `params` tree that the training state holds as data.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
  block: str  # "basic" | "bottleneck" (v1.5: stride on the 3×3).
  stage_sizes: tuple[int, int, int]
  stem_width: int
  planes: tuple[int, int, int]
  mid_multiplier: int = 1  # Bottleneck inner width = planes · mid_multiplier (2 for the wide ResNets).

  @property
  def out_channels(self) -> tuple[int, int, int]:
    expansion = 4 if self.block == "bottleneck" else 1
    return tuple(p * expansion for p in self.planes)


TEACHERS = {
    "wide_resnet50_2": TeacherSpec("bottleneck", (3, 4, 6), 64, (64, 128, 256), mid_multiplier=2),
    "resnet50": TeacherSpec("bottleneck", (3, 4, 6), 64, (64, 128, 256)),
    "resnet18": TeacherSpec("basic", (2, 2, 2), 64, (64, 128, 256)),
    # Tests and the CPU demo.
    "resnet_micro": TeacherSpec("basic", (1, 1, 1), 16, (16, 32, 64)),
}


def teacher_spec(name: str) -> TeacherSpec:
  if name not in TEACHERS:
    raise ValueError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")
  return TEACHERS[name]


class Conv(nn.Module):
  """Bias-free convolution with PyTorch's symmetric padding (Flax 'SAME' pads stride-2 layers differently)."""
  features: int
  kernel_size: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, pad = self.kernel_size, self.kernel_size // 2
    kernel = self.param("kernel", nn.initializers.kaiming_normal(), (k, k, x.shape[-1], self.features))
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (self.stride,) * 2,
                                     ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     preferred_element_type=jnp.float32)  # f32 accumulation (layers.matmul).
    return y.astype(self.dtype)


class FrozenBatchNorm(nn.Module):
  """Inference-mode BatchNorm (eps 1e-5) whose running statistics are ordinary, frozen parameters."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean = self.param("mean", nn.initializers.zeros, (c,))
    var = self.param("var", nn.initializers.ones, (c,))
    multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
    return x * multiplier.astype(x.dtype) + (bias - mean * multiplier).astype(x.dtype)


class ResidualBlock(nn.Module):
  spec: TeacherSpec
  planes: int
  stride: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda features, k, stride, name: Conv(features, k, stride, self.dtype, name=name)
    if self.spec.block == "bottleneck":
      mid, out = self.planes * self.spec.mid_multiplier, self.planes * 4
      y = nn.relu(FrozenBatchNorm(name="bn1")(conv(mid, 1, 1, "conv1")(x)))
      y = nn.relu(FrozenBatchNorm(name="bn2")(conv(mid, 3, self.stride, "conv2")(y)))
      y = FrozenBatchNorm(name="bn3")(conv(out, 1, 1, "conv3")(y))
    else:
      out = self.planes
      y = nn.relu(FrozenBatchNorm(name="bn1")(conv(out, 3, self.stride, "conv1")(x)))
      y = FrozenBatchNorm(name="bn2")(conv(out, 3, 1, "conv2")(y))
    if self.stride != 1 or x.shape[-1] != out:
      x = FrozenBatchNorm(name="downsample_bn")(conv(out, 1, self.stride, "downsample_conv")(x))
    return nn.relu(x + y)


class ResNetFeatures(nn.Module):
  """Stem (7×7 s2 p3, BN, ReLU, max-pool 3×3 s2 p1) then layer1..layer3; returns their outputs (NHWC)."""
  spec: TeacherSpec
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x = Conv(self.spec.stem_width, 7, 2, self.dtype, name="conv1")(images)
    x = nn.relu(FrozenBatchNorm(name="bn1")(x))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                              ((0, 0), (1, 1), (1, 1), (0, 0)))
    features = []
    for layer, (blocks, planes) in enumerate(zip(self.spec.stage_sizes, self.spec.planes), start=1):
      for j in range(blocks):
        stride = 2 if (j == 0 and layer > 1) else 1
        x = ResidualBlock(self.spec, planes, stride, self.dtype, name=f"layer{layer}_{j}")(x)
      features.append(x)
    return tuple(features)
