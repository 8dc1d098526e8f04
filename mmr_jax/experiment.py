"""The life of a run: mesh → models and initial state → resume → epochs of sharded steps → checkpoints →
calibration, evaluation and reports. `train.py`, `evaluate.py` and `predict.py` are thin entry points over
`train`, `evaluate` and `restore_state`. This module sits above both training (`mmr_jax/training/`: steps,
checkpoints, the optimiser) and evaluation (`evaluation.py`, `reports.py`, `report_page.py`), and is the only one
that joins them (`tools/check_imports.py` checks the direction of every import).

K seeds (config.num_seeds) train side by side in one compiled program: seed k of a run is config.seed + k, and
its model, masking and data order are exactly those of a one-seed run with that seed.
"""

import json
import logging
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from mmr_jax import calibration
from mmr_jax import config as config_lib
from mmr_jax import errors
from mmr_jax import evaluation
from mmr_jax import report_page
from mmr_jax import reports
from mmr_jax.data import layouts
from mmr_jax.data import pipeline
from mmr_jax.data import sources
from mmr_jax.models import mmr
from mmr_jax.training import checkpoint
from mmr_jax.training import init
from mmr_jax.training import lock
from mmr_jax.training import optimizer
from mmr_jax.training import sharding
from mmr_jax.training import steps
from mmr_jax.training import summaries


class NonFiniteError(RuntimeError):
  """Loss, gradients or parameters stopped being finite."""


def seeds_of(config: ml_collections.ConfigDict) -> list[int]:
  return [config.seed + k for k in range(config.num_seeds)]


