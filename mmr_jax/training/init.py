"""Initial parameters of a run: the student (random, or an MAE / MMR checkpoint) and the frozen teacher."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmr_jax.models import posembed
from mmr_jax.weights import fetch
from mmr_jax.weights import loading

# The teacher is a given network, shared by every seed of a run; a randomly initialised one (the CPU demo)
# comes from this fixed key so that seeds differ only in the student.
RANDOM_TEACHER_SEED = 0


def _initialiser(config: ml_collections.ConfigDict, module: nn.Module):
  """key → `module`'s fresh parameters, at the config's image size."""
  dummy = jnp.zeros((1, config.data.image_size, config.data.image_size, 3), jnp.float32)
  return lambda key: module.init(key, dummy)["params"]


def student_shapes(config: ml_collections.ConfigDict, student: nn.Module, keys: jax.Array) -> Any:
  """The shapes and dtypes of `student_params`' random values for `keys` (leading axis K), computed by nothing."""
  return jax.eval_shape(jax.vmap(_initialiser(config, student)), keys)


def teacher_shapes(config: ml_collections.ConfigDict, teacher: nn.Module) -> Any:
  """The shapes and dtypes of the teacher's parameters, computed by nothing."""
  return jax.eval_shape(_initialiser(config, teacher), jax.random.key(RANDOM_TEACHER_SEED))


def student_params(config: ml_collections.ConfigDict, student: nn.Module, keys: jax.Array) -> Any:
  """Fresh parameters of `student` (the config's) for K seeds at once (leading axis K, one key each; the same
  values as K one-seed inits). The encoder (MAE checkpoint) or whole student (MMR checkpoint) named by
  `config.init.student` overwrites the random values."""
  # One compiled init for all seeds: op-by-op initialisation costs a compilation per operation.
  params = jax.device_get(jax.jit(jax.vmap(_initialiser(config, student)))(keys))
  if not config.init.student:
    return params
  state = fetch.resolve(config.init.student)
  loaded = []
  for k in range(len(keys)):
    result = loading.load_student(state, jax.tree_util.tree_map(lambda leaf: leaf[k], params), source="auto")
    check_student_tables(result.tables, config)
    loaded.append(result.params)
  return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *loaded)


def check_student_tables(tables: dict[str, np.ndarray], config: ml_collections.ConfigDict) -> None:
  """The model computes its fixed sin-cos tables; a checkpoint's must be the same ones (docs/spec.md §1)."""
  width, pretrain_grid = config.model.vit.width, config.model.vit.pretrain_grid
  expected = {
    name: posembed.sincos_2d(width, grid, grid)
    for name, grid in ((name, table_grid(table)) for name, table in tables.items())
  }
  if "pos_embed" in tables and table_grid(tables["pos_embed"]) != pretrain_grid:
    grid = table_grid(tables["pos_embed"])
    raise ValueError(
      f"the student checkpoint's pos_embed is for a {grid}×{grid} grid, but "
      f"model.vit.pretrain_grid is {pretrain_grid}; set --config.model.vit.pretrain_grid={grid}"
    )
  loading.check_fixed_tables(tables, expected)


def table_grid(table: np.ndarray) -> int:
  """Side of the square token grid of a (1, [1 +] g², D) position table."""
  rows = table.shape[-2]
  side = int(round(np.sqrt(rows)))
  return side if side * side == rows else int(round(np.sqrt(rows - 1)))


def teacher_params(config: ml_collections.ConfigDict, teacher: nn.Module) -> Any:
  """The frozen `teacher` (the config's): the weights named by `config.init.teacher`, or a fixed random network."""
  if not config.init.teacher:
    return jax.device_get(jax.jit(_initialiser(config, teacher))(jax.random.key(RANDOM_TEACHER_SEED)))
  return loading.load_teacher(fetch.resolve(config.init.teacher), teacher_shapes(config, teacher)).params
