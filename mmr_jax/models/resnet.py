"""Frozen ResNet teachers (torchvision structure and padding) returning layer1..layer3 features (docs/spec.md §3).

The teacher is never trained: BatchNorm uses its running statistics, and its parameters (running statistics
included) are one plain `params` tree that the training state holds as data.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmr_jax.models import layers

Dtype = Any


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
  block: str  # "basic" | "bottleneck" (v1.5: stride on the 3×3).
  stage_sizes: tuple[int, int, int]
  stem_width: int
  planes: tuple[int, int, int]
  mid_multiplier: int = 1  # Bottleneck inner width = planes · mid_multiplier (2 for the wide ResNets).

  @property
  def out_channels(self) -> tuple[int, int, int]:
    expansion = 4 if self.block == "bottleneck" else 1
    return tuple(p * expansion for p in self.planes)


class ResidualBlock(nn.Module):
  spec: ResNetSpec
  planes: int
  stride: int
  dtype: Dtype = jnp.float32
  conv_form: str = "native"  # layers.CONV_FORMS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda features, k, stride, name: layers.Conv(
      features, k, stride, dtype=self.dtype, form=self.conv_form, name=name
    )
    if self.spec.block == "bottleneck":
      mid, out = self.planes * self.spec.mid_multiplier, self.planes * 4
      y = nn.relu(layers.FrozenBatchNorm(name="bn1")(conv(mid, 1, 1, "conv1")(x)))
      y = nn.relu(layers.FrozenBatchNorm(name="bn2")(conv(mid, 3, self.stride, "conv2")(y)))
      y = layers.FrozenBatchNorm(name="bn3")(conv(out, 1, 1, "conv3")(y))
    else:
      out = self.planes
      y = nn.relu(layers.FrozenBatchNorm(name="bn1")(conv(out, 3, self.stride, "conv1")(x)))
      y = layers.FrozenBatchNorm(name="bn2")(conv(out, 3, 1, "conv2")(y))
    if self.stride != 1 or x.shape[-1] != out:
      x = layers.FrozenBatchNorm(name="downsample_bn")(conv(out, 1, self.stride, "downsample_conv")(x))
    return nn.relu(x + y)


class ResNetFeatures(nn.Module):
  """Stem (7×7 s2 p3, BN, ReLU, max-pool 3×3 s2 p1) then layer1..layer3; returns their outputs (NHWC)."""

  spec: ResNetSpec
  dtype: Dtype = jnp.float32
  conv_form: str = "native"  # layers.CONV_FORMS

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x = layers.Conv(self.spec.stem_width, 7, 2, dtype=self.dtype, form=self.conv_form, name="conv1")(images)
    x = nn.relu(layers.FrozenBatchNorm(name="bn1")(x))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    features = []
    for layer, (blocks, planes) in enumerate(zip(self.spec.stage_sizes, self.spec.planes), start=1):
      for j in range(blocks):
        stride = 2 if (j == 0 and layer > 1) else 1
        x = ResidualBlock(self.spec, planes, stride, self.dtype, self.conv_form, name=f"layer{layer}_{j}")(x)
      features.append(x)
    return tuple(features)
