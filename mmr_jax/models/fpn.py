"""The simple feature pyramid (ViTDet style): the token map → the teacher's three scales (docs/spec.md §2).

Three independent branches read the same (B, gh, gw, width) map; no lateral or top-down connections. Parameter
names carry the index of the PyTorch `nn.Sequential` entry they come from (simfp_2.4 → conv1x1_4, norm_4).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmr_jax.models import layers

Dtype = Any


class _Branch(nn.Module):
  out_channels: int
  conv3x3: str = "native"  # layers.CONV_FORMS
  dtype: Dtype = jnp.float32

  def norm(self, name: str) -> nn.Module:  # LayerNorm over channels at each pixel.
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)

  def upsample(self, features: int, name: str) -> nn.Module:
    return layers.ConvTranspose2x2(features, dtype=self.dtype, name=name)

  def project(self, x: jax.Array, conv_name: str, norm_name: str) -> jax.Array:
    return self.norm(norm_name)(layers.Conv1x1(self.out_channels, dtype=self.dtype, name=conv_name)(x))

  def refine(self, x: jax.Array, conv_name: str, norm_name: str) -> jax.Array:
    conv = layers.Conv3x3(self.out_channels, self.conv3x3, dtype=self.dtype, name=conv_name)
    return self.norm(norm_name)(conv(x))


class SimFP2(_Branch):
  """×4: ConvT → LN → GELU → ConvT → 1×1 → LN → 3×3 → LN."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = nn.gelu(self.norm("norm_1")(self.upsample(width // 2, "convt_0")(x)), approximate=False)
    x = self.upsample(width // 4, "convt_3")(x)
    return self.refine(self.project(x, "conv1x1_4", "norm_4"), "conv3x3_5", "norm_5")


class SimFP3(_Branch):
  """×2: ConvT → 1×1 → LN → 3×3 → LN."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.upsample(x.shape[-1] // 2, "convt_0")(x)
    return self.refine(self.project(x, "conv1x1_1", "norm_1"), "conv3x3_2", "norm_2")


class SimFP4(_Branch):
  """×1: 1×1 → LN → 3×3 → LN."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return self.refine(self.project(x, "conv1x1_0", "norm_0"), "conv3x3_1", "norm_1")


class SimpleFPN(nn.Module):
  """Outputs at ×4, ×2, ×1 of the token grid (strides 4, 8, 16 of the image) with `out_channels` widths."""

  out_channels: Sequence[int]
  conv3x3: str = "native"  # layers.CONV_FORMS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    branches = (SimFP2, SimFP3, SimFP4)
    return tuple(
      branch(channels, self.conv3x3, self.dtype, name=f"simfp_{i + 2}")(x)
      for i, (branch, channels) in enumerate(zip(branches, self.out_channels))
    )
