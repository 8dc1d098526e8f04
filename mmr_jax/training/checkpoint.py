"""Orbax checkpoints of the training state, written atomically at epoch ends and resumed from the workdir.

Only what training changes is saved (student parameters, optimizer state, PRNG state, step): the frozen teacher
is rebuilt from the config. Orbax writes each checkpoint into a temporary folder and renames it when complete,
so a run killed at any moment leaves the previous checkpoint intact.
"""

import contextlib
import gc
import json
import logging
import pathlib
import shutil
import zlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from mmr_jax import errors
from mmr_jax import files


class Unreadable(Exception):
  """A checkpoint that orbax could not read back: damaged, or saved from a state of another structure."""


class Unwritable(errors.RunError):
  """A checkpoint that could not be written (a full disk, a read-only one): the message says what is kept."""


def _abandoned_task(record: logging.LogRecord) -> bool:
  return "exception was never retrieved" not in record.getMessage()


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def _quiet_abandoned_tasks() -> None:
  """Orbax reads and writes a checkpoint's arrays in concurrent asyncio tasks; when the files are damaged (or the
  disk is full) every task fails and all but the first exception are never retrieved, so asyncio would log each
  one (tensorstore spec, traceback) when it is collected, some only at exit. They repeat the failure already
  reported, so once one has failed asyncio's "exception was never retrieved" records are dropped for the rest of
  the process."""
  asyncio_log = logging.getLogger("asyncio")
  if _abandoned_task not in asyncio_log.filters:
    asyncio_log.addFilter(_abandoned_task)
  gc.collect()  # Leaving the except clause freed the traceback that held the failed tasks.


@contextlib.contextmanager
def _reads_that_fail_as_unreadable():
  """Turns any failure of an orbax read into one `Unreadable` carrying the first line of the cause."""
  try:
    yield
  except Exception as error:  # # Any failure to read is the checkpoint's.
    reason = _first_line(error)
  else:
    return
  _quiet_abandoned_tasks()
  raise Unreadable(reason)


