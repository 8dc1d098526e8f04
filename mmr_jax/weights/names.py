"""Explicit PyTorch ↔ Flax name maps for the MMR student and the ResNet teachers, and the checked load.

Every parameter has one `Entry`: its PyTorch state-dict name (the published code's and torchvision's), its path in
the Flax tree (mmr_jax.models), and the layout change between them:
  linear          Linear weight (out, in)               → Dense kernel (in, out)
  conv            Conv weight (out, in, kh, kw)          → kernel (kh, kw, in, out)         transpose (2, 3, 1, 0)
  conv_transpose  ConvTranspose weight (in, out, kh, kw) → kernel (kh, kw, in, out)         transpose (2, 3, 0, 1)
  copy            everything else (biases, norms, tokens, BatchNorm statistics)
The loaders check that the map and the model's tree agree leaf for leaf, that every leaf is loaded exactly once,
and that the checkpoint holds nothing unexpected; every problem of a kind is reported at once.
"""

import math
import re
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from mmr_jax.weights.errors import FixedTableMismatch, WeightsError

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


# ---------------------------------------------------------------------------------------------------------------
# Name maps.


def _weight_bias(torch_prefix: str, flax_path: Path, layout: str, bias: bool = True) -> list[Entry]:
  entries = [Entry(f"{torch_prefix}.weight", flax_path + ("kernel",), layout)]
  if bias:
    entries.append(Entry(f"{torch_prefix}.bias", flax_path + ("bias",), "copy"))
  return entries


def _layer_norm(torch_prefix: str, flax_path: Path) -> list[Entry]:
  return [Entry(f"{torch_prefix}.weight", flax_path + ("scale",), "copy"),
          Entry(f"{torch_prefix}.bias", flax_path + ("bias",), "copy")]


def _batch_norm(torch_prefix: str, flax_path: Path) -> list[Entry]:
  return [Entry(f"{torch_prefix}.{torch_field}", flax_path + (flax_field,), "copy")
          for torch_field, flax_field in (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
                                          ("running_var", "var"))]


# Simple-FPN branches (docs/spec.md §2): (index in the PyTorch nn.Sequential, Flax module, kind). A conv wrapper's
# LayerNorm is `<index>.norm` in PyTorch and a sibling `norm_<index>` in Flax.
_FPN_BRANCHES = {
    "simfp_2": (("0", "convt_0", "convt"), ("1", "norm_1", "norm"), ("3", "convt_3", "convt"),
                ("4", "conv1x1_4", "conv"), ("4.norm", "norm_4", "norm"), ("5", "conv3x3_5", "conv"),
                ("5.norm", "norm_5", "norm")),
    "simfp_3": (("0", "convt_0", "convt"), ("1", "conv1x1_1", "conv"), ("1.norm", "norm_1", "norm"),
                ("2", "conv3x3_2", "conv"), ("2.norm", "norm_2", "norm")),
    "simfp_4": (("0", "conv1x1_0", "conv"), ("0.norm", "norm_0", "norm"), ("1", "conv3x3_1", "conv"),
                ("1.norm", "norm_1", "norm")),
}


def student_name_map(depth: int, with_fpn: bool = True) -> dict[str, Entry]:
  """PyTorch name → Entry for a student with `depth` blocks; without the FPN it is the ViT encoder alone."""
  encoder = ("encoder",)
  entries = [Entry("cls_token", encoder + ("cls_token",), "copy"),
             *_weight_bias("patch_embed.proj", encoder + ("patch_embed",), "conv")]
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


def teacher_name_map(block: str, stage_sizes: Sequence[int],
                     downsample: Sequence[bool] | None = None) -> dict[str, Entry]:
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
    entries += [*_weight_bias("_conv_head", ("head_conv",), "conv", bias=False), *_batch_norm("_bn1", ("head_bn",)),
                *_weight_bias("_fc", ("classifier",), "linear")]
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
  return (bool(block) and int(block.group(1)) >= used_blocks or name.startswith(("_conv_head.", "_bn1.", "_fc."))
          or name.endswith(".num_batches_tracked"))


# ---------------------------------------------------------------------------------------------------------------
# Structure of a Flax tree, and of a PyTorch state dict.


