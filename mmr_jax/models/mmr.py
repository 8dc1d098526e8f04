"""MMR's student (masked ViT → mask tokens → simple FPN) and the builders that read the config.

The student and the teacher are separate Flax modules with separate parameter trees: the student is trained,
the teacher is frozen data.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmr_jax.models import fpn
from mmr_jax.models import teachers
from mmr_jax.models import vit

Dtype = Any
Features = tuple[jax.Array, jax.Array, jax.Array]


class Student(nn.Module):
  """Image (B, H, W, 3) → three feature maps matching the teacher's layer1..3 (docs/spec.md §1–2)."""

  width: int
  depth: int
  num_heads: int
  out_channels: tuple[int, int, int]
  patch_size: int = 16
  mlp_ratio: float = 4.0
  pretrain_grid: int = 14
  conv3x3: str = "native"  # layers.CONV_FORMS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, mask_ratio: float = 0.0, noise: jax.Array | None = None) -> Features:
    """`mask_ratio` is static. With a ratio > 0 the masking follows `noise` (B, L) if given, else noise drawn
    from the 'masking' PRNG stream."""
    grid = vit.token_grid(images.shape[1:3], self.patch_size)
    masking = None
    if mask_ratio > 0:
      if noise is None:
        noise = jax.random.uniform(self.make_rng("masking"), (images.shape[0], grid[0] * grid[1]))
      masking = vit.random_masking(noise, mask_ratio)
    visible = vit.Encoder(
      self.width,
      self.depth,
      self.num_heads,
      self.patch_size,
      self.mlp_ratio,
      self.pretrain_grid,
      self.dtype,
      name="encoder",
    )(images, None if masking is None else masking.kept)
    mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
    token_map = vit.decoder_tokens(visible, None if masking is None else masking.restore, mask_token, grid)
    features = fpn.SimpleFPN(self.out_channels, self.conv3x3, self.dtype, name="fpn")(token_map)
    return tuple(f.astype(jnp.float32) for f in features)


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # model.compute_dtype's values.


def compute_dtype(name: str) -> Dtype:
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"model.compute_dtype must be one of {tuple(COMPUTE_DTYPES)}, got {name!r}")
  return COMPUTE_DTYPES[name]


def build_student(model_config: ml_collections.ConfigDict, conv3x3: str) -> Student:
  """The student of model_config; `conv3x3` is the resolved form of its 3×3 convolutions (layers.CONV_FORMS:
  mmr_jax.runtime.Platform.conv3x3_form resolves model.conv3x3 for the platform)."""
  vit_config = model_config.vit
  return Student(
    width=vit_config.width,
    depth=vit_config.depth,
    num_heads=vit_config.num_heads,
    out_channels=teachers.out_channels(model_config.teacher),
    patch_size=vit_config.patch_size,
    mlp_ratio=vit_config.mlp_ratio,
    pretrain_grid=vit_config.pretrain_grid,
    conv3x3=conv3x3,
    dtype=compute_dtype(model_config.compute_dtype),
  )


def teacher_features(teacher: nn.Module, teacher_params: Any, images: jax.Array) -> Features:
  """The frozen teacher's three feature maps of ImageNet-normalised images (B, H, W, 3), in float32."""
  return tuple(m.astype(jnp.float32) for m in teacher.apply({"params": teacher_params}, images))


def build_teacher(model_config: ml_collections.ConfigDict, conv_form: str) -> nn.Module:
  """The frozen teacher of model_config, its convolutions in `conv_form` (as the student's 3×3 ones)."""
  return teachers.build(model_config.teacher, compute_dtype(model_config.compute_dtype), conv_form)
