"""An independent PyTorch MMR, written from docs/spec.md §1–§6, for the parity references.

It is not the published code (github.com/zhangzilongc/MMR); it follows the spec's statement of what that code
computes and carries the published parameter names, so that its state dicts read like the published ones.
It imports nothing from `mmr_jax`: the point of a reference is that it was written separately.

Plain torch, no torchvision. Every function works in the dtype of its inputs, so the reference generator can
run it in float64 from float32 weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import scipy.ndimage
import torch
from torch import nn
import torch.nn.functional as F

VIT_LAYERNORM_EPS = 1e-6
FPN_LAYERNORM_EPS = 1e-6
BATCHNORM_EPS = 1e-5
COSINE_EPS = 1e-8


# ----------------------------------------------------------------------------------------------------------
# Student: MAE-style ViT encoder (§1)
# ----------------------------------------------------------------------------------------------------------


def sincos_1d(width: int, positions: np.ndarray) -> np.ndarray:
  """[sin(p·ω_k) | cos(p·ω_k)], ω_k = 10000^(−2k/width), k < width/2; float64, shape (len(p), width)."""
  if width % 2:
    raise ValueError(f"sin-cos width must be even, got {width}")
  omega = 1.0 / 10000.0 ** (np.arange(width // 2, dtype=np.float64) / (width / 2.0))
  angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_pos_embed_2d(width: int, grid: int) -> np.ndarray:
  """MAE's fixed 2-D table, shape (1 + grid², width) in float64; row 0 (cls) is zero.

  Token t = grid·row + col; channels [0, width/2) encode the column, [width/2, width) the row.
  """
  if width % 4:
    raise ValueError(f"2-D sin-cos width must be a multiple of 4, got {width}")
  rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
  table = np.concatenate([sincos_1d(width // 2, cols), sincos_1d(width // 2, rows)], axis=1)
  return np.concatenate([np.zeros((1, width)), table], axis=0)


def resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
  """Patch rows of a (1, 1+g0², D) table resized to `grid` the way the published code does (§1).

  Returns (1, grid², D). Bicubic with PyTorch's a = −0.75, align_corners=False, no antialias.
  """
  patch_rows = pos_embed[:, 1:, :]
  old_grid = math.isqrt(patch_rows.shape[1])
  if old_grid * old_grid != patch_rows.shape[1]:
    raise ValueError(f"pos-embed has {patch_rows.shape[1]} patch rows, not a square grid")
  if old_grid == grid:
    return patch_rows
  width = patch_rows.shape[-1]
  as_image = patch_rows.reshape(1, old_grid, old_grid, width).permute(0, 3, 1, 2)
  resized = F.interpolate(as_image, size=(grid, grid), mode="bicubic", align_corners=False)
  return resized.permute(0, 2, 3, 1).reshape(1, grid * grid, width)


def random_masking(tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor):
  """MAE masking: keep the first int(L·(1 − ratio)) tokens of argsort(noise), in that shuffled order.

  Returns (kept tokens (B, len_keep, D), ids_restore (B, L), ids_shuffle (B, L), len_keep).
  `len_keep` uses Python float arithmetic: at L = 400, ratio 0.4 it is 240 (float32 would give 239).
  """
  batch, length, width = tokens.shape
  if tuple(noise.shape) != (batch, length):
    raise ValueError(f"mask noise must have shape {(batch, length)}, got {tuple(noise.shape)}")
  len_keep = int(length * (1 - float(mask_ratio)))
  ids_shuffle = torch.argsort(noise, dim=1)
  ids_restore = torch.argsort(ids_shuffle, dim=1)
  ids_keep = ids_shuffle[:, :len_keep]
  kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, width))
  return kept, ids_restore, ids_shuffle, len_keep


class PatchEmbed(nn.Module):
  def __init__(self, patch_size: int, width: int):
    super().__init__()
    self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    return self.proj(images).flatten(2).transpose(1, 2)  # (B, L, D), raster order.


class Attention(nn.Module):
  def __init__(self, width: int, num_heads: int):
    super().__init__()
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by {num_heads} heads")
    self.num_heads = num_heads
    self.qkv = nn.Linear(width, 3 * width)
    self.proj = nn.Linear(width, width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    batch, length, width = x.shape
    head_width = width // self.num_heads
    # Output rows of qkv are [q | k | v], each split into heads of head_width consecutive rows.
    qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, head_width).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = torch.softmax((q @ k.transpose(-2, -1)) * head_width**-0.5, dim=-1)
    return self.proj((weights @ v).transpose(1, 2).reshape(batch, length, width))


class Mlp(nn.Module):
  def __init__(self, width: int, hidden: int):
    super().__init__()
    self.fc1 = nn.Linear(width, hidden)
    self.fc2 = nn.Linear(hidden, width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.gelu(self.fc1(x), approximate="none"))


class Block(nn.Module):
  def __init__(self, width: int, num_heads: int, mlp_ratio: float):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=VIT_LAYERNORM_EPS)
    self.attn = Attention(width, num_heads)
    self.norm2 = nn.LayerNorm(width, eps=VIT_LAYERNORM_EPS)
    self.mlp = Mlp(width, int(width * mlp_ratio))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


# ----------------------------------------------------------------------------------------------------------
# Student: simple FPN (§2)
# ----------------------------------------------------------------------------------------------------------


class ChannelLayerNorm(nn.LayerNorm):
  """LayerNorm over the channel axis of an NCHW map (biased variance), parameters `weight`, `bias`."""

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNorm(nn.Conv2d):
  """Bias-free conv followed by a channel LayerNorm held as `.norm` (the ViTDet conv wrapper)."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
    super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    self.norm = ChannelLayerNorm(out_channels, eps=FPN_LAYERNORM_EPS)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.norm(super().forward(x))


