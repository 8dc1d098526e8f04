"""Real training on a tiny generated AeBAD-like dataset: a run and its reports, a resume after SIGKILL that ends
identical to the uninterrupted run, K seeds in one program equal to K one-seed runs, sharding over 8 devices,
two processes joined as two hosts."""

import collections
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from configs import synthetic_random_teacher as synthetic_config
from mmr_jax import config as config_lib
from mmr_jax import errors
from mmr_jax import evaluation
from mmr_jax.training import checkpoint
from mmr_jax.training import lock
from mmr_jax.training import resume
from mmr_jax.training import summaries
from mmr_jax import experiment

REPO = pathlib.Path(__file__).parents[1]


def tiny_overrides(data_root) -> dict:
  # A micro student of one transformer block: the demo's code path at a fraction of its compile time. 8 training
  # images, one held out for calibration as the demo holds out a tenth; 7 in batches of 6: every epoch ends with a
  # padded batch (1 real image), on one host or two.
  return {
    "data.root": str(data_root),
    "data.subsets": ("same", "view"),
    "data.image_size": 64,
    "data.calibration_fraction": 0.125,
    "data.resize_size": 73,
    "model.vit.width": 128,
    "model.vit.num_heads": 2,
    "model.vit.depth": 1,
    "batch_size": 6,
    "eval_batch_size": 8,
    "num_epochs": 2,
    "checkpoint_every_epochs": 1,
    "log_every_steps": 1,
    "eval.heatmaps_per_kind": 1,
  }


# A quarter of the 8 training images held out: 2 calibration images, 6 trained on (one full batch); one epoch.
# The session's calibrated run (tests/conftest.py).
CALIBRATED = {"data.calibration_fraction": 0.25, "num_epochs": 1}


def tiny_config(data_root, **overrides):
  config = synthetic_config.get_config()
  config.data.synthetic = False
  for key, value in {**tiny_overrides(data_root), **overrides}.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config_lib.validate(config)


def final_params(workdir, config):
  run = experiment.Run(config)
  checkpoints = checkpoint.Checkpoints(workdir)
  state, _ = checkpoints.restore(checkpoints.latest_epoch(), run.abstract_state())
  checkpoints.close()
  return jax.device_get(state.params)


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  results = experiment.train(tiny_config(data_root), workdir)
  return workdir, results


def test_training_run_writes_reports(uninterrupted):
  workdir, results = uninterrupted
  on_disk = json.loads((workdir / "results.json").read_text())
  assert on_disk == results
  assert set(on_disk) == {"same", "view", "mean"}
  for row in on_disk.values():
    # The paper's metrics, their published rounding, and how the calibrated threshold fares (it held out 1 image).
    assert set(row) == {
      "image_auroc",
      "pixel_auroc",
      "pro",
      "aupro",
      "image_auroc_rounded",
      "pro_rounded",
      "fpr_at_threshold",
      "tpr_at_threshold",
      "f1_at_threshold",
      "f1_best",
      "f1_best_threshold",
    }
    fractions = [v for k, v in row.items() if v is not None and not np.isnan(v) and k != "f1_best_threshold"]
    assert all(0.0 <= v <= 1.0 for v in fractions)
  assert (workdir / "calibration.json").exists()
  np.testing.assert_allclose(
    on_disk["mean"]["image_auroc"], (on_disk["same"]["image_auroc"] + on_disk["view"]["image_auroc"]) / 2
  )
  table = (workdir / "results.md").read_text()
  assert "| Image AUROC |" in table and "same" in table and "mean" in table
  assert list((workdir / "heatmaps" / "same").glob("*.png"))
  log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in log if "loss" in r]
  assert len(losses) >= 2 and all(np.isfinite(losses))
  assert [r["lr"] for r in log if "lr" in r][0] == 0.0  # Epoch 0 trains at lr 0 (warm-up from zero).
  assert list((workdir / "tensorboard").glob("events.*"))