class Checkpoints:
  """Epoch-indexed checkpoints under WORKDIR/checkpoints."""

  def __init__(self, workdir: str | pathlib.Path, keep: int = 2, create: bool = True):
    """`create=False` for readers (evaluate, predict, export): the workdir may then be read-only."""
    self.directory = pathlib.Path(workdir).absolute() / files.CHECKPOINTS
    self._verified: set[int] = set()
    self._manager = ocp.CheckpointManager(
      self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    )

  def latest_epoch(self) -> int | None:
    """The last epoch whose checkpoint is complete, or None."""
    return self._manager.latest_step()

  def epochs_newest_first(self) -> list[int]:
    return sorted(self._manager.all_steps(), reverse=True)

  def read_meta(self, epoch: int) -> dict:
    """The JSON saved beside the state of `epoch` (epoch, seeds, steps per epoch, the config), without the state."""
    self._verify(epoch)
    with _reads_that_fail_as_unreadable():
      return self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def set_aside(self, epoch: int) -> pathlib.Path:
    """Renames a damaged checkpoint to `<epoch>.damaged` (kept for inspection; orbax no longer sees it, so the
    epoch can be saved again) and forgets it."""
    source = self.directory / str(epoch)
    target = self.directory / f"{epoch}.damaged"
    suffix = 1
    while target.exists():
      target, suffix = self.directory / f"{epoch}.damaged.{suffix}", suffix + 1
    source.rename(target)
    self._manager.reload()
    return target

  def save(self, epoch: int, state: Any, meta: dict) -> None:
    """Saves `epoch` (whole or not at all: orbax writes a temporary folder and renames it). A failure (a full
    disk) removes the partial folder and raises Unwritable, which names the checkpoints that are kept. A disk
    without room for it is found before anything is written: orbax's failure path leaves its threads printing
    tracebacks after the fact."""
    needed = int(1.1 * sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(state))) + (1 << 20)
    free = shutil.disk_usage(self.directory).free
    if free < needed:
      self._unwritable(epoch, f"the disk is full: {free >> 20} MiB free, the checkpoint needs about {needed >> 20} MiB")
    try:
      args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
      self._manager.save(epoch, args=args)
      self._manager.wait_until_finished()
      if jax.process_index() == 0:
        _write_manifest(self.directory / str(epoch))
    except Exception as error:  # Whatever orbax or the disk raised: the run cannot go on, and must say so once.
      known = isinstance(error, OSError) and error.errno in files.OS_PROBLEMS
      reason = files.describe_os_error(error) if known else _first_line(error)
    else:
      return
    _quiet_abandoned_tasks()
    for partial in self.directory.glob(f"{epoch}.orbax-checkpoint-tmp*"):
      shutil.rmtree(partial, ignore_errors=True)
    self._unwritable(epoch, reason)

  def _unwritable(self, epoch: int, reason: str):
    kept = [e for e in self.epochs_newest_first() if e != epoch]
    then = f"it resumes after epoch {kept[0]}" if kept else "it starts again from epoch 0"
    intact = f"the checkpoints of epochs {', '.join(map(str, kept))} are intact" if kept else "none was saved before"
    raise Unwritable(
      f"the checkpoint of epoch {epoch} could not be written into {self.directory} ({reason}); nothing of it is "
      f"kept, {intact}. Make room and rerun the same command: {then}"
    )

  def restore(self, epoch: int, abstract_state: Any) -> tuple[Any, dict]:
    """The state of `epoch`, laid out like `abstract_state` (shapes, dtypes, shardings)."""
    self._verify(epoch)
    with _reads_that_fail_as_unreadable():
      restored = self._manager.restore(
        epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
      )
    return restored["state"], restored["meta"]

  def restore_params(self, epoch: int, abstract_params: Any) -> Any:
    """Only the student parameters of `epoch`, laid out like `abstract_params`: what scoring needs, read without
    the optimizer state (an orbax partial restore of the saved state)."""
    self._verify(epoch)
    item = {"params": abstract_params}
    restore_args = jax.tree_util.tree_map(lambda leaf: ocp.ArrayRestoreArgs(sharding=leaf.sharding), item)
    args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
    with _reads_that_fail_as_unreadable():
      return self._manager.restore(epoch, args=ocp.args.Composite(state=args))["state"]["params"]

  def close(self) -> None:
    self._manager.close()

  def _verify(self, epoch: int) -> None:
    if epoch not in self._verified:
      _check_manifest(self.directory / str(epoch))
      self._verified.add(epoch)


# Each saved checkpoint gets a list of its files with their sizes and CRC-32s, written once orbax has finished
# it. A resume checks the list before orbax reads anything: damage is then named by file, and orbax's failure
# path (concurrent reads abandoned, their errors printed by tensorstore's threads at exit) is never taken.
# Checkpoints saved without a manifest (older runs, or a kill between the two writes) are read by orbax alone.
MANIFEST = "mmr_jax_manifest.json"


def _files_of(step_dir: pathlib.Path) -> dict[str, dict]:
  files = {}
  for path in sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST):
    crc = 0
    with open(path, "rb") as handle:
      while chunk := handle.read(1 << 24):
        crc = zlib.crc32(chunk, crc)
    files[path.relative_to(step_dir).as_posix()] = {"bytes": path.stat().st_size, "crc32": crc}
  return files


def _write_manifest(step_dir: pathlib.Path) -> None:
  partial = step_dir / (MANIFEST + ".partial")
  partial.write_text(json.dumps(_files_of(step_dir)))
  partial.rename(step_dir / MANIFEST)


def _check_manifest(step_dir: pathlib.Path) -> None:
  manifest = step_dir / MANIFEST
  if not manifest.exists():
    return
  try:
    expected = json.loads(manifest.read_text())
  except ValueError as error:
    raise Unreadable(f"its file list {MANIFEST} is not JSON ({error})") from None
  found = _files_of(step_dir)
  for name, record in expected.items():
    if name not in found:
      raise Unreadable(f"{name} is missing")
    if found[name] != record:
      raise Unreadable(
        f"{name} has {found[name]['bytes']} bytes and CRC-32 {found[name]['crc32']:08x}, saved "
        f"as {record['bytes']} bytes and {record['crc32']:08x}"
      )
