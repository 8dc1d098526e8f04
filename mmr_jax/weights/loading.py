"""Checked loading of PyTorch checkpoints into the Flax trees (every leaf exactly once, nothing unexpected, every
problem of a kind reported at once), and the export back to PyTorch names and layouts."""

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmr_jax.weights import names
from mmr_jax.weights import structure
from mmr_jax.weights.errors import FixedTableMismatch, WeightsError


def load_student(state: Mapping[str, np.ndarray], target: names.Tree, source: str) -> names.LoadResult:
  """Fills a Flax student tree from a PyTorch-named state dict (docs/spec.md §6 for MAE).

  source="mae": an MAE checkpoint (mae_visualize_vit_base.pth, mae_pretrain_vit_base.pth); only the encoder is
    loaded, keys containing 'decoder' and the key 'mask_token' are dropped, and the mask token and FPN keep the
    target's values, so `target` must be the freshly initialised params (arrays, not shapes).
  source="mmr": a whole student under the published code's names; every parameter must be present.
  source="auto": "mmr" if the checkpoint has FPN or mask-token weights, else "mae".
  The fixed tables (`pos_embed`, `decoder_FPN_pos_embed`) are returned in `tables` for `check_fixed_tables`.
  """
  if source not in names.STUDENT_SOURCES:
    raise ValueError(f"source must be one of {names.STUDENT_SOURCES}, got {source!r}")
  if source == "auto":
    source = structure.guess_student_source(state)
  target, wrap = _unwrap_variables(target)
  depth, with_fpn = structure.student_structure(target)
  full_map = names.student_name_map(depth, with_fpn)
  if source == "mae":
    load_map = {name: entry for name, entry in full_map.items() if entry.flax_path[0] == "encoder"}
    ignore, hint = (
      names.is_mae_extra,
      (
        " If this is a whole MMR student, load it with source='mmr'."
        if structure.guess_student_source(state) == "mmr"
        else ""
      ),
    )
  else:
    load_map, ignore, hint = full_map, (lambda name: False), ""
  result = _load(
    state,
    target,
    full_map,
    load_map,
    tables=names.STUDENT_TABLES,
    ignore=ignore,
    what=f"student (depth {depth})",
    hint=hint,
  )
  return result._replace(params=wrap(result.params))


def load_teacher(state: Mapping[str, np.ndarray], target: names.Tree) -> names.LoadResult:
  """Fills a Flax teacher tree from a torchvision ResNet state dict (layer4, fc and batch counters ignored) or
  an `efficientnet-lite-pytorch` one (the blocks after the last feature map, head and classifier ignored)."""
  target, wrap = _unwrap_variables(target)
  name_map, ignore, what = _teacher_map(target)
  result = _load(state, target, name_map, name_map, tables=(), ignore=ignore, what=what, hint="")
  return result._replace(params=wrap(result.params))


def _teacher_map(tree: names.Tree) -> tuple[dict[str, names.Entry], Callable[[str], bool], str]:
  """The name map of a Flax teacher tree, what its checkpoints hold beyond it, and the teacher in words."""
  if structure.is_efficientnet(tree):
    expands, with_head = structure.efficientnet_structure(tree)
    extra = lambda name: names.is_efficientnet_extra(name, len(expands))
    described = f"EfficientNet teacher ({len(expands)} blocks{', classifier' if with_head else ''})"
    return names.efficientnet_name_map(expands, with_head), extra, described
  block, sizes, downsample = structure.teacher_structure(tree)
  return (
    names.teacher_name_map(block, sizes, downsample),
    names.is_torchvision_extra,
    f"{block} ResNet teacher (blocks {sizes})",
  )


def _unwrap_variables(tree: names.Tree) -> tuple[names.Tree, Callable[[dict], dict]]:
  """Accepts either the params tree or Flax's {'params': tree} and returns the result in the same form."""
  if set(tree) == {"params"}:
    return tree["params"], lambda params: {"params": params}
  return tree, lambda params: params


def _check_map_covers_tree(name_map: Mapping[str, names.Entry], flat: Mapping[names.Path, Any], what: str) -> None:
  mapped = {entry.flax_path for entry in name_map.values()}
  unmapped, absent = sorted(set(flat) - mapped), sorted(mapped - set(flat))
  if unmapped or absent:
    lines = [
      f"the {what} parameter tree and the weight name map disagree (the model and "
      "mmr_jax/weights/names.py are out of step):"
    ]
    if unmapped:
      lines.append(f"  in the tree, not in the map: {', '.join(map(structure.path_str, unmapped))}")
    if absent:
      lines.append(f"  in the map, not in the tree: {', '.join(map(structure.path_str, absent))}")
    raise WeightsError("\n".join(lines))


