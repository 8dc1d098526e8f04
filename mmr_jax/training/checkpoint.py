"""Orbax checkpoints of the training state, written atomically at epoch ends and resumed from the workdir.

Only what training changes is saved (student parameters, optimizer state, PRNG state, step): the frozen teacher
is rebuilt from the config. Orbax writes each checkpoint into a temporary folder and renames it when complete,
so a run killed at any moment leaves the previous checkpoint intact.
"""

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """Epoch-indexed checkpoints under WORKDIR/checkpoints."""

  def __init__(self, workdir: str | pathlib.Path, keep: int = 2):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_epoch(self) -> int | None:
    """The last epoch whose checkpoint is complete, or None."""
    return self._manager.latest_step()

  def save(self, epoch: int, state: Any, meta: dict) -> None:
    self._manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)))
    self._manager.wait_until_finished()

  def restore(self, epoch: int, abstract_state: Any) -> tuple[Any, dict]:
    """The state of `epoch`, laid out like `abstract_state` (shapes, dtypes, shardings)."""
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """Shape/dtype/sharding skeleton of a state, the target a restore fills."""
  return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)