class Gelu(nn.Module):
  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="none")


def upsample2x(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
  return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)


class MMRStudent(nn.Module):
  """ViT encoder with fully hidden masked tokens, mask tokens + second sin-cos, then the simple FPN."""

  def __init__(
    self,
    *,
    width: int,
    depth: int,
    num_heads: int,
    image_size: int,
    fpn_channels: Sequence[int],
    pos_grid: int | None = None,
    patch_size: int = 16,
    mlp_ratio: float = 4.0,
  ):
    super().__init__()
    if image_size % patch_size:
      raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
    self.patch_size = patch_size
    self.image_grid = image_size // patch_size
    self.pos_grid = pos_grid or self.image_grid
    c1, c2, c3 = fpn_channels
    self.patch_embed = PatchEmbed(patch_size, width)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
    # Fixed tables: buffers, so they are in the state dict but never trained (§6).
    self.register_buffer("pos_embed", torch.from_numpy(sincos_pos_embed_2d(width, self.pos_grid))[None].float())
    self.blocks = nn.ModuleList([Block(width, num_heads, mlp_ratio) for _ in range(depth)])
    self.norm = nn.LayerNorm(width, eps=VIT_LAYERNORM_EPS)
    self.decoder_FPN_mask_token = nn.Parameter(torch.zeros(1, 1, width))
    self.register_buffer(
      "decoder_FPN_pos_embed", torch.from_numpy(sincos_pos_embed_2d(width, self.image_grid))[None].float()
    )
    self.simfp_2 = nn.Sequential(
      upsample2x(width, width // 2),
      ChannelLayerNorm(width // 2, eps=FPN_LAYERNORM_EPS),
      Gelu(),
      upsample2x(width // 2, width // 4),
      ConvNorm(width // 4, c1, 1),
      ConvNorm(c1, c1, 3),
    )
    self.simfp_3 = nn.Sequential(upsample2x(width, width // 2), ConvNorm(width // 2, c2, 1), ConvNorm(c2, c2, 3))
    self.simfp_4 = nn.Sequential(ConvNorm(width, c3, 1), ConvNorm(c3, c3, 3))

  def encoder_pos_embed(self, grid: int) -> torch.Tensor:
    """Patch rows of the encoder table at `grid`, resized bicubically when it differs from the table's."""
    return resize_pos_embed(self.pos_embed, grid)

  def forward_encoder(self, images: torch.Tensor, mask_ratio: float, noise: torch.Tensor):
    tokens = self.patch_embed(images)
    grid = images.shape[-1] // self.patch_size
    tokens = tokens + self.encoder_pos_embed(grid)
    kept, ids_restore, ids_shuffle, len_keep = random_masking(tokens, mask_ratio, noise)
    cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(kept.shape[0], -1, -1)
    x = torch.cat([cls, kept], dim=1)
    for block in self.blocks:
      x = block(x)
    return self.norm(x), ids_restore, ids_shuffle, len_keep

  def forward_decoder_fpn(self, encoded: torch.Tensor, ids_restore: torch.Tensor):
    visible = encoded[:, 1:, :]  # The cls output is dropped.
    batch, length = ids_restore.shape
    width = visible.shape[-1]
    mask_tokens = self.decoder_FPN_mask_token.expand(batch, length - visible.shape[1], -1)
    shuffled = torch.cat([visible, mask_tokens], dim=1)
    tokens = torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(-1, -1, width))
    if self.decoder_FPN_pos_embed.shape[1] != length + 1:
      raise ValueError(
        f"decoder_FPN_pos_embed has {self.decoder_FPN_pos_embed.shape[1] - 1} patch rows, "
        f"the image has {length} tokens: build the student for this image size"
      )
    tokens = tokens + self.decoder_FPN_pos_embed[:, 1:, :]  # Visible tokens get position a second time.
    grid = math.isqrt(length)
    feature_map = tokens.reshape(batch, grid, grid, width).permute(0, 3, 1, 2)
    return [self.simfp_2(feature_map), self.simfp_3(feature_map), self.simfp_4(feature_map)]

  def forward(self, images: torch.Tensor, mask_ratio: float, noise: torch.Tensor) -> list[torch.Tensor]:
    """Multi-scale features (B, C_k, H_k, W_k), k = 1..3; `noise` (B, L) decides which tokens are hidden."""
    encoded, ids_restore, _, _ = self.forward_encoder(images, mask_ratio, noise)
    return self.forward_decoder_fpn(encoded, ids_restore)


# ----------------------------------------------------------------------------------------------------------
# Teacher: torchvision-compatible ResNet, layer1..layer3 (§3)
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
  block: str  # "basic" | "bottleneck"
  blocks: tuple[int, ...]  # Blocks in layer1..layer3 (layer4 only as extra state-dict keys).
  planes: tuple[int, ...]
  stem_channels: int = 64
  width_per_group: int = 64  # Bottleneck mid width = planes · width_per_group / 64 (128 → "wide").
  layer4_blocks: int = 0  # Block count of layer4, for writing torchvision's full key set.

  @property
  def expansion(self) -> int:
    return 4 if self.block == "bottleneck" else 1

  @property
  def channels(self) -> tuple[int, int, int]:
    """Output channels of layer1..layer3, which set the FPN widths (§2)."""
    return tuple(p * self.expansion for p in self.planes[:3])


TEACHERS = {
  "wide_resnet50_2": TeacherSpec("bottleneck", (3, 4, 6), (64, 128, 256), width_per_group=128, layer4_blocks=3),
  "resnet18": TeacherSpec("basic", (2, 2, 2), (64, 128, 256), layer4_blocks=2),
  # Tests and the CPU demo only.
  "resnet_micro": TeacherSpec("basic", (1, 1, 1), (16, 32, 64), stem_channels=16),
}


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
  conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
  return conv, nn.BatchNorm2d(out_channels, eps=BATCHNORM_EPS)


class BasicBlock(nn.Module):
  def __init__(self, in_channels: int, planes: int, stride: int, mid_width: int):
    del mid_width  # Basic blocks have no bottleneck.
    super().__init__()
    self.conv1, self.bn1 = conv_bn(in_channels, planes, 3, stride)
    self.conv2, self.bn2 = conv_bn(planes, planes, 3)
    self.downsample = downsample(in_channels, planes, stride)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = x if self.downsample is None else self.downsample(x)
    return F.relu(out + shortcut)


class Bottleneck(nn.Module):
  """torchvision v1.5 bottleneck: the stride sits on the 3×3 conv."""

  def __init__(self, in_channels: int, planes: int, stride: int, mid_width: int):
    super().__init__()
    self.conv1, self.bn1 = conv_bn(in_channels, mid_width, 1)
    self.conv2, self.bn2 = conv_bn(mid_width, mid_width, 3, stride)
    self.conv3, self.bn3 = conv_bn(mid_width, planes * 4, 1)
    self.downsample = downsample(in_channels, planes * 4, stride)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    shortcut = x if self.downsample is None else self.downsample(x)
    return F.relu(out + shortcut)


def downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
  if stride == 1 and in_channels == out_channels:
    return None
  return nn.Sequential(*conv_bn(in_channels, out_channels, 1, stride))


class ResNetTeacher(nn.Module):
  """Frozen teacher returning layer1..layer3 (after the residual add and ReLU), torchvision key names."""

  def __init__(self, arch: str, with_layer4_and_fc: bool = False):
    super().__init__()
    if arch not in TEACHERS:
      raise ValueError(f"unknown teacher {arch!r}; choose one of {sorted(TEACHERS)}")
    spec = self.spec = TEACHERS[arch]
    block_class = Bottleneck if spec.block == "bottleneck" else BasicBlock
    self.conv1 = nn.Conv2d(3, spec.stem_channels, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(spec.stem_channels, eps=BATCHNORM_EPS)
    layer_sizes = list(zip(spec.blocks, spec.planes))
    if with_layer4_and_fc:
      if not spec.layer4_blocks:
        raise ValueError(f"teacher {arch!r} has no layer4")
      layer_sizes.append((spec.layer4_blocks, spec.planes[-1] * 2))
    in_channels = spec.stem_channels
    for index, (num_blocks, planes) in enumerate(layer_sizes):
      mid_width = planes * spec.width_per_group // 64
      stages = []
      for j in range(num_blocks):
        stride = 2 if (index > 0 and j == 0) else 1
        stages.append(block_class(in_channels, planes, stride, mid_width))
        in_channels = planes * spec.expansion
      setattr(self, f"layer{index + 1}", nn.Sequential(*stages))
    if with_layer4_and_fc:
      self.fc = nn.Linear(in_channels, 1000)

  def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
    x = F.relu(self.bn1(self.conv1(images)))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    features = []
    for name in ("layer1", "layer2", "layer3"):
      x = getattr(self, name)(x)
      features.append(x)
    return features


# ----------------------------------------------------------------------------------------------------------
# Objectives (§4, §5) and the optimiser (§6)
# ----------------------------------------------------------------------------------------------------------


def mmr_loss(teacher_features: Sequence[torch.Tensor], student_features: Sequence[torch.Tensor]):
  """Paper Eq. 1: Σ_scales mean_{B·H·W} (1 − cos(teacher, student) along channels).

  Returns (total, per-scale tensor of shape (3,)).
  """
  per_scale = torch.stack(
    [(1 - F.cosine_similarity(t, s, dim=1, eps=COSINE_EPS)).mean() for t, s in zip(teacher_features, student_features)]
  )
  return per_scale.sum(), per_scale


def anomaly_maps(
  teacher_features: Sequence[torch.Tensor],
  student_features: Sequence[torch.Tensor],
  image_size: int,
  sigma: float = 4.0,
  truncate: float = 4.0,
):
  """Paper Eq. 2 with the published post-processing.

  Returns numpy arrays in the features' dtype: per-scale maps (B, 3, S, S) upsampled bilinearly with
  align_corners=True, their sum (B, S, S), that sum smoothed per image by scipy's Gaussian (σ, truncate,
  mode 'reflect'), and the image scores (B,) = max of the smoothed map.
  """
  upsampled = []
  for t, s in zip(teacher_features, student_features):
    distance = (1 - F.cosine_similarity(t, s, dim=1, eps=COSINE_EPS)).unsqueeze(1)
    upsampled.append(F.interpolate(distance, size=(image_size, image_size), mode="bilinear", align_corners=True))
  per_scale = torch.cat(upsampled, dim=1).detach().cpu().numpy()
  raw = per_scale.sum(axis=1)
  smoothed = np.stack([scipy.ndimage.gaussian_filter(m, sigma=sigma, truncate=truncate, mode="reflect") for m in raw])
  return per_scale, raw, smoothed, smoothed.reshape(len(smoothed), -1).max(axis=1)


def adamw(student: nn.Module, lr: float, weight_decay: float = 0.05) -> torch.optim.AdamW:
  """AdamW with the published groups: decay on trainable params with ≥ 2 dims (tokens included), none on 1-D."""
  decay, no_decay = [], []
  for param in student.parameters():
    if param.requires_grad:
      (decay if param.ndim >= 2 else no_decay).append(param)
  return torch.optim.AdamW(
    [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
    lr=lr,
    betas=(0.9, 0.95),
    eps=1e-8,
  )