def test_resume_after_sigkill_is_identical(uninterrupted, data_root, tmp_path, compilation_cache):
  """A run killed with SIGKILL once its first checkpoint exists, started again with the same command, finishes
  with the same parameters and results.json as the uninterrupted run."""
  reference_dir, reference = uninterrupted
  workdir = tmp_path / "killed"
  flags = [f"--config.{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in tiny_overrides(data_root).items()]
  command = [
    sys.executable,
    "train.py",
    "--config=configs/synthetic_random_teacher.py",
    f"--workdir={workdir}",
    "--config.data.synthetic=False",
    *flags,
  ]
  # The programs are those the uninterrupted run compiled: load them from the session's cache.
  env = {**os.environ, "MMR_JAX_COMPILE_CACHE": str(compilation_cache)}
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  first_checkpoint = workdir / "checkpoints" / "0"
  deadline = time.time() + 300
  while not first_checkpoint.exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert first_checkpoint.exists(), process.stderr.read().decode()[-2000:]
  assert not (workdir / "results.json").exists()  # It really was stopped before the end.

  config = tiny_config(data_root)
  resumed = experiment.train(config, workdir)
  assert resumed == reference
  assert (workdir / "results.json").read_text() == (reference_dir / "results.json").read_text()
  ours, theirs = final_params(workdir, config), final_params(reference_dir, config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, ours, theirs)


def test_seeds_in_one_program_equal_separate_runs(data_root):
  """num_seeds=2 trains seeds 54 and 55 side by side; each equals a one-seed run with that seed."""
  together = experiment.Run(tiny_config(data_root, num_seeds=2))
  alone = [experiment.Run(tiny_config(data_root, seed=seed)) for seed in (54, 55)]
  state, alone_states = together.initial_state(), [run.initial_state() for run in alone]
  losses, alone_losses = [], [[], []]
  lr = 1e-3  # Not the warm-up's 0, so that the parameters move.
  for epoch in (0, 1):
    for images, weights in together.global_batch(epoch):
      state, metrics = together.train_step(
        state, images, weights, together.scorer.teacher_fn(together.scorer.teacher_params, images), lr
      )
      losses.append(np.asarray(metrics["loss"]))
    for k, run in enumerate(alone):
      for images, weights in run.global_batch(epoch):
        alone_states[k], metrics = run.train_step(
          alone_states[k], images, weights, run.scorer.teacher_fn(run.scorer.teacher_params, images), lr
        )
        alone_losses[k].append(float(metrics["loss"][0]))
  np.testing.assert_allclose(np.stack(losses), np.asarray(alone_losses).T, rtol=1e-5)
  # Parameters agree to float rounding as AdamW amplifies it: its first updates, lr·g/(|g| + eps), turn rounding
  # noise on gradients that are zero in exact arithmetic (the attention key bias's) into steps of up to lr.
  # 1e-4 is 1% of the distance the parameters can travel in these 10 steps.
  for k in range(2):
    jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a[k], b[0], rtol=0, atol=1e-4),
      jax.device_get(state.params),
      jax.device_get(alone_states[k].params),
    )
  # And the trained models compute the same anomaly maps.
  maps = predict(together, state.params).maps
  for k, run in enumerate(alone):
    np.testing.assert_allclose(maps[k], predict(run, alone_states[k].params).maps[0], rtol=1e-4, atol=1e-5)


def _precisions_in(hlo: str) -> collections.Counter:
  """How many dot_general and convolution ops of a lowered program carry each precision."""
  found = re.findall(r"stablehlo\.dot_general.*precision = \[(\w+), \w+\]", hlo)
  found += re.findall(r"stablehlo\.convolution.*precision (\w+)>", hlo)
  assert len(found) == hlo.count("stablehlo.dot_general") + hlo.count("stablehlo.convolution")
  return collections.Counter(found)


def test_model_precision_reaches_every_dot_and_convolution(data_root):
  """model.precision sets the student's and the teacher's matmuls and convolutions in the three compiled
  functions; only the map resampling (explicitly HIGHEST, objectives.py) keeps its own."""
  counts = {}
  for precision in ("default", "high", "highest"):
    run = experiment.Run(tiny_config(data_root, **{"model.precision": precision}))
    state = run.initial_state()
    images = jax.ShapeDtypeStruct((1, 6, 64, 64, 3), np.float32)
    test_images = jax.ShapeDtypeStruct((8, 64, 64, 3), np.float32)
    features = jax.eval_shape(run.scorer.teacher_fn, run.scorer.teacher_params, images)
    test_features = tuple(
      jax.ShapeDtypeStruct(f.shape[1:], f.dtype)
      for f in jax.eval_shape(
        run.scorer.teacher_fn, run.scorer.teacher_params, jax.ShapeDtypeStruct((1, *test_images.shape), np.float32)
      )
    )
    hlo = "\n".join(
      [
        run.scorer.teacher_fn.lower(run.scorer.teacher_params, images).as_text(),
        run.train_step.lower(state, images, jax.ShapeDtypeStruct((1, 6), np.float32), features, 1e-3).as_text(),
        run.scorer.anomaly_fn.lower(
          state.params, test_images, test_features, jax.ShapeDtypeStruct((2,), np.uint32)
        ).as_text(),
      ]
    )
    counts[precision] = _precisions_in(hlo)
  explicit = counts["default"]["HIGHEST"]
  assert explicit == counts["high"]["HIGHEST"] > 0
  assert set(counts["default"]) == {"DEFAULT", "HIGHEST"} and set(counts["high"]) == {"HIGH", "HIGHEST"}
  assert counts["default"]["DEFAULT"] == counts["high"]["HIGH"] > 5 * explicit
  assert set(counts["highest"]) == {"HIGHEST"}
  assert counts["highest"]["HIGHEST"] == explicit + counts["default"]["DEFAULT"]


