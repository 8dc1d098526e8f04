"""FLOPs of a run counted analytically from its config (forward, per image; a multiply-add = 2 FLOPs): the
teacher, the student's encoder and FPN, the anomaly map."""

from __future__ import annotations

import ml_collections

from mmr_jax.models import efficientnet
from mmr_jax.models import resnet
from mmr_jax.models import teachers
from mmr_jax.models import vit


def conv_flops(out_h: int, out_w: int, kernel: int, in_channels: int, out_channels: int) -> int:
  return 2 * out_h * out_w * kernel * kernel * in_channels * out_channels


def teacher_flops(spec: teachers.Spec, image_size: int) -> int:
  """The teacher's convolutions up to its third feature map (BatchNorm, activations and pooling are not
  matmuls)."""
  if isinstance(spec, efficientnet.EfficientNetLiteSpec):
    return efficientnet_flops(spec, image_size)
  return resnet_flops(spec, image_size)


def resnet_flops(spec: resnet.ResNetSpec, image_size: int) -> int:
  """ResNet stem + layer1..layer3."""
  size = (image_size + 2 * 3 - 7) // 2 + 1  # 7×7 s2 p3 stem.
  flops = conv_flops(size, size, 7, 3, spec.stem_width)
  size = (size + 2 * 1 - 3) // 2 + 1  # 3×3 s2 p1 max-pool.
  channels = spec.stem_width
  for layer, (blocks, planes) in enumerate(zip(spec.stage_sizes, spec.planes), start=1):
    for j in range(blocks):
      stride = 2 if (j == 0 and layer > 1) else 1
      out_size = (size - 1) // stride + 1  # Same for the 3×3 p1 and the 1×1 p0 convolutions.
      if spec.block == "bottleneck":
        mid, out = planes * spec.mid_multiplier, planes * 4
        flops += (
          conv_flops(size, size, 1, channels, mid)
          + conv_flops(out_size, out_size, 3, mid, mid)
          + conv_flops(out_size, out_size, 1, mid, out)
        )
      else:
        out = planes
        flops += conv_flops(out_size, out_size, 3, channels, out) + conv_flops(out_size, out_size, 3, out, out)
      if stride != 1 or channels != out:
        flops += conv_flops(out_size, out_size, 1, channels, out)
      size, channels = out_size, out
  return flops


def efficientnet_flops(spec: efficientnet.EfficientNetLiteSpec, image_size: int) -> int:
  """Stem and the blocks up to the stride-16 features ('SAME' padding: output size = ceil(input / stride))."""
  size = -(-image_size // 2)
  flops = conv_flops(size, size, 3, 3, efficientnet.STEM_WIDTH)
  blocks = spec.blocks()[: spec.feature_block_indices()[-1] + 1]
  for block in blocks:
    hidden = block.in_channels * block.expansion
    out_size = -(-size // block.stride)
    if block.expansion != 1:
      flops += conv_flops(size, size, 1, block.in_channels, hidden)
    flops += conv_flops(out_size, out_size, block.kernel, 1, hidden)  # Depthwise: one input channel per output.
    flops += conv_flops(out_size, out_size, 1, hidden, block.out_channels)
    size = out_size
  return flops


def encoder_flops(width: int, depth: int, mlp_ratio: float, patch_size: int, visible_tokens: int) -> int:
  """Patch embedding of the visible patches, then `depth` blocks over them plus the cls token."""
  tokens = visible_tokens + 1
  hidden = int(width * mlp_ratio)
  per_block = (
    2 * tokens * width * 3 * width  # qkv
    + 2 * 2 * tokens * tokens * width  # q·kᵀ and weights·v over all heads
    + 2 * tokens * width * width  # proj
    + 2 * 2 * tokens * width * hidden
  )  # fc1, fc2
  return 2 * visible_tokens * patch_size * patch_size * 3 * width + depth * per_block


def fpn_flops(width: int, out_channels: tuple[int, int, int], grid: int) -> int:
  """The three branches of the simple FPN (k2 s2 transposed convolutions: 4 output pixels per input pixel)."""
  c1, c2, c3 = out_channels
  g = grid
  convt = lambda size, cin, cout: 2 * size * size * cin * cout * 4
  simfp2 = (
    convt(g, width, width // 2)
    + convt(2 * g, width // 2, width // 4)
    + conv_flops(4 * g, 4 * g, 1, width // 4, c1)
    + conv_flops(4 * g, 4 * g, 3, c1, c1)
  )
  simfp3 = (
    convt(g, width, width // 2) + conv_flops(2 * g, 2 * g, 1, width // 2, c2) + conv_flops(2 * g, 2 * g, 3, c2, c2)
  )
  simfp4 = conv_flops(g, g, 1, width, c3) + conv_flops(g, g, 3, c3, c3)
  return simfp2 + simfp3 + simfp4


def anomaly_map_flops(image_size: int, feature_sizes: tuple[int, ...]) -> int:
  """Eq. 2's resampling and smoothing, which run as separable matmuls (rows, then columns)."""
  s = image_size
  upsample = sum(2 * s * h * h + 2 * s * h * s for h in feature_sizes)
  return upsample + 2 * s * s * s * 2


def analytic_flops(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Per-image forward FLOPs of each part, and the totals of one training and one inference image."""
  model, size = config.model, config.data.image_size
  spec = teachers.spec(model.teacher)
  v = model.vit
  grid = size // v.patch_size
  tokens = grid * grid
  kept = vit.num_kept(tokens, model.mask_ratio) if model.mask_ratio > 0 else tokens
  fpn = fpn_flops(v.width, spec.out_channels, grid)
  figures = {
    "teacher": teacher_flops(spec, size),
    "encoder_train": encoder_flops(v.width, v.depth, v.mlp_ratio, v.patch_size, kept),
    "encoder_infer": encoder_flops(v.width, v.depth, v.mlp_ratio, v.patch_size, tokens),
    "fpn": fpn,
    "anomaly_map": anomaly_map_flops(size, (4 * grid, 2 * grid, grid)),
  }
  student_train = figures["encoder_train"] + fpn
  figures["train"] = figures["teacher"] + 3 * student_train
  figures["infer"] = figures["teacher"] + figures["encoder_infer"] + fpn + figures["anomaly_map"]
  return {k: float(v) for k, v in figures.items()}
