"""The life of a run, read top to bottom: the config checked → one run per workdir (a lock) → a finished run
returns its results → every file of the data decoded → the programs built (`Run`: the scorer and the training
step) → the newest resumable checkpoint restored, or the state initialised → epochs of sharded steps with
checkpoints → calibration on the held-out normals → evaluation, results and the report. `evaluate` scores a
trained workdir again. The rules of a workdir's record (which checkpoint resumes, what may differ) live in
`training/resume.py`, the files' names in `files.py`.

K seeds (config.num_seeds) train side by side in one compiled program: seed k of a run is config.seed + k, and
its model, masking and data order are exactly those of a one-seed run with that seed.
"""

import json
import logging
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from mmr_jax import config as config_lib
from mmr_jax import errors
from mmr_jax import evaluation
from mmr_jax import files
from mmr_jax import reports
from mmr_jax import runtime
from mmr_jax import scoring
from mmr_jax.data import pipeline
from mmr_jax.training import checkpoint
from mmr_jax.training import lock
from mmr_jax.training import optimizer
from mmr_jax.training import resume
from mmr_jax.training import sharding
from mmr_jax.training import steps
from mmr_jax.training import summaries


class NonFiniteError(RuntimeError):
  """Loss, gradients or parameters stopped being finite."""


class Run:
  """A run's programs: the scorer (teacher, student, scoring; `scoring.Scorer`) and the training step, with the
  training state's initial values and shapes."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh | None = None,
    platform: runtime.Platform | None = None,
  ):
    self.config = config
    self.scorer = scoring.Scorer(config, mesh, platform)
    self.mesh = self.scorer.mesh
    sharding.check_batch_divisible(config.batch_size, self.mesh, "batch_size")
    self.seeds = config_lib.seeds_of(config)
    self.tx = optimizer.make_optimizer(config.optim)
    self.train_step = steps.make_train_step(
      self.scorer.student,
      self.tx,
      config.model.mask_ratio,
      self.mesh,
      config.model.precision,
      self.scorer.compiler_options,
    )

  def _states(self, params: Any) -> steps.TrainState:
    return jax.vmap(lambda p, key: steps.create_train_state(p, self.tx, key))(params, self.scorer.seed_keys()[1])

  def initial_state(self) -> steps.TrainState:
    """Seed s starts from the student key(s) splits off and trains with the other half: the same in a K-seed run
    and a one-seed run (`scoring.Scorer.seed_keys`)."""
    state = jax.jit(self._states)(self.scorer.initial_params())
    return jax.device_put(state, sharding.replicated(self.mesh))

  def abstract_state(self) -> steps.TrainState:
    """The state's shapes, dtypes and shardings, computed by nothing (jax.eval_shape): the target that a restore
    fills, so that resuming never initialises or loads a student only to overwrite it."""
    return sharding.abstract_replicated(jax.eval_shape(self._states, self.scorer.abstract_params()), self.mesh)

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
  seeds = config_lib.seeds_of(config)
  per_seed = [{} for _ in seeds]
  for subset in config.data.subsets:
    sub_config = ml_collections.ConfigDict(config.to_dict())
    sub_config.data.subsets = (subset,)
    run_one(sub_config, workdir / subset)
    for k, seed in enumerate(seeds):
      per_seed[k][subset] = json.loads(files.seed_results(results_dir / subset, seed, len(seeds)).read_text())[subset]
  return reports.write_results(results_dir, seeds, per_seed, header=evaluation.describe(config))


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
  files.check_folder(workdir, "--workdir")
  with lock.WorkdirLock(workdir):
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  checkpoints = checkpoint.Checkpoints(workdir, keep=config.keep_checkpoints)
  finished = resume.finished_results(checkpoints, config, workdir)
  if finished is not None:
    checkpoints.close()
    return finished
  pipeline.check_data(config)  # Every data problem now, not after the last epoch.
  run = Run(config)
  state, latest = resume.newest_state(checkpoints, config, run.abstract_state)
  if state is None:
    state = run.initial_state()
  else:
    logging.warning("resuming after epoch %d from %s", latest, checkpoints.directory)
  first_epoch = 0 if latest is None else latest + 1
  writer = jax.process_index() == 0  # Hosts share the workdir: one writes the run's files.
  if writer:  # Only now: the config either starts the run or matches the checkpoint in everything it trains.
    files.write_atomic(workdir / files.CONFIG, config.to_json_best_effort(indent=2) + "\n")
  steps_per_epoch = pipeline.steps_per_epoch(config)
  # All epochs trained but the end's files incomplete: the evaluation is redone, and its record with it.
  redo_end = first_epoch == config.num_epochs
  log = summaries.MetricWriter(workdir, first_epoch * steps_per_epoch, enabled=writer, drop_evaluation=redo_end)
  if redo_end:
    logging.warning("%s is trained to the end but not every result was written: evaluating it again", workdir)
  progress = tqdm.tqdm(
    total=(config.num_epochs - first_epoch) * steps_per_epoch, unit="step", dynamic_ncols=True, disable=not writer
  )
  try:
    state = _train_epochs(config, run, state, first_epoch, steps_per_epoch, checkpoints, log, progress, workdir)
  finally:
    progress.close()  # Before any message, which then prints on a line of its own.
  calibrations = evaluation.calibrate(config, run.scorer, state.params, workdir)
  results = evaluation.evaluate(config, run.scorer, state.params, workdir, calibrations)
  log.write(config.num_epochs * steps_per_epoch, _flatten_results(results, "eval"))
  log.close()
  checkpoints.close()
  return results


def _train_epochs(
  config: ml_collections.ConfigDict,
  run: Run,
  state: steps.TrainState,
  first_epoch: int,
  steps_per_epoch: int,
  checkpoints: checkpoint.Checkpoints,
  log: summaries.MetricWriter,
  progress: tqdm.tqdm,
  workdir: pathlib.Path,
) -> steps.TrainState:
  """The epochs from `first_epoch` on: sharded steps, their metrics, checkpoints, periodic evaluations."""
  images_per_step = config.batch_size * config.num_seeds
  for epoch in range(first_epoch, config.num_epochs):
    lr = optimizer.learning_rate(epoch, config.optim)
    epoch_start = time.perf_counter()
    pending = []
    for i, (images, weights) in enumerate(run.global_batch(epoch)):
      teacher_features = run.scorer.teacher_fn(run.scorer.teacher_params, images)
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
    end_step = (epoch + 1) * steps_per_epoch
    log.write(
      end_step,
      {
        "epoch": epoch,
        "epoch_seconds": epoch_seconds,
        "images_per_second": steps_per_epoch * images_per_step / max(epoch_seconds, 1e-9),
      },
    )
    last = epoch == config.num_epochs - 1
    if last or (epoch + 1) % config.checkpoint_every_epochs == 0:
      meta = {"epoch": epoch, "seeds": run.seeds, "steps_per_epoch": steps_per_epoch, "config": resume.recorded(config)}
      checkpoints.save(epoch, state, meta)
    if config.eval_every_epochs and (epoch + 1) % config.eval_every_epochs == 0 and not last:
      folder = workdir / f"eval_epoch_{epoch}"
      results = evaluation.evaluate(config, run.scorer, state.params, folder, write_report=False)
      log.write(end_step, _flatten_results(results, "eval"))
  return state


# What evaluate.py can do instead when a workdir has no checkpoint (resume.no_checkpoint).
EVALUATE_HINT = (
  ", or pass --checkpoint=FILE to evaluate converted weights, or --config.num_epochs=0 to score the untrained model"
)


def evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  student_checkpoint: str | None = None,
  out: str | pathlib.Path | None = None,
) -> dict:
  """Evaluates WORKDIR's last checkpoint; with `student_checkpoint`, a converted student (e.g. one trained with
  the PyTorch code: a .pth/.safetensors/.npz under the published names) instead; with neither and
  num_epochs == 0, the initial model. The results go to `out` (default: the workdir, which is then not written
  when it is another directory). Builds no optimizer: the scorer and the students' parameters only."""
  config = config_lib.validate(config)
  if one_model_per_subset(config):
    class_out = lambda class_workdir: None if out is None else pathlib.Path(out) / class_workdir.name
    return per_subset(lambda c, w: evaluate(c, w, student_checkpoint, class_out(w)), config, workdir, results_dir=out)
  workdir = pathlib.Path(workdir)
  out = workdir if out is None else pathlib.Path(out)
  if student_checkpoint and config.num_seeds != 1:
    raise errors.UserError("--checkpoint evaluates one student; use --config.num_seeds=1")
  if not student_checkpoint and config.num_epochs != 0 and not (workdir / files.CHECKPOINTS).is_dir():
    raise resume.no_checkpoint(workdir, EVALUATE_HINT)  # Before anything is built: a mistyped workdir costs nothing.
  pipeline.check_adaptation_shots(config)
  if jax.process_index() == 0:
    files.check_folder(out, "--out" if out != workdir else "--workdir")
  scorer = scoring.Scorer(config)
  if student_checkpoint:
    with config.unlocked():
      config.init.student = student_checkpoint
    return evaluation.evaluate(config, scorer, scorer.initial_params(), out)  # Trained elsewhere: uncalibrated.
  restored = resume.restore_params(workdir, config, scorer.abstract_params())
  if restored is None:
    if config.num_epochs != 0:
      raise resume.no_checkpoint(workdir, EVALUATE_HINT)
    return evaluation.evaluate(config, scorer, scorer.initial_params(), out)
  calibrations = evaluation.recorded_calibrations(config, workdir)
  return evaluation.evaluate(config, scorer, restored[0], out, calibrations)


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
