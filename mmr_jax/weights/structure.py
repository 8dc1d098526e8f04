"""The structure of a Flax parameter tree and of a PyTorch state dict: flattening, and the architecture each
implies (ViT depth and width, ResNet block and stages, EfficientNet blocks), so that a checkpoint can be
checked against a model before it is loaded."""

import math
import re
from typing import Any, Iterable, Mapping

import numpy as np

from mmr_jax.weights import names
from mmr_jax.weights.errors import WeightsError


def flatten(tree: names.Tree, prefix: names.Path = ()) -> dict[names.Path, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def unflatten(flat: Mapping[names.Path, Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def path_str(path: names.Path) -> str:
  return "/".join(path)


def _numbered(names: Iterable[str], pattern: str) -> list[int]:
  """Sorted distinct integers captured by `pattern` (one group) in `names`."""
  return sorted({int(m.group(1)) for name in names if (m := re.fullmatch(pattern, name))})


def _count_from_zero(numbers: list[int], what: str) -> int:
  if numbers != list(range(len(numbers))):
    raise WeightsError(f"{what} are not numbered 0..n-1: {numbers}")
  return len(numbers)


def student_structure(tree: names.Tree) -> tuple[int, bool]:
  """(depth, has the FPN) of a Flax student tree."""
  encoder = tree.get("encoder")
  if not isinstance(encoder, Mapping):
    raise WeightsError(f"not a student parameter tree: no 'encoder' (top-level keys: {sorted(tree)})")
  depth = _count_from_zero(_numbered(encoder, r"blocks_(\d+)"), "the Flax tree's encoder blocks")
  return depth, "fpn" in tree or "mask_token" in tree


def is_efficientnet(tree: names.Tree) -> bool:
  return "stem_conv" in tree


def efficientnet_structure(tree: names.Tree) -> tuple[tuple[bool, ...], bool]:
  """(whether each block expands, whether the head and classifier are there) of a Flax EfficientNet tree."""
  blocks = _count_from_zero(_numbered(tree, r"blocks_(\d+)"), "the Flax tree's EfficientNet blocks")
  return tuple("expand_conv" in tree[f"blocks_{i}"] for i in range(blocks)), "classifier" in tree


def infer_efficientnet(state: Mapping[str, np.ndarray]) -> tuple[tuple[bool, ...], bool]:
  """The same structure read off an `efficientnet-lite-pytorch` state dict."""
  if "_conv_stem.weight" not in state:
    raise WeightsError(
      f"not an EfficientNet state dict: it has no '_conv_stem.weight' (first names: {', '.join(sorted(state)[:6])} ...)"
    )
  blocks = _count_from_zero(_numbered(state, r"_blocks\.(\d+)\._depthwise_conv\.weight"), "the checkpoint's blocks")
  return (
    tuple(f"_blocks.{i}._expand_conv.weight" in state for i in range(blocks)),
    "_fc.weight" in state and "_conv_head.weight" in state,
  )


def teacher_structure(tree: names.Tree) -> tuple[str, tuple[int, ...], tuple[bool, ...]]:
  """(block kind, blocks per layer, whether each layer's first block projects its shortcut) of a Flax teacher."""
  layers = _numbered(tree, r"layer(\d+)_\d+")
  if layers != list(range(1, len(layers) + 1)):
    raise WeightsError(f"not a teacher parameter tree: layers {layers} (top-level keys: {sorted(tree)[:8]} ...)")
  sizes = tuple(_count_from_zero(_numbered(tree, rf"layer{k}_(\d+)"), f"blocks of layer{k}") for k in layers)
  block = "bottleneck" if "conv3" in tree["layer1_0"] else "basic"
  downsample = tuple("downsample_conv" in tree[f"layer{k}_0"] for k in layers)
  return block, sizes, downsample


def infer_vit(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Architecture of a ViT/MMR state dict: width, depth, patch_size, pretrain_grid (None without `pos_embed`),
  mlp_ratio, and fpn_widths (the three FPN output widths; None for an encoder-only checkpoint)."""
  if "patch_embed.proj.weight" not in state:
    raise WeightsError(
      f"not a ViT state dict: it has no 'patch_embed.proj.weight' (first names: {', '.join(sorted(state)[:6])} ...)"
    )
  width, _, patch_h, patch_w = state["patch_embed.proj.weight"].shape
  if patch_h != patch_w:
    raise WeightsError(f"non-square patches {patch_h}×{patch_w} are not supported")
  depth = _count_from_zero(_numbered(state, r"blocks\.(\d+)\.norm1\.weight"), "the checkpoint's blocks")
  if depth == 0:
    raise WeightsError("the ViT state dict has no transformer blocks ('blocks.0.norm1.weight' is missing)")
  grid = None
  if "pos_embed" in state:
    tokens = state["pos_embed"].shape[-2] - 1  # One row for the cls token.
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
      raise WeightsError(f"pos_embed {state['pos_embed'].shape} does not hold 1 + g² rows for a square grid")
  fpn_widths = None
  if "simfp_2.4.weight" in state:
    fpn_widths = tuple(int(state[f"{name}.weight"].shape[0]) for name in ("simfp_2.4", "simfp_3.1", "simfp_4.0"))
  return dict(
    width=int(width),
    depth=depth,
    patch_size=int(patch_h),
    pretrain_grid=grid,
    mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / width,
    fpn_widths=fpn_widths,
  )


def infer_teacher(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Architecture of a torchvision ResNet state dict (layer1..layer3): block ('basic' | 'bottleneck'),
  stage_sizes, stem_width, widths (output channels of each layer), mid_widths (inner width of the bottlenecks,
  or the blocks' width), planes and mid_multiplier (torchvision's parameters), downsample (per layer)."""
  if "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
    raise WeightsError(
      "not a torchvision ResNet state dict: 'conv1.weight' or 'layer1.0.conv1.weight' is "
      f"missing (first names: {', '.join(sorted(state)[:6])} ...)"
    )
  block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
  last_bn = "bn3" if block == "bottleneck" else "bn2"
  sizes, widths, mids = [], [], []
  for k in (1, 2, 3):
    n = _count_from_zero(_numbered(state, rf"layer{k}\.(\d+)\.conv1\.weight"), f"the blocks of layer{k}")
    if n == 0:
      raise WeightsError(f"the ResNet state dict has no layer{k}")
    sizes.append(n)
    widths.append(int(state[f"layer{k}.{n - 1}.{last_bn}.weight"].shape[0]))
    mids.append(int(state[f"layer{k}.0.conv1.weight"].shape[0]))
  planes = [w // 4 for w in widths] if block == "bottleneck" else widths
  return dict(
    block=block,
    stage_sizes=tuple(sizes),
    stem_width=int(state["conv1.weight"].shape[0]),
    widths=tuple(widths),
    mid_widths=tuple(mids),
    planes=tuple(planes),
    mid_multiplier=mids[0] // planes[0],
    downsample=tuple(f"layer{k}.0.downsample.0.weight" in state for k in (1, 2, 3)),
  )


def guess_student_source(state: Mapping[str, np.ndarray]) -> str:
  """'mmr' when the checkpoint carries any FPN or mask-token weight of the published MMR code, else 'mae'."""
  return "mmr" if any(name.startswith(("simfp_", "decoder_FPN_mask_token")) for name in state) else "mae"
