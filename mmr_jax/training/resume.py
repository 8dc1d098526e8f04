"""The rules of a workdir's record: what a checkpoint's recorded config allows (resume, evaluate, predict), which
checkpoint a run resumes from, when a run is finished, and reading back the config a run recorded.

Every checkpoint's meta records the config that trained it (flat dotted keys, `recorded`). A config may resume it
when it differs only in keys that cannot change what is trained (FREE_KEYS); num_epochs may only grow.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Callable

import ml_collections

from mmr_jax import config as config_lib
from mmr_jax import errors
from mmr_jax import files
from mmr_jax.training import checkpoint

# Keys that do not change what a checkpoint trained: they may differ on resume (and are noted). Everything else
# must match. num_epochs may grow (never below the epochs already trained); data.subsets chooses test sets only,
# except for MVTec, whose subset is the class trained.
FREE_KEYS = (
  "log_every_steps",
  "eval_batch_size",
  "eval_every_epochs",
  "checkpoint_every_epochs",
  "keep_checkpoints",
  "num_epochs",
  "data.root",
  "data.cache",
  "data.use_tfds",
  "data.tfds_data_dir",
  "data.synthetic",
  "data.resize_size",
  "data.strict_mask_binarization",
)
FREE_PREFIXES = ("eval.",)
# Keys added after checkpoints began to record their config, with the value that trains as the runs before them
# did: a record (a checkpoint's meta or a config.json) without one reads as having that value.
ADDED_KEYS = {"data.calibration_fraction": 0.0, "eval.threshold_fpr": 0.01, "eval.adapt_shots": 0}


def recorded(config: ml_collections.ConfigDict) -> dict:
  """The config as saved in each checkpoint's meta: flat dotted keys, JSON values (tuples become lists)."""

  def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
      if isinstance(value, dict):
        flat.update(flatten(value, f"{prefix}{key}."))
      else:
        flat[f"{prefix}{key}"] = value
    return flat

  return flatten(json.loads(config.to_json_best_effort()))


def _is_free(key: str, config: ml_collections.ConfigDict) -> bool:
  if key == "data.subsets":
    return config.data.name != "mvtec"
  return key in FREE_KEYS or key.startswith(FREE_PREFIXES)


def check_resumable(meta: dict, config: ml_collections.ConfigDict, epoch: int) -> None:
  """Raises RunError when the checkpoint of `epoch` was trained with another config (listing each key that
  matters, old and new); logs the keys that differ but do not matter. Checkpoints written before configs were
  recorded are checked on their seeds only."""
  seeds = config_lib.seeds_of(config)
  if list(meta.get("seeds", [])) != seeds:
    raise errors.RunError(
      f"the checkpoint in this workdir was trained with seeds {meta.get('seeds')}, but the "
      f"config asks for {seeds}; use another --workdir or the same seed/num_seeds"
    )
  if "config" not in meta:
    return
  old, new = {**ADDED_KEYS, **meta["config"]}, recorded(config)
  differing = sorted(key for key in set(old) | set(new) if old.get(key, "(absent)") != new.get(key, "(absent)"))
  blocking = [key for key in differing if not _is_free(key, config)]
  if config.num_epochs < epoch + 1:
    blocking.append("num_epochs")
  if blocking:
    keys = "; ".join(
      f"{key} {old.get(key, '(absent)')!r} in the checkpoint, {new.get(key, '(absent)')!r} now" for key in blocking
    )
    raise errors.RunError(
      f"the checkpoint of epoch {epoch} was trained with another config ({len(blocking)} key(s) differ in what "
      f"they train, and num_epochs may only grow: {keys}). Rerun with the checkpoint's config (config.json in the "
      f"workdir), or train into another --workdir"
    )
  if differing:
    logging.warning(
      "the checkpoint's record differs only in keys that do not change what is trained: %s",
      ", ".join(f"{k} {old.get(k, '(absent)')!r} → {new.get(k, '(absent)')!r}" for k in differing),
    )


def newest_state(
  checkpoints: checkpoint.Checkpoints, config: ml_collections.ConfigDict, abstract_state: Callable[[], Any]
) -> tuple[Any, int | None]:
  """(state, epoch) of the newest intact checkpoint that this config may resume, restored into
  `abstract_state()`'s shapes; (None, None) when there is none. A checkpoint that cannot be read is set aside
  (renamed, kept) with a warning naming it and why, and the next older one is tried: resuming from it ends as an
  uninterrupted run would. A checkpoint trained with another config stops the run (RunError)."""
  for epoch in checkpoints.epochs_newest_first():
    try:
      meta = checkpoints.read_meta(epoch)
    except checkpoint.Unreadable as error:
      _set_aside(checkpoints, epoch, error)
      continue
    check_resumable(meta, config, epoch)
    try:
      state, _ = checkpoints.restore(epoch, abstract_state())
    except checkpoint.Unreadable as error:
      if "config" not in meta:  # No recorded config: a mismatch cannot be told from damage.
        raise errors.RunError(
          f"the checkpoint of epoch {epoch} in {checkpoints.directory} does not fit this "
          f"config and records no config to compare ({error}); train into another "
          f"--workdir"
        ) from error
      _set_aside(checkpoints, epoch, error)
      continue
    return state, epoch
  return None, None


