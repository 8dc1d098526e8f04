"""Explicit PyTorch ↔ Flax name maps for the MMR student and the ResNet and EfficientNet teachers.

Every parameter has one `Entry`: its PyTorch state-dict name (the published code's and torchvision's), its path in
the Flax tree (mmr_jax.models), and the layout change between them:
  linear          Linear weight (out, in)               → Dense kernel (in, out)
  conv            Conv weight (out, in, kh, kw)          → kernel (kh, kw, in, out)         transpose (2, 3, 1, 0)
  conv_transpose  ConvTranspose weight (in, out, kh, kw) → kernel (kh, kw, in, out)         transpose (2, 3, 0, 1)
  copy            everything else (biases, norms, tokens, BatchNorm statistics)
The loaders (loading.py) check that the map and the model's tree agree leaf for leaf, that every leaf is loaded
exactly once, and that the checkpoint holds nothing unexpected; structure.py infers architectures from trees.
"""

import re
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np


Path = tuple[str, ...]
Tree = Mapping[str, Any]

_TO_FLAX = {"copy": None, "linear": (1, 0), "conv": (2, 3, 1, 0), "conv_transpose": (2, 3, 0, 1)}
_TO_TORCH = {"copy": None, "linear": (1, 0), "conv": (3, 2, 0, 1), "conv_transpose": (2, 3, 0, 1)}

# The student's fixed sin-cos tables: buffers in PyTorch, constants computed by the Flax model.
STUDENT_TABLES = ("pos_embed", "decoder_FPN_pos_embed")
STUDENT_SOURCES = ("mae", "mmr", "auto")


class Entry(NamedTuple):
  torch_name: str
  flax_path: Path
  layout: str  # One of _TO_FLAX's keys.


class LoadResult(NamedTuple):
  params: dict  # The filled tree: loaded leaves as float32 NumPy, kept leaves as given.
  tables: dict[str, np.ndarray]  # Fixed tables found in the checkpoint (student only), PyTorch names.
  ignored: tuple[str, ...]  # Checkpoint names skipped on purpose (MAE decoder, layer4/fc, counters).
  kept: tuple[str, ...]  # Flax paths not in the checkpoint, left as the target had them (MAE mode).


def to_flax(layout: str, array: np.ndarray) -> np.ndarray:
  axes = _TO_FLAX[layout]
  return array if axes is None else np.transpose(array, axes)


def to_torch(layout: str, array: np.ndarray) -> np.ndarray:
  axes = _TO_TORCH[layout]
  return array if axes is None else np.transpose(array, axes)