def _load(
  state: Mapping[str, np.ndarray],
  target: names.Tree,
  full_map: Mapping[str, names.Entry],
  load_map: Mapping[str, names.Entry],
  *,
  tables: Sequence[str],
  ignore: Callable[[str], bool],
  what: str,
  hint: str,
) -> names.LoadResult:
  flat_target = structure.flatten(target)
  _check_map_covers_tree(full_map, flat_target, what)

  ignored = tuple(sorted(name for name in state if name not in load_map and name not in tables and ignore(name)))
  unknown = sorted(set(state) - set(load_map) - set(tables) - set(ignored))
  if unknown:
    raise WeightsError(
      f"the checkpoint has {len(unknown)} names that match no parameter of the {what}: {', '.join(unknown)}.{hint}"
    )
  missing = [entry for name, entry in load_map.items() if name not in state]
  if missing:
    raise WeightsError(
      f"the checkpoint lacks {len(missing)} parameters of the {what}: "
      + ", ".join(f"{entry.torch_name} (→ {structure.path_str(entry.flax_path)})" for entry in missing)
      + f".{hint}"
    )

  problems = []
  for name, entry in load_map.items():
    expected = names.torch_shape(entry.layout, flat_target[entry.flax_path].shape)
    if tuple(state[name].shape) != expected:
      problems.append(
        f"checkpoint '{name}' has shape {tuple(state[name].shape)} but the model's "
        f"'{structure.path_str(entry.flax_path)}' {tuple(flat_target[entry.flax_path].shape)} needs "
        f"{expected} in PyTorch layout"
      )
    elif not np.issubdtype(state[name].dtype, np.floating):
      problems.append(f"checkpoint '{name}' is {state[name].dtype}, not floating point")
    elif not np.all(np.isfinite(state[name])):
      problems.append(f"checkpoint '{name}' contains NaN or Inf")
  if problems:
    raise WeightsError(f"the checkpoint does not fit the {what}:\n  " + "\n  ".join(problems))

  loaded = {
    entry.flax_path: np.ascontiguousarray(names.to_flax(entry.layout, state[name].astype(np.float32)))
    for name, entry in load_map.items()
  }
  kept = [path for path in flat_target if path not in loaded]
  shapes_only = [path for path in kept if not hasattr(flat_target[path], "__array__")]
  if shapes_only:
    raise WeightsError(
      f"{', '.join(map(structure.path_str, shapes_only))} are not in this checkpoint and keep their "
      "initial values: pass the freshly initialised params as the target, not shapes."
    )
  filled = {path: loaded[path] if path in loaded else flat_target[path] for path in flat_target}
  return names.LoadResult(
    params=structure.unflatten(filled),
    tables={name: state[name] for name in tables if name in state},
    ignored=ignored,
    kept=tuple(map(structure.path_str, kept)),
  )


def check_fixed_tables(
  found: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], atol: float = 1e-5
) -> dict[str, float]:
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
      problems.append(
        f"'{name}' is {tuple(table.shape)} but the model's table is {tuple(expected[name].shape)}: "
        "a different token grid (set model.vit.pretrain_grid / data.image_size to match) or width"
      )
      continue
    errors[name] = float(np.max(np.abs(have - want)))
    if errors[name] > atol:
      problems.append(f"'{name}' differs from the fixed sin-cos table by up to {errors[name]:.3g} (> {atol:g})")
  if problems:
    raise FixedTableMismatch(
      "the checkpoint's position tables are not the fixed sin-cos tables this model computes:\n  "
      + "\n  ".join(problems)
      + "\nThe model does not load position tables, so this checkpoint (learned or "
      "otherwise altered positions) cannot be reproduced exactly."
    )
  return errors


def student_to_torch(params: names.Tree, tables: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """A Flax student tree (the encoder alone, or the whole student) as a PyTorch-named float32 state dict;
  `tables` (e.g. pos_embed) are added as given, so that the published code can load the result strictly."""
  params, _ = _unwrap_variables(params)
  depth, with_fpn = structure.student_structure(params)
  state = _export(params, names.student_name_map(depth, with_fpn), f"student (depth {depth})")
  state.update({name: np.asarray(table, np.float32) for name, table in (tables or {}).items()})
  return state


def teacher_to_torch(params: names.Tree, num_batches_tracked: bool = True) -> dict[str, np.ndarray]:
  """A Flax teacher tree as a torchvision-named state dict (with zero batch counters unless told otherwise)."""
  params, _ = _unwrap_variables(params)
  name_map, _, what = _teacher_map(params)
  state = _export(params, name_map, what)
  if num_batches_tracked:
    for name in [name for name in state if name.endswith(".running_mean")]:
      state[name.replace(".running_mean", ".num_batches_tracked")] = np.zeros((), np.int64)
  return state


def _export(params: names.Tree, name_map: Mapping[str, names.Entry], what: str) -> dict[str, np.ndarray]:
  flat = structure.flatten(params)
  _check_map_covers_tree(name_map, flat, what)
  return {
    name: np.ascontiguousarray(names.to_torch(entry.layout, np.asarray(flat[entry.flax_path], np.float32)))
    for name, entry in name_map.items()
  }