def _set_aside(checkpoints: checkpoint.Checkpoints, epoch: int, error: checkpoint.Unreadable) -> None:
  moved = checkpoints.set_aside(epoch)
  logging.warning(
    "the checkpoint of epoch %d is damaged (%s); kept as %s, resuming from an older one", epoch, error, moved
  )


def _parses(path: pathlib.Path) -> bool:
  try:
    json.loads(path.read_text())
    return True
  except (OSError, ValueError):
    return False


def outputs_complete(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> bool:
  """Whether every file the end of a run writes exists and parses: calibration.json (when images are held out),
  each seed's results.json, results.md and report.html. A run stopped among them (a kill, a full disk, a crash in
  the report) is not finished: its rerun writes them again from the last checkpoint, without training."""
  seeds = config_lib.seeds_of(config)
  parsed = [files.seed_results(workdir, seed, len(seeds)) for seed in seeds] + [workdir / files.RESULTS]
  if config.data.calibration_fraction > 0:
    parsed.append(workdir / files.CALIBRATION)
  present = [workdir / files.RESULTS_TABLE, workdir / files.REPORT]
  return all(_parses(path) for path in parsed) and all(path.is_file() for path in present)


def finished_results(
  checkpoints: checkpoint.Checkpoints, config: ml_collections.ConfigDict, workdir: pathlib.Path
) -> dict | None:
  """results.json's content when the workdir already holds this run, trained, evaluated and reported (every output
  there and whole); else None."""
  latest = checkpoints.latest_epoch()
  results = workdir / files.RESULTS
  if latest is None or latest != config.num_epochs - 1 or not outputs_complete(config, workdir):
    return None
  try:
    meta = checkpoints.read_meta(latest)
  except checkpoint.Unreadable:  # Damaged: newest_state sets it aside and the end is redone.
    return None
  check_resumable(meta, config, latest)
  logging.warning(
    "%s already holds this run, trained for %d epochs and evaluated: nothing to do (results in %s; "
    "`python evaluate.py` evaluates again)",
    workdir,
    config.num_epochs,
    results,
  )
  return json.loads(results.read_text())


def no_checkpoint(workdir: pathlib.Path, hint: str) -> errors.RunError:
  """The error of a command that needs a trained workdir and found no checkpoint; `hint` says what that command
  can do instead."""
  return errors.RunError(
    f"no checkpoint in {workdir.absolute() / files.CHECKPOINTS}: train first with "
    f"`python train.py --config=... --workdir={workdir}`{hint}"
  )


def restore_params(
  workdir: pathlib.Path, config: ml_collections.ConfigDict, abstract_params: Any
) -> tuple[Any, int] | None:
  """(the K students' parameters, epoch) of WORKDIR's last checkpoint, checked against `config` and restored into
  `abstract_params`' shapes: neither an optimizer nor its state is built. None when there is no checkpoint;
  RunError when it cannot be read or was trained otherwise."""
  if not (pathlib.Path(workdir) / files.CHECKPOINTS).is_dir():
    return None
  checkpoints = checkpoint.Checkpoints(workdir, keep=config.keep_checkpoints, create=False)
  try:
    latest = checkpoints.latest_epoch()
    if latest is None:
      return None
    try:
      check_resumable(checkpoints.read_meta(latest), config, latest)
      return checkpoints.restore_params(latest, abstract_params), latest
    except checkpoint.Unreadable as error:
      raise errors.RunError(
        f"the checkpoint of epoch {latest} in {checkpoints.directory} cannot be read ({error}); "
        f"`python train.py` with this workdir sets it aside and retrains from the one before"
      ) from error
  finally:
    checkpoints.close()


def read_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json, with ADDED_KEYS where it predates them), validated."""
  path = pathlib.Path(workdir) / files.CONFIG
  if not path.is_file():
    raise errors.RunError(
      f"{path} does not exist: --workdir must be the workdir of a training run (train.py "
      f"writes {files.CONFIG} there; for MVTec AD, WORKDIR/<class>)"
    )
  as_tuples = lambda value: tuple(value) if isinstance(value, list) else value
  try:
    tree = json.loads(path.read_text(), object_hook=lambda d: {k: as_tuples(v) for k, v in d.items()})
  except ValueError as error:
    raise errors.RunError(
      f"{path} is not the JSON a run writes ({error}); it was changed by hand or cut short: restore it from "
      f"the checkpoint's record by rerunning `python train.py` with the run's config and --workdir"
    ) from None
  config = ml_collections.ConfigDict(tree)
  for key, value in ADDED_KEYS.items():
    section, leaf = key.split(".")
    if leaf not in config[section]:
      config[section][leaf] = value
  return config_lib.validate(config)