def torch_shape(layout: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The PyTorch shape of a Flax leaf of this `shape`."""
  return _permute_shape(_TO_TORCH[layout], shape)


def flax_shape(layout: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The Flax shape of a PyTorch tensor of this `shape`."""
  return _permute_shape(_TO_FLAX[layout], shape)


def _permute_shape(axes: tuple[int, ...] | None, shape: Sequence[int]) -> tuple[int, ...]:
  if axes is None:
    return tuple(shape)
  if len(shape) != len(axes):  # Reported as a shape mismatch by the callers.
    return (-1,) * len(axes)
  return tuple(shape[a] for a in axes)


def _weight_bias(torch_prefix: str, flax_path: Path, layout: str, bias: bool = True) -> list[Entry]:
  entries = [Entry(f"{torch_prefix}.weight", flax_path + ("kernel",), layout)]
  if bias:
    entries.append(Entry(f"{torch_prefix}.bias", flax_path + ("bias",), "copy"))
  return entries


def _layer_norm(torch_prefix: str, flax_path: Path) -> list[Entry]:
  return [
    Entry(f"{torch_prefix}.weight", flax_path + ("scale",), "copy"),
    Entry(f"{torch_prefix}.bias", flax_path + ("bias",), "copy"),
  ]


def _batch_norm(torch_prefix: str, flax_path: Path) -> list[Entry]:
  return [
    Entry(f"{torch_prefix}.{torch_field}", flax_path + (flax_field,), "copy")
    for torch_field, flax_field in (
      ("weight", "scale"),
      ("bias", "bias"),
      ("running_mean", "mean"),
      ("running_var", "var"),
    )
  ]


# Simple-FPN branches (docs/spec.md §2): (index in the PyTorch nn.Sequential, Flax module, kind). A conv wrapper's
# LayerNorm is `<index>.norm` in PyTorch and a sibling `norm_<index>` in Flax.
_FPN_BRANCHES = {
  "simfp_2": (
    ("0", "convt_0", "convt"),
    ("1", "norm_1", "norm"),
    ("3", "convt_3", "convt"),
    ("4", "conv1x1_4", "conv"),
    ("4.norm", "norm_4", "norm"),
    ("5", "conv3x3_5", "conv"),
    ("5.norm", "norm_5", "norm"),
  ),
  "simfp_3": (
    ("0", "convt_0", "convt"),
    ("1", "conv1x1_1", "conv"),
    ("1.norm", "norm_1", "norm"),
    ("2", "conv3x3_2", "conv"),
    ("2.norm", "norm_2", "norm"),
  ),
  "simfp_4": (
    ("0", "conv1x1_0", "conv"),
    ("0.norm", "norm_0", "norm"),
    ("1", "conv3x3_1", "conv"),
    ("1.norm", "norm_1", "norm"),
  ),
}


def student_name_map(depth: int, with_fpn: bool = True) -> dict[str, Entry]:
  """PyTorch name → Entry for a student with `depth` blocks; without the FPN it is the ViT encoder alone."""
  encoder = ("encoder",)
  entries = [
    Entry("cls_token", encoder + ("cls_token",), "copy"),
    *_weight_bias("patch_embed.proj", encoder + ("patch_embed",), "conv"),
  ]
  for i in range(depth):
    block, path = f"blocks.{i}", encoder + (f"blocks_{i}",)
    entries += _layer_norm(f"{block}.norm1", path + ("norm1",))
    entries += _weight_bias(f"{block}.attn.qkv", path + ("attn", "qkv"), "linear")
    entries += _weight_bias(f"{block}.attn.proj", path + ("attn", "proj"), "linear")
    entries += _layer_norm(f"{block}.norm2", path + ("norm2",))
    entries += _weight_bias(f"{block}.mlp.fc1", path + ("mlp", "fc1"), "linear")
    entries += _weight_bias(f"{block}.mlp.fc2", path + ("mlp", "fc2"), "linear")
  entries += _layer_norm("norm", encoder + ("norm",))
  if with_fpn:
    entries.append(Entry("decoder_FPN_mask_token", ("mask_token",), "copy"))
    for branch, modules in _FPN_BRANCHES.items():
      for index, name, kind in modules:
        torch_prefix, path = f"{branch}.{index}", ("fpn", branch, name)
        if kind == "norm":
          entries += _layer_norm(torch_prefix, path)
        elif kind == "convt":
          entries += _weight_bias(torch_prefix, path, "conv_transpose")
        else:  # The FPN's 1×1 and 3×3 convolutions have no bias.
          entries += _weight_bias(torch_prefix, path, "conv", bias=False)
  return _as_map(entries)


def default_downsample(block: str, num_stages: int = 3) -> tuple[bool, ...]:
  """torchvision's rule for ImageNet ResNets: layer1 projects only for bottlenecks (64 → 256), later layers always."""
  return tuple(stage > 0 or block == "bottleneck" for stage in range(num_stages))


def teacher_name_map(
  block: str, stage_sizes: Sequence[int], downsample: Sequence[bool] | None = None
) -> dict[str, Entry]:
  """PyTorch name → Entry for a torchvision ResNet's stem and layer1..len(stage_sizes)."""
  if block not in ("basic", "bottleneck"):
    raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
  downsample = default_downsample(block, len(stage_sizes)) if downsample is None else tuple(downsample)
  convs = ("conv1", "conv2", "conv3") if block == "bottleneck" else ("conv1", "conv2")
  entries = [*_weight_bias("conv1", ("conv1",), "conv", bias=False), *_batch_norm("bn1", ("bn1",))]
  for k, num_blocks in enumerate(stage_sizes, start=1):
    for j in range(num_blocks):
      torch_block, path = f"layer{k}.{j}", (f"layer{k}_{j}",)
      for conv in convs:
        entries += _weight_bias(f"{torch_block}.{conv}", path + (conv,), "conv", bias=False)
        entries += _batch_norm(f"{torch_block}.bn{conv[-1]}", path + (f"bn{conv[-1]}",))
    if downsample[k - 1]:
      entries += _weight_bias(f"layer{k}.0.downsample.0", (f"layer{k}_0", "downsample_conv"), "conv", bias=False)
      entries += _batch_norm(f"layer{k}.0.downsample.1", (f"layer{k}_0", "downsample_bn"))
  return _as_map(entries)


def efficientnet_name_map(expands: Sequence[bool], with_head: bool) -> dict[str, Entry]:
  """PyTorch name → Entry for an `efficientnet-lite-pytorch` EfficientNet: the stem, one block per entry of
  `expands` (whether that block has a 1×1 expansion), and with `with_head` the head conv and classifier."""
  entries = [*_weight_bias("_conv_stem", ("stem_conv",), "conv", bias=False), *_batch_norm("_bn0", ("stem_bn",))]
  for i, expand in enumerate(expands):
    torch_block, path = f"_blocks.{i}", (f"blocks_{i}",)
    parts = (("_expand_conv", "_bn0", "expand"),) if expand else ()
    parts += (("_depthwise_conv", "_bn1", "depthwise"), ("_project_conv", "_bn2", "project"))
    for conv, bn, flax_name in parts:
      # A depthwise kernel (C, 1, k, k) becomes (k, k, 1, C): the same transpose as a dense convolution.
      entries += _weight_bias(f"{torch_block}.{conv}", path + (f"{flax_name}_conv",), "conv", bias=False)
      entries += _batch_norm(f"{torch_block}.{bn}", path + (f"{flax_name}_bn",))
  if with_head:
    entries += [
      *_weight_bias("_conv_head", ("head_conv",), "conv", bias=False),
      *_batch_norm("_bn1", ("head_bn",)),
      *_weight_bias("_fc", ("classifier",), "linear"),
    ]
  return _as_map(entries)


def _as_map(entries: Iterable[Entry]) -> dict[str, Entry]:
  name_map = {}
  for entry in entries:
    if entry.torch_name in name_map:
      raise AssertionError(f"name map lists {entry.torch_name} twice")
    name_map[entry.torch_name] = entry
  if len({entry.flax_path for entry in name_map.values()}) != len(name_map):
    raise AssertionError("name map sends two PyTorch names to one Flax path")
  return name_map


# Checkpoint names that are skipped on purpose.
def is_mae_extra(name: str) -> bool:
  """MAE pretraining keys that MMR drops (docs/spec.md §6): the pixel decoder and its mask token."""
  return "decoder" in name or name == "mask_token"


def is_torchvision_extra(name: str) -> bool:
  """Parts of a torchvision ResNet the teacher does not use, and BatchNorm's batch counters."""
  return name.startswith(("layer4.", "fc.")) or name.endswith(".num_batches_tracked")


def is_efficientnet_extra(name: str, used_blocks: int) -> bool:
  """Parts of an EfficientNet that a feature teacher of `used_blocks` blocks does not use (later blocks, the head
  and the classifier), and BatchNorm's batch counters."""
  block = re.match(r"_blocks\.(\d+)\.", name)
  return (
    bool(block)
    and int(block.group(1)) >= used_blocks
    or name.startswith(("_conv_head.", "_bn1.", "_fc."))
    or name.endswith(".num_batches_tracked")
  )