def flatten(tree: Tree, prefix: Path = ()) -> dict[Path, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def unflatten(flat: Mapping[Path, Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def _path_str(path: Path) -> str:
  return "/".join(path)


def _numbered(names: Iterable[str], pattern: str) -> list[int]:
  """Sorted distinct integers captured by `pattern` (one group) in `names`."""
  return sorted({int(m.group(1)) for name in names if (m := re.fullmatch(pattern, name))})


def _count_from_zero(numbers: list[int], what: str) -> int:
  if numbers != list(range(len(numbers))):
    raise WeightsError(f"{what} are not numbered 0..n-1: {numbers}")
  return len(numbers)


def student_structure(tree: Tree) -> tuple[int, bool]:
  """(depth, has the FPN) of a Flax student tree."""
  encoder = tree.get("encoder")
  if not isinstance(encoder, Mapping):
    raise WeightsError(f"not a student parameter tree: no 'encoder' (top-level keys: {sorted(tree)})")
  depth = _count_from_zero(_numbered(encoder, r"blocks_(\d+)"), "the Flax tree's encoder blocks")
  return depth, "fpn" in tree or "mask_token" in tree


def is_efficientnet(tree: Tree) -> bool:
  return "stem_conv" in tree


def efficientnet_structure(tree: Tree) -> tuple[tuple[bool, ...], bool]:
  """(whether each block expands, whether the head and classifier are there) of a Flax EfficientNet tree."""
  blocks = _count_from_zero(_numbered(tree, r"blocks_(\d+)"), "the Flax tree's EfficientNet blocks")
  return tuple("expand_conv" in tree[f"blocks_{i}"] for i in range(blocks)), "classifier" in tree


def infer_efficientnet(state: Mapping[str, np.ndarray]) -> tuple[tuple[bool, ...], bool]:
  """The same structure read off an `efficientnet-lite-pytorch` state dict."""
  if "_conv_stem.weight" not in state:
    raise WeightsError("not an EfficientNet state dict: it has no '_conv_stem.weight' (first names: "
                       f"{', '.join(sorted(state)[:6])} ...)")
  blocks = _count_from_zero(_numbered(state, r"_blocks\.(\d+)\._depthwise_conv\.weight"), "the checkpoint's blocks")
  return (tuple(f"_blocks.{i}._expand_conv.weight" in state for i in range(blocks)),
          "_fc.weight" in state and "_conv_head.weight" in state)


def teacher_structure(tree: Tree) -> tuple[str, tuple[int, ...], tuple[bool, ...]]:
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
    raise WeightsError("not a ViT state dict: it has no 'patch_embed.proj.weight' (first names: "
                       f"{', '.join(sorted(state)[:6])} ...)")
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
  return dict(width=int(width), depth=depth, patch_size=int(patch_h), pretrain_grid=grid,
              mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / width, fpn_widths=fpn_widths)


def infer_teacher(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Architecture of a torchvision ResNet state dict (layer1..layer3): block ('basic' | 'bottleneck'),
  stage_sizes, stem_width, widths (output channels of each layer), mid_widths (inner width of the bottlenecks,
  or the blocks' width), planes and mid_multiplier (torchvision's parameters), downsample (per layer)."""
  if "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
    raise WeightsError("not a torchvision ResNet state dict: 'conv1.weight' or 'layer1.0.conv1.weight' is "
                       f"missing (first names: {', '.join(sorted(state)[:6])} ...)")
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
  return dict(block=block, stage_sizes=tuple(sizes), stem_width=int(state["conv1.weight"].shape[0]),
              widths=tuple(widths), mid_widths=tuple(mids), planes=tuple(planes),
              mid_multiplier=mids[0] // planes[0],
              downsample=tuple(f"layer{k}.0.downsample.0.weight" in state for k in (1, 2, 3)))


def guess_student_source(state: Mapping[str, np.ndarray]) -> str:
  """'mmr' when the checkpoint carries any FPN or mask-token weight of the published MMR code, else 'mae'."""
  return "mmr" if any(name.startswith(("simfp_", "decoder_FPN_mask_token")) for name in state) else "mae"


# ---------------------------------------------------------------------------------------------------------------
# Loading.


def load_student(state: Mapping[str, np.ndarray], target: Tree, source: str) -> LoadResult:
  """Fills a Flax student tree from a PyTorch-named state dict (docs/spec.md §6 for MAE).

  source="mae": an MAE checkpoint (mae_visualize_vit_base.pth, mae_pretrain_vit_base.pth); only the encoder is
    loaded, keys containing 'decoder' and the key 'mask_token' are dropped, and the mask token and FPN keep the
    target's values, so `target` must be the freshly initialised params (arrays, not shapes).
  source="mmr": a whole student under the published code's names; every parameter must be present.
  source="auto": "mmr" if the checkpoint has FPN or mask-token weights, else "mae".
  The fixed tables (`pos_embed`, `decoder_FPN_pos_embed`) are returned in `tables` for `check_fixed_tables`.
  """
  if source not in STUDENT_SOURCES:
    raise ValueError(f"source must be one of {STUDENT_SOURCES}, got {source!r}")
  if source == "auto":
    source = guess_student_source(state)
  target, wrap = _unwrap_variables(target)
  depth, with_fpn = student_structure(target)
  full_map = student_name_map(depth, with_fpn)
  if source == "mae":
    load_map = {name: entry for name, entry in full_map.items() if entry.flax_path[0] == "encoder"}
    ignore, hint = is_mae_extra, (" If this is a whole MMR student, load it with source='mmr'."
                                  if guess_student_source(state) == "mmr" else "")
  else:
    load_map, ignore, hint = full_map, (lambda name: False), ""
  result = _load(state, target, full_map, load_map, tables=STUDENT_TABLES, ignore=ignore,
                 what=f"student (depth {depth})", hint=hint)
  return result._replace(params=wrap(result.params))


def load_teacher(state: Mapping[str, np.ndarray], target: Tree) -> LoadResult:
  """Fills a Flax teacher tree from a torchvision ResNet state dict (layer4, fc and batch counters ignored) or
  an `efficientnet-lite-pytorch` one (the blocks after the last feature map, head and classifier ignored)."""
  target, wrap = _unwrap_variables(target)
  name_map, ignore, what = _teacher_map(target)
  result = _load(state, target, name_map, name_map, tables=(), ignore=ignore, what=what, hint="")
  return result._replace(params=wrap(result.params))


def _teacher_map(tree: Tree) -> tuple[dict[str, Entry], Callable[[str], bool], str]:
  """The name map of a Flax teacher tree, what its checkpoints hold beyond it, and the teacher in words."""
  if is_efficientnet(tree):
    expands, with_head = efficientnet_structure(tree)
    return (efficientnet_name_map(expands, with_head), lambda name: is_efficientnet_extra(name, len(expands)),
            f"EfficientNet teacher ({len(expands)} blocks{', classifier' if with_head else ''})")
  block, sizes, downsample = teacher_structure(tree)
  return (teacher_name_map(block, sizes, downsample), is_torchvision_extra,
          f"{block} ResNet teacher (blocks {sizes})")


def _unwrap_variables(tree: Tree) -> tuple[Tree, Callable[[dict], dict]]:
  """Accepts either the params tree or Flax's {'params': tree} and returns the result in the same form."""
  if set(tree) == {"params"}:
    return tree["params"], lambda params: {"params": params}
  return tree, lambda params: params


def _check_map_covers_tree(name_map: Mapping[str, Entry], flat: Mapping[Path, Any], what: str) -> None:
  mapped = {entry.flax_path for entry in name_map.values()}
  unmapped, absent = sorted(set(flat) - mapped), sorted(mapped - set(flat))
  if unmapped or absent:
    lines = [f"the {what} parameter tree and the weight name map disagree (the model and "
             "mmr_jax/weights/names.py are out of step):"]
    if unmapped:
      lines.append(f"  in the tree, not in the map: {', '.join(map(_path_str, unmapped))}")
    if absent:
      lines.append(f"  in the map, not in the tree: {', '.join(map(_path_str, absent))}")
    raise WeightsError("\n".join(lines))


def _load(state: Mapping[str, np.ndarray], target: Tree, full_map: Mapping[str, Entry],
          load_map: Mapping[str, Entry], *, tables: Sequence[str], ignore: Callable[[str], bool], what: str,
          hint: str) -> LoadResult:
  flat_target = flatten(target)
  _check_map_covers_tree(full_map, flat_target, what)

  ignored = tuple(sorted(name for name in state if name not in load_map and name not in tables and ignore(name)))
  unknown = sorted(set(state) - set(load_map) - set(tables) - set(ignored))
  if unknown:
    raise WeightsError(f"the checkpoint has {len(unknown)} names that match no parameter of the {what}: "
                       f"{', '.join(unknown)}.{hint}")
  missing = [entry for name, entry in load_map.items() if name not in state]
  if missing:
    raise WeightsError(f"the checkpoint lacks {len(missing)} parameters of the {what}: " + ", ".join(
        f"{entry.torch_name} (→ {_path_str(entry.flax_path)})" for entry in missing) + f".{hint}")

  problems = []
  for name, entry in load_map.items():
    expected = torch_shape(entry.layout, flat_target[entry.flax_path].shape)
    if tuple(state[name].shape) != expected:
      problems.append(f"checkpoint '{name}' has shape {tuple(state[name].shape)} but the model's "
                      f"'{_path_str(entry.flax_path)}' {tuple(flat_target[entry.flax_path].shape)} needs "
                      f"{expected} in PyTorch layout")
    elif not np.issubdtype(state[name].dtype, np.floating):
      problems.append(f"checkpoint '{name}' is {state[name].dtype}, not floating point")
    elif not np.all(np.isfinite(state[name])):
      problems.append(f"checkpoint '{name}' contains NaN or Inf")
  if problems:
    raise WeightsError(f"the checkpoint does not fit the {what}:\n  " + "\n  ".join(problems))

  loaded = {entry.flax_path: np.ascontiguousarray(to_flax(entry.layout, state[name].astype(np.float32)))
            for name, entry in load_map.items()}
  kept = [path for path in flat_target if path not in loaded]
  shapes_only = [path for path in kept if not hasattr(flat_target[path], "__array__")]
  if shapes_only:
    raise WeightsError(f"{', '.join(map(_path_str, shapes_only))} are not in this checkpoint and keep their "
                       "initial values: pass the freshly initialised params as the target, not shapes.")
  filled = {path: loaded[path] if path in loaded else flat_target[path] for path in flat_target}
  return LoadResult(params=unflatten(filled), tables={name: state[name] for name in tables if name in state},
                    ignored=ignored, kept=tuple(map(_path_str, kept)))


def check_fixed_tables(found: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                       atol: float = 1e-5) -> dict[str, float]:
  """Compares a checkpoint's fixed position tables with the model's; returns the max |difference| per table.

  `expected` holds the model's tables by PyTorch name, either as stored ((1, 1 + L, D) with the zero cls row) or
  without the cls row ((L, D), e.g. posembed.sincos_2d). Tables absent from `found` are not compared. Raises
  FixedTableMismatch when a table differs by more than `atol`: the checkpoint was then not made with fixed
  sin-cos tables, and this port (which computes them rather than loading them) would not reproduce it.
  """
  errors, problems = {}, []
  for name, table in found.items():
    if name not in expected:
      continue
    have = np.asarray(table, np.float64).reshape(-1, table.shape[-1])
    want = np.asarray(expected[name], np.float64).reshape(-1, expected[name].shape[-1])
    if want.shape[0] + 1 == have.shape[0]:
      want = np.concatenate([np.zeros_like(want[:1]), want])
    if have.shape != want.shape:
      problems.append(f"'{name}' is {tuple(table.shape)} but the model's table is {tuple(expected[name].shape)}: "
                      "a different token grid (set model.vit.pretrain_grid / data.image_size to match) or width")
      continue
    errors[name] = float(np.max(np.abs(have - want)))
    if errors[name] > atol:
      problems.append(f"'{name}' differs from the fixed sin-cos table by up to {errors[name]:.3g} (> {atol:g})")
  if problems:
    raise FixedTableMismatch(
        "the checkpoint's position tables are not the fixed sin-cos tables this model computes:\n  " +
        "\n  ".join(problems) + "\nThe model does not load position tables, so this checkpoint (learned or "
        "otherwise altered positions) cannot be reproduced exactly.")
  return errors


# ---------------------------------------------------------------------------------------------------------------
# Export (Flax → PyTorch names and layouts).


def student_to_torch(params: Tree, tables: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """A Flax student tree (the encoder alone, or the whole student) as a PyTorch-named float32 state dict;
  `tables` (e.g. pos_embed) are added as given, so that the published code can load the result strictly."""
  params, _ = _unwrap_variables(params)
  depth, with_fpn = student_structure(params)
  state = _export(params, student_name_map(depth, with_fpn), f"student (depth {depth})")
  state.update({name: np.asarray(table, np.float32) for name, table in (tables or {}).items()})
  return state


def teacher_to_torch(params: Tree, num_batches_tracked: bool = True) -> dict[str, np.ndarray]:
  """A Flax teacher tree as a torchvision-named state dict (with zero batch counters unless told otherwise)."""
  params, _ = _unwrap_variables(params)
  name_map, _, what = _teacher_map(params)
  state = _export(params, name_map, what)
  if num_batches_tracked:
    for name in [name for name in state if name.endswith(".running_mean")]:
      state[name.replace(".running_mean", ".num_batches_tracked")] = np.zeros((), np.int64)
  return state


def _export(params: Tree, name_map: Mapping[str, Entry], what: str) -> dict[str, np.ndarray]:
  flat = flatten(params)
  _check_map_covers_tree(name_map, flat, what)
  return {name: np.ascontiguousarray(to_torch(entry.layout, np.asarray(flat[entry.flax_path], np.float32)))
          for name, entry in name_map.items()}