class Run:
  """The compiled functions and fixed data of a run, shared by training and evaluation."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
    self.config = config
    self.mesh = mesh or sharding.make_mesh()
    sharding.check_batch_divisible(config.batch_size, self.mesh, "batch_size")
    sharding.check_batch_divisible(config.eval_batch_size, self.mesh, "eval_batch_size")
    self.seeds = seeds_of(config)
    self.student = mmr.build_student(config.model)
    self.teacher = mmr.build_teacher(config.model)
    self.tx = optimizer.make_optimizer(config.optim)
    self.teacher_params = jax.device_put(init.teacher_params(config), sharding.replicated(self.mesh))
    precision = config.model.precision
    self.teacher_fn = steps.make_teacher_fn(self.teacher, self.mesh, precision)
    self.train_step = steps.make_train_step(self.student, self.tx, config.model.mask_ratio, self.mesh, precision)
    self.anomaly_fn = steps.make_anomaly_fn(
      self.student,
      self.mesh,
      config.eval.gaussian_sigma,
      config.eval.gaussian_truncate,
      config.eval.test_mask_ratio,
      precision,
    )

  def initial_state(self) -> steps.TrainState:
    """Seed s: key(s) → (student init key, training key); the same in a K-seed run and a one-seed run."""
    init_keys, train_keys = zip(*(jax.random.split(jax.random.key(seed)) for seed in self.seeds))
    params = init.student_params(self.config, jnp.stack(init_keys))
    state = jax.jit(jax.vmap(lambda p, key: steps.create_train_state(p, self.tx, key)))(params, jnp.stack(train_keys))
    return jax.device_put(state, sharding.replicated(self.mesh))

  def abstract_state(self) -> steps.TrainState:
    """The state's shapes, dtypes and shardings, computed by nothing (jax.eval_shape): the target that a restore
    fills, so that resuming never initialises or loads a student only to overwrite it."""
    dummy = jnp.zeros((1, self.config.data.image_size, self.config.data.image_size, 3), jnp.float32)

    def fresh(key):
      init_key, train_key = jax.random.split(key)
      return steps.create_train_state(self.student.init(init_key, dummy)["params"], self.tx, train_key)

    keys = jnp.stack([jax.random.key(seed) for seed in self.seeds])
    replicated = sharding.replicated(self.mesh)
    return jax.tree_util.tree_map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
      jax.eval_shape(jax.vmap(fresh), keys),
    )

  def global_batch(self, epoch: int) -> Any:
    """Yields (images (K, B, H, W, 3), weights (K, B)) global arrays: seed k's batch stream is that seed's own data
    order; weight 0 marks the rows that pad the epoch's last batch."""
    process, processes = jax.process_index(), jax.process_count()
    streams = [pipeline.train_batches(self.config, epoch, seed, process, processes) for seed in self.seeds]
    batch_sharding = sharding.batch_sharding(self.mesh, extra_leading_axes=1)
    for batches in zip(*streams):
      images = np.stack([b["image"] for b in batches])
      weights = np.stack([b["weight"] for b in batches])
      yield (
        sharding.put_global_batch(images, batch_sharding, batch_axis=1),
        sharding.put_global_batch(weights, batch_sharding, batch_axis=1),
      )

  def calibrate(self, params: Any, workdir: pathlib.Path) -> list[calibration.Calibration] | None:
    """Scores the held-out normal training images (data.calibration_fraction) and writes calibration.json; returns
    the K seeds' calibrations, or None when nothing was held out (the published protocol)."""
    if sources.calibration_set(self.config) is None:
      return None
    predictions = evaluation.predict_batches(
      pipeline.calibration_batches(self.config),
      jax.random.key(self.config.seed),
      params,
      self.teacher_params,
      self.teacher_fn,
      self.anomaly_fn,
      self.mesh,
    )
    calibrations = [
      calibration.Calibration(
        np.sort(row.astype(np.float64)), self.config.eval.threshold_fpr, self.config.data.calibration_fraction
      )
      for row in predictions.scores
    ]
    if jax.process_index() == 0:
      calibration.write(
        workdir,
        self.seeds,
        predictions.scores,
        predictions.names,
        self.config.data.calibration_fraction,
        self.config.eval.threshold_fpr,
      )
    logging.warning(
      "calibrated: %s", "; ".join(f"seed {seed}: {c.describe()}" for seed, c in zip(self.seeds, calibrations))
    )
    return calibrations

  def evaluate(
    self,
    params: Any,
    workdir: pathlib.Path,
    write_report: bool = True,
    calibrations: list[calibration.Calibration] | None = None,
  ) -> dict:
    """All test subsets, K seeds; writes results.json / results.md (and report.html with its figures); returns
    the top level. With the seeds' calibrations, the results also say how their thresholds fare."""
    per_seed = [{} for _ in self.seeds]
    report = report_page.Report(self.config) if write_report and jax.process_index() == 0 else None
    for subset in layouts.subset_names(self.config):
      predictions = evaluation.predict_subset(
        self.config, subset, params, self.teacher_params, self.teacher_fn, self.anomaly_fn, self.mesh
      )
      for k, results in enumerate(evaluation.subset_results(self.config, predictions, calibrations)):
        per_seed[k][subset] = results
      if report:
        report.add(subset, predictions)
    if jax.process_index() != 0:
      return {}
    top = reports.write_results(workdir, self.seeds, per_seed, header=_describe(self.config))
    if report:
      report.write(workdir, self.seeds, per_seed, header=_describe(self.config))
    return top

  def calibrations_in(self, directory: pathlib.Path) -> list[calibration.Calibration] | None:
    """The K seeds' calibrations recorded in DIRECTORY/calibration.json (at eval.threshold_fpr), or None."""
    found = [calibration.read(directory, seed, self.config.eval.threshold_fpr) for seed in self.seeds]
    return None if any(c is None for c in found) else found


def _describe(config: ml_collections.ConfigDict) -> str:
  vit = config.model.vit
  student = f"ViT {vit.width} wide × {vit.depth} blocks"
  return (
    f"MMR on {config.data.name} ({student} student, {config.model.teacher} teacher, "
    f"{config.data.image_size} px, {config.num_epochs} epochs)"
  )


def one_model_per_subset(config: ml_collections.ConfigDict) -> bool:
  """MVTec AD trains one model per class (docs/spec.md §7); AeBAD trains one model for all its test subsets."""
  return config.data.name == "mvtec" and len(config.data.subsets) > 1


