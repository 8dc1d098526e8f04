"""Measurements: the matmul peak of the device, peak memory, the compiled functions of a run timed on
device-resident batches, and the PyTorch MMR timed in a child process (tools/benchmark_torch.py, in a checkout)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from mmr_jax import experiment
from mmr_jax import runtime
from mmr_jax.training import sharding


# In a checkout of the repository only (tools/ is not installed): --compare_torch says so where it is absent.
TORCH_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "tools" / "benchmark_torch.py"


def _median_seconds(call: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, list[float]]:
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def matmul_peak(size: int, dtype: Any, repeats: int = 3, compiler_options: dict[str, str] | None = None) -> float:
  """FLOP/s of a size³ matmul on the default device, accumulating (and returning) float32."""
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(k, (size, size), jnp.float32).astype(dtype) for k in keys)
  dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32), compiler_options=compiler_options)
  seconds, _ = _median_seconds(lambda: dot(a, b), warmup=1, repeats=repeats)
  return 2 * size**3 / seconds


def probe_peaks(sizes: tuple[int, ...], mesh: jax.sharding.Mesh) -> dict[str, float]:
  """The best rate over a few square sizes, through XLA's default dot path and through the one a run compiles
  with (`runtime.Platform.compiler_options`; they differ on the CPU): the device's practical matmul peak, for both
  dtypes."""
  platform = runtime.Platform.of(mesh.devices.flat[0])
  peaks = {}
  for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
    run_options = platform.compiler_options(name)  # None off the CPU: one path, probed once.
    paths = (None,) if run_options is None else (None, run_options)
    peaks[name] = max(matmul_peak(s, dtype, compiler_options=options) for s in sizes for options in paths)
  return peaks


def peak_memory() -> tuple[int, str]:
  """Peak bytes of device 0 where the backend reports them, else this process's max resident set."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
  scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux.
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "process max RSS"


def _compile(jitted: Callable, *args) -> tuple[Callable, float]:
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - start


@dataclasses.dataclass
class Timings:
  train_step_s: float
  train_step_all_s: list[float]
  train_compile_s: float
  infer_batch_s: float
  infer_batch_all_s: list[float]
  infer_compile_s: float


def time_run(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, warmup: int, repeats: int) -> Timings:
  """Builds a run's programs from the config (`experiment.Run`, random weights: speed does not depend on their
  values) and times them on synthetic device-resident batches: teacher + training step as the training loop calls
  them, teacher + students as evaluation does (`scoring.Scorer.score`)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.init.student = ""
    config.init.teacher = ""
  run = experiment.Run(config, mesh)
  scorer = run.scorer
  k, b, size = config.num_seeds, config.batch_size, config.data.image_size
  state = run.initial_state()
  teacher_params = scorer.teacher_params
  make_images = lambda shape, spec: jax.jit(
    lambda key: jax.random.uniform(key, shape, jnp.float32, -2.0, 2.0), out_shardings=spec
  )(jax.random.key(1))
  train_images = make_images((k, b, size, size, 3), sharding.batch_sharding(mesh, extra_leading_axes=1))
  eval_images = make_images((b, size, size, 3), sharding.batch_sharding(mesh))
  weights = jax.device_put(jnp.ones((k, b), jnp.float32), sharding.batch_sharding(mesh, extra_leading_axes=1))
  eval_rng = jax.random.key_data(jax.random.key(2))
  lr = 1e-4

  teacher_train, teacher_seconds = _compile(scorer.teacher_fn, teacher_params, train_images)
  features = teacher_train(teacher_params, train_images)
  step, step_seconds = _compile(run.train_step, state, train_images, weights, features, lr)
  logging.info(
    "compiled the teacher in %.1f s and the training step in %.1f s; timing %d + %d steps",
    teacher_seconds,
    step_seconds,
    warmup,
    repeats,
  )
  holder = {"state": state}

  def train_call():
    teacher_features = teacher_train(teacher_params, train_images)
    holder["state"], metrics = step(holder["state"], train_images, weights, teacher_features, lr)
    return holder["state"], metrics

  train_s, train_all = _median_seconds(train_call, warmup, repeats)
  params = holder.pop("state").params

  eval_batch = jax.block_until_ready(eval_images[None])  # The scorer feeds the teacher (1, B, …).
  if k == 1:
    teacher_eval, teacher_eval_seconds = teacher_train, teacher_seconds
  else:
    teacher_eval, teacher_eval_seconds = _compile(scorer.teacher_fn, teacher_params, eval_batch)
  eval_features = tuple(f[0] for f in teacher_eval(teacher_params, eval_batch))
  anomaly, anomaly_seconds = _compile(scorer.anomaly_fn, params, eval_images, eval_features, eval_rng)
  logging.info(
    "training step: median %.3f s; compiled inference in %.1f s", train_s, teacher_eval_seconds + anomaly_seconds
  )

  def infer_call():
    teacher_features = tuple(f[0] for f in teacher_eval(teacher_params, eval_batch))
    return anomaly(params, eval_images, teacher_features, eval_rng)

  infer_s, infer_all = _median_seconds(infer_call, warmup, repeats)
  return Timings(
    train_s, train_all, teacher_seconds + step_seconds, infer_s, infer_all, teacher_eval_seconds + anomaly_seconds
  )


def torch_figures(
  config: ml_collections.ConfigDict, warmup: int, repeats: int, baseline: str
) -> dict[str, float] | None:
  """Runs tools/benchmark_torch.py on the same setting in a child process: the PyTorch MMR with the published
  code's execution forms (`baseline="published"`) or the lean port ("spec"); see that script. The child inherits
  this process's environment, GLIBC_TUNABLES included: both frameworks run on the same allocator settings."""
  if importlib.util.find_spec("torch") is None or not TORCH_SCRIPT.exists():
    print("--compare_torch: PyTorch or tools/benchmark_torch.py is not available; skipping the comparison")
    return None
  v = config.model.vit
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "torch.json"
    command = [
      sys.executable,
      str(TORCH_SCRIPT),
      f"--width={v.width}",
      f"--depth={v.depth}",
      f"--num_heads={v.num_heads}",
      f"--patch_size={v.patch_size}",
      f"--mlp_ratio={v.mlp_ratio}",
      f"--teacher={config.model.teacher}",
      f"--image_size={config.data.image_size}",
      f"--batch={config.batch_size}",
      f"--mask_ratio={config.model.mask_ratio}",
      f"--warmup={warmup}",
      f"--steps={repeats}",
      f"--baseline={baseline}",
      f"--json={out}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
      print(f"--compare_torch: tools/benchmark_torch.py failed:\n{result.stderr[-2000:]}")
      return None
    return json.loads(out.read_text())
