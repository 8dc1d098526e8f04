"""The device mesh and the shardings of a run: the batch split over a 'data' axis, everything else replicated.

Multi-host: after `jax.distributed.initialize()` (train.py --multihost) the mesh spans every host's devices and
each host feeds its own slice of every global batch (`put_global_batch`).
"""

import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from mmr_jax import errors

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D data-parallel mesh over all devices (or the first `num_devices`)."""
  devices = jax.devices()
  if num_devices is not None:
    if num_devices > len(devices):
      raise errors.UserError(f"asked for {num_devices} devices, but only {len(devices)} are visible")
    devices = devices[:num_devices]
  # Auto axes: XLA propagates shardings through the step; no annotation inside the model is needed.
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, extra_leading_axes: int = 0) -> NamedSharding:
  """Batch axis (after `extra_leading_axes` unsharded axes, e.g. the seed axis) split over 'data'."""
  return NamedSharding(mesh, PartitionSpec(*([None] * extra_leading_axes), DATA_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
  devices = mesh.shape[DATA_AXIS]
  if batch_size % devices:
    raise errors.UserError(
      f"{what} ({batch_size}) must be divisible by the number of devices ({devices}); "
      f"set --config.{what}=<a multiple of {devices}>"
    )


def put_global_batch(local: np.ndarray, sharding: NamedSharding, batch_axis: int) -> jax.Array:
  """This host's part of a global batch → a global array laid out by `sharding` (multi-host safe)."""
  global_shape = list(local.shape)
  global_shape[batch_axis] *= jax.process_count()
  return jax.make_array_from_process_local_data(sharding, local, tuple(global_shape))


def to_host(tree):
  """Global arrays → NumPy values, whole on every host. `jax.device_get` cannot read shards that another host
  holds; those are all-gathered across the processes first."""

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))

  return jax.tree_util.tree_map(fetch, tree)


def abstract_replicated(tree, mesh: Mesh):
  """The shapes and dtypes of `tree` (arrays or ShapeDtypeStructs), replicated on the mesh: a restore's target."""
  spec = replicated(mesh)
  return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=spec), tree)