def test_test_mask_ratio_masks_the_student_reproducibly(data_root):
  """eval.test_mask_ratio > 0 (the published option; 0 in its configs) hides tokens at test time: the maps change,
  and evaluating again gives the same maps (the noise comes from the seed, subset and batch)."""
  plain = experiment.Run(tiny_config(data_root))
  masked = experiment.Run(tiny_config(data_root, **{"eval.test_mask_ratio": 0.4}))
  params = plain.initial_state().params
  first, again = predict(masked, params).maps, predict(masked, params).maps
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - predict(plain, params).maps).max() > 1e-3


def predict(run, params):
  return evaluation.predict_subset(run.config, run.scorer, params, "same")


SHARDED_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from mmr_jax import runtime
    from mmr_jax import experiment
    from mmr_jax.training import sharding
    runtime.enable_compilation_cache(min_compile_seconds=0.2)
    from tests.test_training import tiny_config
    assert jax.device_count() == 8, jax.devices()
    config = tiny_config(sys.argv[1], batch_size=16, eval_batch_size=8)  # 8 real rows: 4 devices hold only padding.
    results = []
    for devices in (1, 8):
      run = experiment.Run(config, mesh=sharding.make_mesh(devices))
      state, losses = run.initial_state(), []
      for images, weights in run.global_batch(1):
        assert len(images.sharding.device_set) == devices
        features = run.scorer.teacher_fn(run.scorer.teacher_params, images)
        state, metrics = run.train_step(state, images, weights, features, 1e-3)
        losses.append(float(metrics["loss"][0]))
      results.append((jax.device_get(state.params), losses))
    (one, losses_one), (eight, losses_eight) = results
    np.testing.assert_allclose(losses_one, losses_eight, rtol=1e-5)
    # Tolerance as in test_seeds_in_one_program_equal_separate_runs: AdamW amplifies rounding noise on
    # gradients that are zero in exact arithmetic into steps of up to lr.
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-4), one, eight)
    print("sharded-ok", len(losses_one), "steps")
""")


def test_sharded_step_on_8_devices_equals_one_device(data_root, compilation_cache):
  env = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    "PYTHONPATH": str(REPO),
    "MMR_JAX_COMPILE_CACHE": str(compilation_cache),
  }
  result = subprocess.run(
    [sys.executable, "-c", SHARDED_SCRIPT, str(data_root)],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0 and "sharded-ok" in result.stdout, result.stderr[-3000:]


MULTIHOST_TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    data_root, port, process_id, workdir = sys.argv[1:5]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(process_id))
    from mmr_jax import experiment
    from tests.test_training import tiny_config
    print(json.dumps(experiment.train(tiny_config(data_root), workdir)))
""")


