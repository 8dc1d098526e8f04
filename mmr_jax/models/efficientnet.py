"""Frozen EfficientNet-Lite teachers (the `efficientnet-lite-pytorch` structure) returning stride-4, 8, 16 maps.

EfficientNet-Lite (Google's mobile variant of EfficientNet) replaces swish by ReLU6, drops squeeze-excitation, and
keeps the stem (32 channels), the head (1280) and the repeats of the first and last stages fixed when the model is
scaled. Every convolution pads as TensorFlow's 'SAME' does (the weights were trained in TF: an odd-sized kernel
at stride 2 pads one more pixel at the bottom/right), BatchNorm has eps 1e-3. The ImageNet weights expect pixels
scaled as (x − 127) / 128, not ImageNet mean/std; the module converts MMR's ImageNet-normalised input itself, so
the pipeline stays the published one for every teacher.

For MMR the teacher returns the output of the last block at strides 4, 8 and 16 — the stages whose outputs have
24, 40 and 112 channels in Lite0 — as ResNet's layer1..3 are the last blocks at those strides; later stages and
the classifier head are not computed. `classifier=True` runs the whole network to ImageNet logits, to check the
weights.
"""

import dataclasses
import itertools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmr_jax.data import images as image_stats
from mmr_jax.models import layers

Dtype = Any

# The B0 stages that Lite shares: (repeats, kernel, stride, expansion, input channels, output channels).
_BASE_STAGES = (
  (1, 3, 1, 1, 32, 16),
  (2, 3, 2, 6, 16, 24),
  (2, 5, 2, 6, 24, 40),
  (3, 3, 2, 6, 40, 80),
  (3, 5, 1, 6, 80, 112),
  (4, 5, 2, 6, 112, 192),
  (1, 3, 1, 6, 192, 320),
)
# Stages whose last block gives the features at strides 4, 8, 16 (0-based).
FEATURE_STAGES = (1, 2, 4)
STEM_WIDTH, HEAD_WIDTH = 32, 1280
BN_EPSILON = 1e-3
# The ImageNet weights' input scaling, (x·255 − 127) / 128, expressed on [0, 1] pixels.
INPUT_MEAN, INPUT_STD = 127.0 / 255.0, 128.0 / 255.0


@dataclasses.dataclass(frozen=True)
class Block:
  kernel: int
  stride: int
  expansion: int
  in_channels: int
  out_channels: int

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.in_channels == self.out_channels


def _round_width(channels: int, multiplier: float, divisor: int = 8) -> int:
  """EfficientNet's width rounding: to a multiple of 8, never more than 10 % below the scaled width."""
  scaled = channels * multiplier
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


@dataclasses.dataclass(frozen=True)
class EfficientNetLiteSpec:
  width_multiplier: float
  depth_multiplier: float
  resolution: int  # The ImageNet training resolution (information: the features work at any size).
  num_classes: int = 1000

  def stages(self) -> tuple[tuple[Block, ...], ...]:
    """The blocks of each stage, after Lite's scaling (stem, first and last stage repeats fixed)."""
    stages = []
    last = len(_BASE_STAGES) - 1
    for index, (repeats, kernel, stride, expansion, cin, cout) in enumerate(_BASE_STAGES):
      cin = STEM_WIDTH if index == 0 else _round_width(cin, self.width_multiplier)
      cout = _round_width(cout, self.width_multiplier)
      if index not in (0, last):
        repeats = int(math.ceil(self.depth_multiplier * repeats))
      stages.append(
        tuple(Block(kernel, stride if j == 0 else 1, expansion, cin if j == 0 else cout, cout) for j in range(repeats))
      )
    return tuple(stages)

  def blocks(self) -> tuple[Block, ...]:
    return tuple(block for stage in self.stages() for block in stage)

  def feature_block_indices(self) -> tuple[int, int, int]:
    """Indices (into `blocks()`) of the blocks whose outputs are the three feature maps."""
    ends = list(itertools.accumulate(len(stage) for stage in self.stages()))
    return tuple(ends[stage] - 1 for stage in FEATURE_STAGES)

  @property
  def out_channels(self) -> tuple[int, int, int]:
    stages = self.stages()
    return tuple(stages[stage][-1].out_channels for stage in FEATURE_STAGES)


LITE = {
  "efficientnet_lite0": EfficientNetLiteSpec(1.0, 1.0, 224),
  "efficientnet_lite1": EfficientNetLiteSpec(1.0, 1.1, 240),
  "efficientnet_lite2": EfficientNetLiteSpec(1.1, 1.2, 260),
}


class MBConv(nn.Module):
  """Inverted bottleneck: [1×1 expand, BN, ReLU6] → k×k depthwise, BN, ReLU6 → 1×1 project, BN (+ input)."""

  block: Block
  dtype: Dtype = jnp.float32
  conv_form: str = "native"  # layers.CONV_FORMS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b = self.block
    hidden = b.in_channels * b.expansion
    y = x
    if b.expansion != 1:
      y = layers.Conv(hidden, 1, dtype=self.dtype, form=self.conv_form, name="expand_conv")(y)
      y = jax.nn.relu6(layers.FrozenBatchNorm(BN_EPSILON, name="expand_bn")(y))
    y = layers.DepthwiseConv(b.kernel, b.stride, dtype=self.dtype, name="depthwise_conv")(y)
    y = jax.nn.relu6(layers.FrozenBatchNorm(BN_EPSILON, name="depthwise_bn")(y))
    y = layers.Conv(b.out_channels, 1, dtype=self.dtype, form=self.conv_form, name="project_conv")(y)
    y = layers.FrozenBatchNorm(BN_EPSILON, name="project_bn")(y)
    return x + y if b.residual else y


class EfficientNetLite(nn.Module):
  """ImageNet-normalised images (B, H, W, 3) → the three feature maps (NHWC), or logits with `classifier`."""

  spec: EfficientNetLiteSpec
  classifier: bool = False
  dtype: Dtype = jnp.float32
  conv_form: str = "native"  # layers.CONV_FORMS

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array] | jax.Array:
    # Undo MMR's ImageNet normalisation and apply the weights' own (one multiply-add per channel).
    scale = image_stats.IMAGENET_STD / INPUT_STD
    offset = (image_stats.IMAGENET_MEAN - INPUT_MEAN) / INPUT_STD
    x = (images * scale + offset).astype(self.dtype)
    x = layers.Conv(STEM_WIDTH, 3, 2, padding="SAME", dtype=self.dtype, form=self.conv_form, name="stem_conv")(x)
    x = jax.nn.relu6(layers.FrozenBatchNorm(BN_EPSILON, name="stem_bn")(x))
    blocks = self.spec.blocks()
    taps = self.spec.feature_block_indices()
    features = []
    for i, block in enumerate(blocks if self.classifier else blocks[: taps[-1] + 1]):
      x = MBConv(block, self.dtype, self.conv_form, name=f"blocks_{i}")(x)
      if i in taps:
        features.append(x)
    if not self.classifier:
      return tuple(features)
    x = layers.Conv(HEAD_WIDTH, 1, dtype=self.dtype, form=self.conv_form, name="head_conv")(x)
    x = jax.nn.relu6(layers.FrozenBatchNorm(BN_EPSILON, name="head_bn")(x))
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return layers.Dense(self.spec.num_classes, name="classifier")(pooled)