def per_subset(
  run_one, config: ml_collections.ConfigDict, workdir: str | pathlib.Path, results_dir: str | pathlib.Path | None = None
) -> dict:
  """Runs `run_one(config, workdir)` for each class in WORKDIR/<class>, then writes the combined table; the
  per-class and combined results are read from and written to `results_dir` (default: the workdir)."""
  workdir = pathlib.Path(workdir)
  results_dir = workdir if results_dir is None else pathlib.Path(results_dir)
  per_seed = [{} for _ in seeds_of(config)]
  for subset in config.data.subsets:
    sub_config = ml_collections.ConfigDict(config.to_dict())
    sub_config.data.subsets = (subset,)
    run_one(sub_config, workdir / subset)
    for k, seed in enumerate(seeds_of(config)):
      path = results_dir / subset / (f"seed_{seed}/results.json" if config.num_seeds > 1 else "results.json")
      per_seed[k][subset] = json.loads(path.read_text())[subset]
  return reports.write_results(results_dir, seeds_of(config), per_seed, header=_describe(config))


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains (resuming from WORKDIR's newest intact checkpoint), then evaluates; returns results.json's content.

  One run per workdir (an flock'd WORKDIR/.lock); a checkpoint trained with a config that differs in what it
  trains stops the run before any work; a finished run rerun returns its results and does nothing else.
  """
  config = config_lib.validate(config)
  if one_model_per_subset(config):
    return per_subset(train, config, workdir)
  workdir = pathlib.Path(workdir)
  if jax.process_index() != 0:  # Hosts share the workdir; the first one holds the lock for all.
    return _train(config, workdir)
  with lock.WorkdirLock(workdir):
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  checkpoints = checkpoint.Checkpoints(workdir, keep=config.keep_checkpoints)
  finished = _finished_results(checkpoints, config, workdir)
  if finished is not None:
    checkpoints.close()
    return finished
  pipeline.check_data(config)  # Every data problem now, not after the last epoch.
  run, state, latest = _resume(checkpoints, config)
  first_epoch = 0 if latest is None else latest + 1
  if latest is not None:
    logging.warning("resuming after epoch %d from %s", latest, checkpoints.directory)
  writer = jax.process_index() == 0  # Hosts share the workdir: one writes the run's files.
  if writer:  # Only now: the config either starts the run or matches the checkpoint in everything it trains.
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
  steps_per_epoch = pipeline.steps_per_epoch(config)
  log = summaries.MetricWriter(workdir, resume_after_step=first_epoch * steps_per_epoch, enabled=writer)

  total_steps = (config.num_epochs - first_epoch) * steps_per_epoch
  progress = tqdm.tqdm(total=total_steps, unit="step", dynamic_ncols=True, disable=jax.process_index() != 0)
  images_per_step = config.batch_size * config.num_seeds
  for epoch in range(first_epoch, config.num_epochs):
    lr = optimizer.learning_rate(epoch, config.optim)
    epoch_start = time.perf_counter()
    pending = []
    for i, (images, weights) in enumerate(run.global_batch(epoch)):
      teacher_features = run.teacher_fn(run.teacher_params, images)
      state, step_metrics = run.train_step(state, images, weights, teacher_features, lr)
      pending.append(step_metrics)
      progress.update(1)
      if len(pending) == config.log_every_steps or i == steps_per_epoch - 1:
        global_step = epoch * steps_per_epoch + i + 1
        window = jax.device_get(pending)  # One device sync per window of steps.
        _stop_unless_finite(window, global_step, epoch, run.seeds)
        log.write(global_step, summaries.step_record(window[-1], epoch, lr, run.seeds))
        summaries.show_progress(progress, epoch, window[-1], images_per_step)
        pending = []
    epoch_seconds = time.perf_counter() - epoch_start
    log.write(
      epoch * steps_per_epoch + steps_per_epoch,
      {
        "epoch": epoch,
        "epoch_seconds": epoch_seconds,
        "images_per_second": steps_per_epoch * images_per_step / max(epoch_seconds, 1e-9),
      },
    )
    last = epoch == config.num_epochs - 1
    if last or (epoch + 1) % config.checkpoint_every_epochs == 0:
      checkpoints.save(
        epoch,
        state,
        {"epoch": epoch, "seeds": run.seeds, "steps_per_epoch": steps_per_epoch, "config": _recorded(config)},
      )
    if config.eval_every_epochs and (epoch + 1) % config.eval_every_epochs == 0 and not last:
      results = run.evaluate(state.params, workdir / f"eval_epoch_{epoch}", write_report=False)
      log.write(epoch * steps_per_epoch + steps_per_epoch, _flatten_results(results, "eval"))
  progress.close()
  results = run.evaluate(state.params, workdir, calibrations=run.calibrate(state.params, workdir))
  log.write(config.num_epochs * steps_per_epoch, _flatten_results(results, "eval"))
  log.close()
  checkpoints.close()
  return results


def evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  student_checkpoint: str | None = None,
  out: str | pathlib.Path | None = None,
) -> dict:
  """Evaluates WORKDIR's last checkpoint; with `student_checkpoint`, a converted student (e.g. one trained with
  the PyTorch code: a .pth/.safetensors/.npz under the published names) instead; with neither and
  num_epochs == 0, the initial model. The results go to `out` (default: the workdir, which is then not written
  when it is another directory)."""
  config = config_lib.validate(config)
  if one_model_per_subset(config):
    class_out = lambda class_workdir: None if out is None else pathlib.Path(out) / class_workdir.name
    return per_subset(lambda c, w: evaluate(c, w, student_checkpoint, class_out(w)), config, workdir, results_dir=out)
  workdir = pathlib.Path(workdir)
  out = workdir if out is None else pathlib.Path(out)
  if student_checkpoint and config.num_seeds != 1:
    raise errors.UserError("--checkpoint evaluates one student; use --config.num_seeds=1")
  if not student_checkpoint and config.num_epochs != 0 and not (workdir / "checkpoints").is_dir():
    raise _no_checkpoint(workdir)  # Before anything is built or created: a mistyped workdir gets no directories.
  run = Run(config)
  calibrations = None
  if student_checkpoint:
    with config.unlocked():
      config.init.student = student_checkpoint
    params = run.initial_state().params
  else:
    params = restore_state(run, workdir)[0].params
    calibrations = run.calibrations_in(workdir)  # A converted student has none: it trained on every image.
  return run.evaluate(params, out, calibrations=calibrations)


def restore_state(run: Run, workdir: pathlib.Path) -> tuple[steps.TrainState, int | None]:
  """(state, epoch) of WORKDIR's last checkpoint, checked against the run's config; (the initial state, None) when
  the config trains for 0 epochs and there is none. Raises RunError otherwise."""
  checkpoints = checkpoint.Checkpoints(workdir, keep=run.config.keep_checkpoints)
  try:
    latest = checkpoints.latest_epoch()
    if latest is None:
      if run.config.num_epochs != 0:
        raise _no_checkpoint(workdir)
      return run.initial_state(), None
    try:
      _check_resumable(checkpoints.read_meta(latest), run.config, latest)
      return checkpoints.restore(latest, run.abstract_state())[0], latest
    except checkpoint.Unreadable as error:
      raise errors.RunError(
        f"the checkpoint of epoch {latest} in {checkpoints.directory} cannot be read "
        f"({error}); `python train.py` with this workdir sets it aside and retrains from "
        f"the one before"
      ) from error
  finally:
    checkpoints.close()


def _no_checkpoint(workdir: pathlib.Path) -> errors.RunError:
  return errors.RunError(
    f"no checkpoint in {workdir.absolute() / 'checkpoints'}: train first with "
    f"`python train.py --config=... --workdir={workdir}`, or pass --checkpoint (or "
    f"--config.num_epochs=0 to score the untrained model)"
  )


# Keys that do not change what a checkpoint trained: they may differ on resume (and are noted). Everything else
# must match. num_epochs may grow (never below the epochs already trained); data.subsets chooses test sets only,
# except for MVTec, whose subset is the class trained.
_FREE_KEYS = (
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
_FREE_PREFIXES = ("eval.",)
# Keys added after checkpoints began to record their config, with the value that trains as the runs before them
# did: a record without one reads as having that value.
ADDED_KEYS = {"data.calibration_fraction": 0.0, "eval.threshold_fpr": 0.01}


def _recorded(config: ml_collections.ConfigDict) -> dict:
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
  return key in _FREE_KEYS or key.startswith(_FREE_PREFIXES)


def _check_resumable(meta: dict, config: ml_collections.ConfigDict, epoch: int) -> None:
  """Raises RunError when the checkpoint of `epoch` was trained with another config (listing each key that
  matters, old and new); logs the keys that differ but do not matter. Checkpoints written before configs were
  recorded are checked on their seeds only."""
  if list(meta.get("seeds", [])) != seeds_of(config):
    raise errors.RunError(
      f"the checkpoint in this workdir was trained with seeds {meta.get('seeds')}, but the "
      f"config asks for {seeds_of(config)}; use another --workdir or the same seed/num_seeds"
    )
  if "config" not in meta:
    return
  old, new = {**ADDED_KEYS, **meta["config"]}, _recorded(config)
  differing = sorted(key for key in set(old) | set(new) if old.get(key, "(absent)") != new.get(key, "(absent)"))
  blocking = [key for key in differing if not _is_free(key, config)]
  if config.num_epochs < epoch + 1:
    blocking.append("num_epochs")
  if blocking:
    lines = "\n".join(
      f"  {key}: {old.get(key, '(absent)')!r} in the checkpoint, {new.get(key, '(absent)')!r} now" for key in blocking
    )
    raise errors.RunError(
      f"the checkpoint of epoch {epoch} was trained with another config ({len(blocking)} "
      f"key(s) differ in what they train; num_epochs may only grow):\n{lines}\nRerun with the "
      f"checkpoint's config (config.json in the workdir), or train into another --workdir."
    )
  if differing:
    logging.warning(
      "resuming with keys that do not change what is trained changed: %s",
      ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in differing),
    )


def _resume(
  checkpoints: "checkpoint.Checkpoints", config: ml_collections.ConfigDict
) -> tuple[Run, steps.TrainState, int | None]:
  """The run and the state of the newest intact checkpoint that this config may resume (the initial state and
  None when there is none). A checkpoint that cannot be read is set aside (renamed, kept) with a warning naming
  it and why, and the next older one is tried: resuming from it ends as an uninterrupted run would."""
  run = None
  for epoch in checkpoints.epochs_newest_first():
    try:
      meta = checkpoints.read_meta(epoch)
    except checkpoint.Unreadable as error:
      _set_aside(checkpoints, epoch, error)
      continue
    _check_resumable(meta, config, epoch)
    run = run or Run(config)
    try:
      state, _ = checkpoints.restore(epoch, run.abstract_state())
    except checkpoint.Unreadable as error:
      if "config" not in meta:  # No recorded config: a mismatch cannot be told from damage.
        raise errors.RunError(
          f"the checkpoint of epoch {epoch} in {checkpoints.directory} does not fit this "
          f"config and records no config to compare ({error}); train into another "
          f"--workdir"
        ) from error
      _set_aside(checkpoints, epoch, error)
      continue
    return run, state, epoch
  run = run or Run(config)
  return run, run.initial_state(), None


def _set_aside(checkpoints: "checkpoint.Checkpoints", epoch: int, error: "checkpoint.Unreadable") -> None:
  moved = checkpoints.set_aside(epoch)
  logging.warning(
    "the checkpoint of epoch %d is damaged (%s); kept as %s, resuming from an older one", epoch, error, moved
  )


def _finished_results(
  checkpoints: "checkpoint.Checkpoints", config: ml_collections.ConfigDict, workdir: pathlib.Path
) -> dict | None:
  """results.json's content when the workdir already holds this run, finished and evaluated; else None."""
  latest = checkpoints.latest_epoch()
  results = workdir / "results.json"
  if latest is None or latest != config.num_epochs - 1 or not results.exists():
    return None
  try:
    meta = checkpoints.read_meta(latest)
  except checkpoint.Unreadable:  # Damaged: _resume sets it aside and redoes the end.
    return None
  _check_resumable(meta, config, latest)
  logging.warning(
    "%s already holds this run, trained for %d epochs and evaluated: nothing to do (results in %s; "
    "`python evaluate.py` evaluates again)",
    workdir,
    config.num_epochs,
    results,
  )
  return json.loads(results.read_text())


def _stop_unless_finite(window: list[dict], global_step: int, epoch: int, seeds: list[int]) -> None:
  """Raises NonFiniteError at the first step of a fetched window whose loss, gradients or parameters are not
  finite for some seed."""
  for offset, m in enumerate(window):
    if not np.all(m["finite"]):
      bad = [seed for seed, ok in zip(seeds, m["finite"]) if not ok]
      step = global_step - len(window) + offset + 1
      raise NonFiniteError(
        f"loss, gradients or parameters became NaN/Inf at step {step} (epoch {epoch}) for "
        f"seed(s) {bad}. Nothing was checkpointed after the last good epoch; lower optim.lr "
        f"or check the input data, then rerun the same command to resume."
      )


def _flatten_results(results: dict, prefix: str) -> dict:
  return {
    f"{prefix}/{subset}/{metric}": value
    for subset, row in results.items()
    for metric, value in row.items()
    if isinstance(value, (int, float))
  }