def test_two_hosts_train_and_evaluate_as_one_and_leave_one_record(uninterrupted, data_root, tmp_path):
  """The whole run — lock, checkpoints, calibration, evaluation, reports — on two processes joined by
  jax.distributed, one CPU device each, as two hosts are, sharing a workdir: each feeds its half of every training
  batch (the losses equal one process's, step by step), each receives the whole test maps (the results equal one
  process's), and the run's files are written once (by process 0)."""
  with socket.socket() as free:
    free.bind(("localhost", 0))
    port = free.getsockname()[1]
  env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  workdir = tmp_path / "run"
  command = lambda i: [sys.executable, "-c", MULTIHOST_TRAIN_SCRIPT, str(data_root), str(port), str(i), str(workdir)]
  hosts = [
    subprocess.Popen(command(i), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for i in range(2)
  ]
  try:
    outputs = [host.communicate(timeout=600) for host in hosts]
  finally:
    for host in hosts:
      host.kill()
  assert [host.returncode for host in hosts] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
  first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
  assert second == {}  # Only process 0 reports.
  one_process = json.loads((uninterrupted[0] / "results.json").read_text())
  assert first.keys() == one_process.keys()
  for subset, row in one_process.items():
    for metric, value in row.items():
      if value is not None and not np.isnan(value):
        assert first[subset][metric] == pytest.approx(value, abs=1e-5), (subset, metric)
  # Every record once: metrics.jsonl as long as one process's, one set of TensorBoard events.
  records = lambda w: [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
  assert len(records(workdir)) == len(records(uninterrupted[0]))
  losses = lambda w: [r["loss"] for r in records(w) if "loss" in r]
  # As in test_seeds_in_one_program_equal_separate_runs: AdamW turns rounding noise into parameter steps.
  np.testing.assert_allclose(losses(workdir), losses(uninterrupted[0]), rtol=1e-5)
  assert len(list((workdir / "tensorboard").glob("events.*"))) == 1


# ---------------------------------------------------------------------------------------------------------------
# A run's record can be trusted: resume compares configs, survives a damaged checkpoint, one run per workdir.


def _copy_of(workdir, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  return copy


def test_resume_refuses_a_config_that_trains_differently(uninterrupted, data_root, tmp_path):
  reference_dir, _ = uninterrupted
  workdir = _copy_of(reference_dir, tmp_path)
  recorded = (workdir / "config.json").read_text()
  with pytest.raises(errors.RunError) as caught:
    experiment.train(tiny_config(data_root, batch_size=4, **{"data.image_size": 48}), workdir)
  message = str(caught.value)
  assert "batch_size 6 in the checkpoint, 4 now" in message and "data.image_size 64" in message
  assert "another --workdir" in message
  assert (workdir / "config.json").read_text() == recorded  # The record of what was trained is kept.


def test_a_finished_run_rerun_does_nothing(uninterrupted, data_root, tmp_path):
  """Rerunning a finished run returns its results; no record is appended. A key that does not change what is
  trained (log_every_steps) may differ."""
  reference_dir, reference = uninterrupted
  workdir = _copy_of(reference_dir, tmp_path)
  log = (workdir / "metrics.jsonl").read_text()
  assert experiment.train(tiny_config(data_root, log_every_steps=5), workdir) == reference
  assert (workdir / "metrics.jsonl").read_text() == log


def test_a_damaged_latest_checkpoint_is_set_aside_and_the_older_one_resumed(uninterrupted, data_root, tmp_path, caplog):
  """A truncated OCDBT data file in the last checkpoint (the run was killed before its evaluation): the run says
  so, keeps the damaged checkpoint aside, resumes from the previous one and ends as the uninterrupted run."""
  reference_dir, reference = uninterrupted
  workdir = _copy_of(reference_dir, tmp_path)
  (workdir / "results.json").unlink()
  state_dir = workdir / "checkpoints" / "1" / "state"
  data_files = [f for f in state_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
  assert data_files
  for f in data_files:
    with open(f, "r+b") as handle:
      handle.truncate(4)
  with pytest.raises(errors.RunError, match="the checkpoint of epoch 1 .* cannot be read .*sets it aside"):
    experiment.evaluate(tiny_config(data_root), workdir)
  assert experiment.train(tiny_config(data_root), workdir) == reference
  assert (workdir / "checkpoints" / "1.damaged").is_dir()
  assert re.search(
    r"the checkpoint of epoch 1 is damaged \(state/\S+ has 4 bytes and CRC-32 \w+, saved as \d+", caplog.text
  ), caplog.text
  assert "resuming after epoch 0 from" in caplog.text
  ours, theirs = final_params(workdir, tiny_config(data_root)), final_params(reference_dir, tiny_config(data_root))
  jax.tree_util.tree_map(np.testing.assert_array_equal, ours, theirs)


def test_a_checkpoint_is_checked_against_its_file_list_before_orbax_reads_it(tmp_path):
  checkpoints = checkpoint.Checkpoints(tmp_path)
  checkpoints.save(0, {"w": np.arange(4.0)}, {"epoch": 0})
  checkpoints.save(1, {"w": np.arange(4.0) + 1}, {"epoch": 1})
  assert checkpoints.read_meta(1) == {"epoch": 1}
  (tmp_path / "checkpoints" / "1" / "state" / "_METADATA").unlink()
  with pytest.raises(checkpoint.Unreadable, match="^state/_METADATA is missing$"):
    checkpoint.Checkpoints(tmp_path).read_meta(1)
  (tmp_path / "checkpoints" / "0" / checkpoint.MANIFEST).unlink()  # Saved before manifests: orbax reads it alone.
  assert checkpoint.Checkpoints(tmp_path).read_meta(0) == {"epoch": 0}
  checkpoints.close()


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from mmr_jax.training import lock
    held = lock.WorkdirLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_second_run_on_a_workdir_in_use_stops_at_once(data_root, tmp_path):
  workdir = tmp_path / "busy"
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLD_LOCK, str(workdir)],
    cwd=REPO,
    stdout=subprocess.PIPE,
    text=True,
    env={**os.environ, "PYTHONPATH": str(REPO)},
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(lock.WorkdirLocked, match=f"in use by pid {holder.pid} "):
      experiment.train(tiny_config(data_root), workdir)
    assert not (workdir / "checkpoints").exists()
  finally:
    holder.kill()
    holder.wait()
  lock.WorkdirLock(workdir).acquire().release()  # The OS released the killed holder's lock.


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n{"step": 3, "lo')
  writer = summaries.MetricWriter(tmp_path, resume_after_step=2)
  writer.close()
  assert path.read_text() == '{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n'
  assert "metrics.jsonl: dropped its last line" in caplog.text
  path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(errors.RunError, match="line 2, is not a metrics record"):
    summaries.MetricWriter(tmp_path, resume_after_step=2)


def test_entry_points_print_user_errors_as_one_line_with_their_exit_code(tmp_path):
  env = {**os.environ, "MMR_JAX_MALLOC_TUNING": "0"}
  missing = tmp_path / "never_trained"
  result = subprocess.run(
    [
      sys.executable,
      "evaluate.py",
      "--config=configs/synthetic_random_teacher.py",
      f"--workdir={missing}",
      "--config.data.synthetic=False",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == errors.RunError.exit_code, result.stderr[-2000:]
  assert "error: no checkpoint in" in result.stderr and "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # No TensorFlow start-up lines either.
  assert not missing.exists()  # A mistyped workdir gets no directories.
  result = subprocess.run(
    [
      sys.executable,
      "train.py",
      "--config=configs/synthetic_random_teacher.py",
      f"--workdir={tmp_path / 'w'}",
      "--config.data.root=",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 2 and "error: data.root is empty" in result.stderr, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  result = subprocess.run(
    [sys.executable, "train.py", "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
  )
  assert result.returncode == 0 and "--workdir" in result.stdout and "--[no]verbose" in result.stdout


def test_evaluate_writes_elsewhere_with_out_and_leaves_the_workdir_as_it_was(uninterrupted, data_root, tmp_path):
  reference_dir, reference = uninterrupted
  before = {p: p.read_bytes() for p in reference_dir.rglob("*") if p.is_file() and "checkpoints" not in p.parts}
  results = experiment.evaluate(tiny_config(data_root), reference_dir, out=tmp_path / "elsewhere")
  assert results == reference
  assert (tmp_path / "elsewhere" / "results.md").is_file() and list((tmp_path / "elsewhere" / "heatmaps").iterdir())
  assert (tmp_path / "elsewhere" / "report.html").is_file()
  after = {p: p.read_bytes() for p in reference_dir.rglob("*") if p.is_file() and "checkpoints" not in p.parts}
  assert after == before


def test_test_data_is_checked_before_the_first_step(data_root, tmp_path):
  """A missing test mask stops the run at its start, naming the file, not after the last epoch."""
  root = tmp_path / "data"
  shutil.copytree(data_root, root)
  mask = sorted((root / "AeBAD_S" / "ground_truth").rglob("view/*.png"))[0]
  mask.unlink()
  workdir = tmp_path / "run"
  with pytest.raises(errors.UserError, match=mask.name):
    experiment.train(tiny_config(root), workdir)
  assert checkpoint.Checkpoints(workdir).latest_epoch() is None and not (workdir / "metrics.jsonl").exists()


def test_a_non_finite_step_stops_the_run_naming_the_step_and_the_seed():
  good = {"finite": np.array([True, True])}
  bad = {"finite": np.array([True, False])}
  with pytest.raises(experiment.NonFiniteError, match=r"at step 9 \(epoch 2\) for seed\(s\) \[55\]"):
    experiment._stop_unless_finite([good, bad, good], global_step=10, epoch=2, seeds=[54, 55])
  experiment._stop_unless_finite([good, good], global_step=10, epoch=2, seeds=[54, 55])  # Finite: no error.


def test_a_checkpoint_recorded_before_a_key_existed_resumes_with_the_value_that_reproduces_it(data_root):
  config = tiny_config(data_root, **{"data.calibration_fraction": 0.0})
  recorded = resume.recorded(config)
  del recorded["data.calibration_fraction"]  # As a checkpoint of a run before calibration existed.
  meta = {"seeds": config_lib.seeds_of(config), "config": recorded}
  resume.check_resumable(meta, config, epoch=0)
  with pytest.raises(errors.RunError, match="data.calibration_fraction"):
    resume.check_resumable(meta, tiny_config(data_root), epoch=0)  # Holds out 1/8: trains otherwise.
