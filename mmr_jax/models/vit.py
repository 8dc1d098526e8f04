"""The MMR student encoder: an MAE-style ViT whose masked tokens are fully hidden (docs/spec.md §1).

Masked patches are dropped before the patch embedding, so their pixels never enter the computation, let alone
attention: the "fully hidden masked tokens" of the paper.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmr_jax.models import layers
from mmr_jax.models import posembed

Dtype = Any
# Named encoder sizes (MAE/ViT conventions, head width 64), for scaling studies (`model.vit=Ti,S,B`): width, depth,
# heads. configs/common.py spells out the same table (the configs import nothing from mmr_jax; a test keeps them equal).
SIZES = {
  "Ti": dict(width=192, depth=12, num_heads=3),
  "S": dict(width=384, depth=12, num_heads=6),
  "B": dict(width=768, depth=12, num_heads=12),
  "L": dict(width=1024, depth=24, num_heads=16),
}


def num_kept(num_tokens: int, mask_ratio: float) -> int:
  """MAE's `int(L * (1 - ratio))`, in Python double precision (at L = 400, ratio 0.4 gives 240, not 239)."""
  if not 0.0 <= mask_ratio < 1.0:
    raise ValueError(f"mask ratio must lie in [0, 1), got {mask_ratio}")
  return int(num_tokens * (1.0 - float(mask_ratio)))


class Masking(NamedTuple):
  """Which tokens the encoder sees: `kept` (B, len_keep) token indices in shuffled order; `restore` (B, L)."""

  kept: jax.Array
  restore: jax.Array


def random_masking(noise: jax.Array, mask_ratio: float) -> Masking:
  """MAE's masking from per-token noise (B, L): keep the `len_keep` tokens of lowest noise, in that order."""
  shuffle = jnp.argsort(noise, axis=1)
  restore = jnp.argsort(shuffle, axis=1)
  return Masking(kept=shuffle[:, : num_kept(noise.shape[1], mask_ratio)], restore=restore)


def take_tokens(x: jax.Array, indices: jax.Array) -> jax.Array:
  """x (B, L, C), indices (B, K) → (B, K, C)."""
  return jnp.take_along_axis(x, indices[..., None], axis=1)


class Attention(nn.Module):
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, width = x.shape
    head_dim = width // self.num_heads
    # One fused projection whose output columns are [q | k | v], head h at columns h·d … h·d + d − 1 of each.
    qkv = layers.Dense(3 * width, dtype=self.dtype, name="qkv")(x)
    # Reshapes and slices rather than integer indexing, which becomes a gather under a symbolic batch (an export)
    # that the TFLite converter cannot take.
    q, k, v = (
      part.reshape(b, t, self.num_heads, head_dim)
      for part in jnp.split(qkv.reshape(b, t, 3, self.num_heads, head_dim), 3, axis=2)
    )
    out = jax.nn.dot_product_attention(q, k, v, scale=head_dim**-0.5)
    return layers.Dense(width, dtype=self.dtype, name="proj")(out.reshape(b, t, width))


class Mlp(nn.Module):
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = layers.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
    x = nn.gelu(x, approximate=False)  # PyTorch nn.GELU: exact erf form.
    return layers.Dense(width, dtype=self.dtype, name="fc2")(x)


class Block(nn.Module):
  """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)
    x = x + Attention(self.num_heads, dtype=self.dtype, name="attn")(norm("norm1")(x))
    return x + Mlp(int(width * self.mlp_ratio), dtype=self.dtype, name="mlp")(norm("norm2")(x))


class Encoder(nn.Module):
  """ViT encoder over the visible tokens only. Returns (B, len_keep, width) patch tokens (cls dropped)."""

  width: int
  depth: int
  num_heads: int
  patch_size: int = 16
  mlp_ratio: float = 4.0
  pretrain_grid: int = 14
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, kept: jax.Array | None) -> jax.Array:
    b, h, w, _ = images.shape
    grid = (h // self.patch_size, w // self.patch_size)
    patches = layers.patchify(images, self.patch_size)
    pos = jnp.asarray(posembed.encoder_table(self.width, self.pretrain_grid, *grid))[None]
    pos = jnp.broadcast_to(pos, (b, *pos.shape[1:]))
    if kept is not None:  # Hidden patches are removed here, before anything is computed from them.
      patches, pos = take_tokens(patches, kept), take_tokens(pos, kept)
    x = layers.PatchEmbed(self.width, self.patch_size, dtype=self.dtype, name="patch_embed")(patches)
    x = x + pos.astype(x.dtype)
    # The cls token's position row is zero, so it enters unchanged.
    cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, self.width))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.width)), x], axis=1)
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_ratio, dtype=self.dtype, name=f"blocks_{i}")(x)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    return jax.lax.slice_in_dim(x, 1, None, axis=1)  # Without the cls token (a slice, not a gather: above).


def decoder_tokens(
  visible: jax.Array, restore: jax.Array | None, mask_token: jax.Array, grid: tuple[int, int]
) -> jax.Array:
  """Spec §1 'mask tokens and decoder position': fill hidden slots with the mask token, un-shuffle to raster
  order, add the second (decoder) sin-cos table to all L tokens, and lay them out as a (B, gh, gw, width) map."""
  b, _, width = visible.shape
  num_tokens = grid[0] * grid[1]
  if restore is not None:
    fill = jnp.broadcast_to(mask_token.astype(visible.dtype), (b, num_tokens - visible.shape[1], width))
    visible = take_tokens(jnp.concatenate([visible, fill], axis=1), restore)
  pos = jnp.asarray(posembed.sincos_2d(width, *grid)).astype(visible.dtype)
  return (visible + pos[None]).reshape(b, *grid, width)


def token_grid(image_size: int | tuple[int, int], patch_size: int) -> tuple[int, int]:
  h, w = (image_size, image_size) if np.isscalar(image_size) else image_size
  if h % patch_size or w % patch_size:
    raise ValueError(f"image size {h}×{w} must be a multiple of the patch size {patch_size}")
  return h // patch_size, w // patch_size
