"""Speed of a run's compiled functions, against this device's own matrix-multiply peak.

    python -m mmr_jax.benchmark --config=configs/aebad_s.py --batch=16 --steps=5 --json=bench.json
    python -m mmr_jax.benchmark --config=configs/aebad_s.py --config.model.compute_dtype=bfloat16
    python -m mmr_jax.benchmark --config=configs/aebad_s.py --compare_torch   # + tools/benchmark_torch.py
    python -m mmr_jax.benchmark --config=configs/aebad_s.py --config.num_seeds=4   # K seeds in one program

Times exactly what a run executes, built by the public makers of `mmr_jax.training.steps`: the teacher features
plus the training step (student forward/backward, Eq. 1, AdamW) on K seeds, and inference (teacher, student at
mask ratio 0, Eq. 2 map with its smoothing, image score) as `mmr_jax.evaluation` calls it. Batches are
synthetic and already on the device; each figure is the median over `--steps` timed calls after `--warmup`.

FLOPs are counted analytically from the config (matmuls and convolutions, a multiply-add = 2 FLOPs); a training
image costs the teacher's forward plus 3× the student's forward (its backward counted as 2× the forward). The
fraction of peak divides the achieved FLOP/s by the best large-matmul rate measured in the same process, in
float32 and in bfloat16 with float32 accumulation. Imports nothing from `mmr_jax.data` (TensorFlow-free).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags

from mmr_jax import config as config_lib
from mmr_jax import runtime
from mmr_jax.models import layers
from mmr_jax.models import mmr
from mmr_jax.models import efficientnet
from mmr_jax.models import resnet
from mmr_jax.models import teachers
from mmr_jax.models import vit
from mmr_jax.training import init
from mmr_jax.training import optimizer
from mmr_jax.training import sharding
from mmr_jax.training import steps

TORCH_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "tools" / "benchmark_torch.py"


# ------------------------------------------------------------------------------------------------------------
# Analytic FLOPs (forward, per image; multiply-add = 2)
# ------------------------------------------------------------------------------------------------------------


def conv_flops(out_h: int, out_w: int, kernel: int, in_channels: int, out_channels: int) -> int:
  return 2 * out_h * out_w * kernel * kernel * in_channels * out_channels


def teacher_flops(spec: teachers.Spec, image_size: int) -> int:
  """The teacher's convolutions up to its third feature map (BatchNorm, activations and pooling are not
  matmuls)."""
  if isinstance(spec, efficientnet.EfficientNetLiteSpec):
    return efficientnet_flops(spec, image_size)
  return resnet_flops(spec, image_size)


def resnet_flops(spec: resnet.ResNetSpec, image_size: int) -> int:
  """ResNet stem + layer1..layer3."""
  size = (image_size + 2 * 3 - 7) // 2 + 1  # 7×7 s2 p3 stem.
  flops = conv_flops(size, size, 7, 3, spec.stem_width)
  size = (size + 2 * 1 - 3) // 2 + 1  # 3×3 s2 p1 max-pool.
  channels = spec.stem_width
  for layer, (blocks, planes) in enumerate(zip(spec.stage_sizes, spec.planes), start=1):
    for j in range(blocks):
      stride = 2 if (j == 0 and layer > 1) else 1
      out_size = (size - 1) // stride + 1  # Same for the 3×3 p1 and the 1×1 p0 convolutions.
      if spec.block == "bottleneck":
        mid, out = planes * spec.mid_multiplier, planes * 4
        flops += (conv_flops(size, size, 1, channels, mid) + conv_flops(out_size, out_size, 3, mid, mid)
                  + conv_flops(out_size, out_size, 1, mid, out))
      else:
        out = planes
        flops += conv_flops(out_size, out_size, 3, channels, out) + conv_flops(out_size, out_size, 3, out, out)
      if stride != 1 or channels != out:
        flops += conv_flops(out_size, out_size, 1, channels, out)
      size, channels = out_size, out
  return flops


def efficientnet_flops(spec: efficientnet.EfficientNetLiteSpec, image_size: int) -> int:
  """Stem and the blocks up to the stride-16 features ('SAME' padding: output size = ceil(input / stride))."""
  size = -(-image_size // 2)
  flops = conv_flops(size, size, 3, 3, efficientnet.STEM_WIDTH)
  blocks = spec.blocks()[:spec.feature_block_indices()[-1] + 1]
  for block in blocks:
    hidden = block.in_channels * block.expansion
    out_size = -(-size // block.stride)
    if block.expansion != 1:
      flops += conv_flops(size, size, 1, block.in_channels, hidden)
    flops += conv_flops(out_size, out_size, block.kernel, 1, hidden)  # Depthwise: one input channel per output.
    flops += conv_flops(out_size, out_size, 1, hidden, block.out_channels)
    size = out_size
  return flops


def encoder_flops(width: int, depth: int, mlp_ratio: float, patch_size: int, visible_tokens: int) -> int:
  """Patch embedding of the visible patches, then `depth` blocks over them plus the cls token."""
  tokens = visible_tokens + 1
  hidden = int(width * mlp_ratio)
  per_block = (2 * tokens * width * 3 * width  # qkv
               + 2 * 2 * tokens * tokens * width  # q·kᵀ and weights·v over all heads
               + 2 * tokens * width * width  # proj
               + 2 * 2 * tokens * width * hidden)  # fc1, fc2
  return 2 * visible_tokens * patch_size * patch_size * 3 * width + depth * per_block


def fpn_flops(width: int, out_channels: tuple[int, int, int], grid: int) -> int:
  """The three branches of the simple FPN (k2 s2 transposed convolutions: 4 output pixels per input pixel)."""
  c1, c2, c3 = out_channels
  g = grid
  convt = lambda size, cin, cout: 2 * size * size * cin * cout * 4
  simfp2 = (convt(g, width, width // 2) + convt(2 * g, width // 2, width // 4)
            + conv_flops(4 * g, 4 * g, 1, width // 4, c1) + conv_flops(4 * g, 4 * g, 3, c1, c1))
  simfp3 = (convt(g, width, width // 2) + conv_flops(2 * g, 2 * g, 1, width // 2, c2)
            + conv_flops(2 * g, 2 * g, 3, c2, c2))
  simfp4 = conv_flops(g, g, 1, width, c3) + conv_flops(g, g, 3, c3, c3)
  return simfp2 + simfp3 + simfp4


def anomaly_map_flops(image_size: int, feature_sizes: tuple[int, ...]) -> int:
  """Eq. 2's resampling and smoothing, which run as separable matmuls (rows, then columns)."""
  s = image_size
  upsample = sum(2 * s * h * h + 2 * s * h * s for h in feature_sizes)
  return upsample + 2 * s * s * s * 2


def analytic_flops(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Per-image forward FLOPs of each part, and the totals of one training and one inference image."""
  model, size = config.model, config.data.image_size
  spec = teachers.spec(model.teacher)
  v = model.vit
  grid = size // v.patch_size
  tokens = grid * grid
  kept = vit.num_kept(tokens, model.mask_ratio) if model.mask_ratio > 0 else tokens
  fpn = fpn_flops(v.width, spec.out_channels, grid)
  figures = {
      "teacher": teacher_flops(spec, size),
      "encoder_train": encoder_flops(v.width, v.depth, v.mlp_ratio, v.patch_size, kept),
      "encoder_infer": encoder_flops(v.width, v.depth, v.mlp_ratio, v.patch_size, tokens),
      "fpn": fpn,
      "anomaly_map": anomaly_map_flops(size, (4 * grid, 2 * grid, grid)),
  }
  student_train = figures["encoder_train"] + fpn
  figures["train"] = figures["teacher"] + 3 * student_train
  figures["infer"] = figures["teacher"] + figures["encoder_infer"] + fpn + figures["anomaly_map"]
  return {k: float(v) for k, v in figures.items()}


# ------------------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------------------


def _median_seconds(call: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, list[float]]:
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def matmul_peak(size: int, dtype: Any, repeats: int = 3) -> float:
  """FLOP/s of a size³ matmul on the default device, accumulating (and returning) float32."""
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(k, (size, size), jnp.float32).astype(dtype) for k in keys)
  dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  seconds, _ = _median_seconds(lambda: dot(a, b), warmup=1, repeats=repeats)
  return 2 * size ** 3 / seconds


def probe_peaks(sizes: tuple[int, ...]) -> dict[str, float]:
  """The best rate over a few square sizes: the device's practical matmul peak, for both compute dtypes."""
  return {name: max(matmul_peak(s, dtype) for s in sizes)
          for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16))}


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
  """Builds the run's compiled functions from the config and times them on synthetic device-resident batches."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.init.student = ""  # Random weights: speed does not depend on their values.
    config.init.teacher = ""
  k, b, size = config.num_seeds, config.batch_size, config.data.image_size
  student, teacher = mmr.build_student(config.model), mmr.build_teacher(config.model)
  tx = optimizer.make_optimizer(config.optim)
  precision = config.model.precision
  teacher_fn = steps.make_teacher_fn(teacher, mesh, precision)
  train_step = steps.make_train_step(student, tx, config.model.mask_ratio, mesh, precision)
  anomaly_fn = steps.make_anomaly_fn(student, mesh, config.eval.gaussian_sigma, config.eval.gaussian_truncate,
                                     config.eval.test_mask_ratio, precision)

  replicated = sharding.replicated(mesh)
  seeds = [config.seed + i for i in range(k)]
  init_keys, train_keys = zip(*(jax.random.split(jax.random.key(seed)) for seed in seeds))
  params = init.student_params(config, jnp.stack(init_keys))
  state = jax.jit(jax.vmap(lambda p, key: steps.create_train_state(p, tx, key)), out_shardings=replicated)(
      params, jnp.stack(train_keys))
  teacher_params = jax.device_put(init.teacher_params(config), replicated)
  make_images = lambda shape, spec: jax.jit(
      lambda key: jax.random.uniform(key, shape, jnp.float32, -2.0, 2.0), out_shardings=spec)(jax.random.key(1))
  train_images = make_images((k, b, size, size, 3), sharding.batch_sharding(mesh, extra_leading_axes=1))
  eval_images = make_images((b, size, size, 3), sharding.batch_sharding(mesh))
  weights = jax.device_put(jnp.ones((k, b), jnp.float32), sharding.batch_sharding(mesh, extra_leading_axes=1))
  eval_rng = jax.random.key_data(jax.random.key(2))
  lr = 1e-4

  teacher_train, teacher_seconds = _compile(teacher_fn, teacher_params, train_images)
  features = teacher_train(teacher_params, train_images)
  step, step_seconds = _compile(train_step, state, train_images, weights, features, lr)
  logging.info("compiled the teacher in %.1f s and the training step in %.1f s; timing %d + %d steps",
               teacher_seconds, step_seconds, warmup, repeats)
  holder = {"state": state}

  def train_call():
    teacher_features = teacher_train(teacher_params, train_images)
    holder["state"], metrics = step(holder["state"], train_images, weights, teacher_features, lr)
    return holder["state"], metrics

  train_s, train_all = _median_seconds(train_call, warmup, repeats)
  params = holder.pop("state").params

  eval_batch = jax.block_until_ready(eval_images[None])  # evaluation.py feeds the teacher (1, B, …).
  if k == 1:
    teacher_eval, teacher_eval_seconds = teacher_train, teacher_seconds
  else:
    teacher_eval, teacher_eval_seconds = _compile(teacher_fn, teacher_params, eval_batch)
  eval_features = tuple(f[0] for f in teacher_eval(teacher_params, eval_batch))
  anomaly, anomaly_seconds = _compile(anomaly_fn, params, eval_images, eval_features, eval_rng)
  logging.info("training step: median %.3f s; compiled inference in %.1f s", train_s,
               teacher_eval_seconds + anomaly_seconds)

  def infer_call():
    teacher_features = tuple(f[0] for f in teacher_eval(teacher_params, eval_batch))
    return anomaly(params, eval_images, teacher_features, eval_rng)

  infer_s, infer_all = _median_seconds(infer_call, warmup, repeats)
  return Timings(train_s, train_all, teacher_seconds + step_seconds, infer_s, infer_all,
                 teacher_eval_seconds + anomaly_seconds)


def torch_figures(config: ml_collections.ConfigDict, warmup: int, repeats: int,
                  baseline: str) -> dict[str, float] | None:
  """Runs tools/benchmark_torch.py on the same setting in a child process: the PyTorch MMR with the published
  code's execution forms (`baseline="published"`) or the lean port ("spec"); see that script. The child inherits
  this process's environment, GLIBC_TUNABLES included: both frameworks run on the same allocator settings."""
  if importlib.util.find_spec("torch") is None or not TORCH_SCRIPT.exists():
    print("--compare_torch: PyTorch or tools/benchmark_torch.py is not available; skipping the comparison")
    return None
  v = config.model.vit
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "torch.json"
    command = [sys.executable, str(TORCH_SCRIPT), f"--width={v.width}", f"--depth={v.depth}",
               f"--num_heads={v.num_heads}", f"--patch_size={v.patch_size}", f"--mlp_ratio={v.mlp_ratio}",
               f"--teacher={config.model.teacher}", f"--image_size={config.data.image_size}",
               f"--batch={config.batch_size}", f"--mask_ratio={config.model.mask_ratio}",
               f"--warmup={warmup}", f"--steps={repeats}", f"--baseline={baseline}", f"--json={out}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
      print(f"--compare_torch: tools/benchmark_torch.py failed:\n{result.stderr[-2000:]}")
      return None
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------------------


def benchmark(config: ml_collections.ConfigDict, *, num_devices: int | None = None, warmup: int = 1,
              steps_timed: int = 3, probe_sizes: tuple[int, ...] = (2048, 4096),
              compare_torch: bool = False, torch_baseline: str = "published") -> dict[str, Any]:
  """All figures of one benchmark as a flat JSON-ready dict (see the module docstring)."""
  config_lib.validate(config)
  mesh = sharding.make_mesh(num_devices)
  sharding.check_batch_divisible(config.batch_size, mesh, "batch_size")
  devices = mesh.devices.size
  peaks = probe_peaks(probe_sizes)
  timings = time_run(config, mesh, warmup, steps_timed)
  # Probe again: the larger of the two brackets the timings (the machine's speed drifts).
  peaks = {name: max(rate, probe_peaks(probe_sizes)[name]) for name, rate in peaks.items()}
  memory, memory_source = peak_memory()
  device = jax.devices()[0]
  # Simulated CPU devices share the host's cores, so the host's peak is the reference; real devices add up.
  peak_scale = devices if device.platform != "cpu" else 1
  flops = analytic_flops(config)
  k, b = config.num_seeds, config.batch_size
  train_images, infer_images = k * b, b
  report = {
      "device_kind": device.device_kind,
      "platform": device.platform,
      "num_devices": devices,
      "host_cpus": os.cpu_count(),
      "jax_version": jax.__version__,
      "python": platform.python_version(),
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # Set by runtime.relaunch_with_malloc_tunables.
      "config": {
          "student": f"ViT-{config.model.vit.size}/{config.model.vit.patch_size}",
          "width": config.model.vit.width, "depth": config.model.vit.depth,
          "teacher": config.model.teacher, "image_size": config.data.image_size,
          "batch_size": b, "num_seeds": k, "mask_ratio": config.model.mask_ratio,
          "compute_dtype": config.model.compute_dtype,
          "conv3x3": layers.conv3x3_form(config.model.conv3x3),
      },
      "warmup": warmup, "steps": steps_timed,
      "train_step_s": timings.train_step_s, "train_step_all_s": timings.train_step_all_s,
      "train_img_per_s": train_images / timings.train_step_s,
      "train_compile_s": timings.train_compile_s,
      "infer_batch_s": timings.infer_batch_s, "infer_batch_all_s": timings.infer_batch_all_s,
      "infer_img_per_s": infer_images / timings.infer_batch_s,
      "infer_compile_s": timings.infer_compile_s,
      "peak_memory_bytes": memory, "peak_memory_source": memory_source,
      "flops_per_image": flops,
      "train_flop_per_s": flops["train"] * train_images / timings.train_step_s,
      "infer_flop_per_s": flops["infer"] * infer_images / timings.infer_batch_s,
      "peak_f32_flop_per_s": peaks["float32"] * peak_scale,
      "peak_bf16_flop_per_s": peaks["bfloat16"] * peak_scale,
  }
  for what in ("train", "infer"):
    report[f"{what}_fraction_of_f32_peak"] = report[f"{what}_flop_per_s"] / report["peak_f32_flop_per_s"]
    report[f"{what}_fraction_of_bf16_peak"] = report[f"{what}_flop_per_s"] / report["peak_bf16_flop_per_s"]
  if compare_torch:
    logging.info("timing the PyTorch MMR (tools/benchmark_torch.py)")
    torch_report = torch_figures(config, warmup, steps_timed, torch_baseline)
    if torch_report is not None:
      report["torch"] = torch_report
      report["train_speedup_vs_torch"] = report["train_img_per_s"] / torch_report["train_img_per_s"]
      report["infer_speedup_vs_torch"] = report["infer_img_per_s"] / torch_report["infer_img_per_s"]
  return report


def format_table(report: dict[str, Any]) -> str:
  c = report["config"]
  gflop = lambda x: f"{x / 1e9:,.1f}"
  lines = [
      f"{c['student']} (width {c['width']}, depth {c['depth']}) + {c['teacher']}, {c['image_size']}², batch "
      f"{c['batch_size']} × {c['num_seeds']} seed(s), {c['compute_dtype']}, conv3x3 {c['conv3x3']}",
      f"{report['num_devices']} × {report['device_kind']} ({report['platform']}, {report['host_cpus']} host CPUs), "
      f"jax {report['jax_version']}, GLIBC_TUNABLES={report['glibc_tunables'] or '(unset)'}",
      f"matmul peak: f32 {gflop(report['peak_f32_flop_per_s'])} GFLOP/s, bf16→f32 "
      f"{gflop(report['peak_bf16_flop_per_s'])} GFLOP/s",
      "",
      f"{'':8}{'img/s':>9}{'s/batch':>9}{'GFLOP/img':>11}{'GFLOP/s':>9}{'% f32 pk':>9}{'% bf16 pk':>10}"
      f"{'compile s':>10}",
  ]
  for what, seconds in (("train", report["train_step_s"]), ("infer", report["infer_batch_s"])):
    lines.append(
        f"{what:8}{report[f'{what}_img_per_s']:9.2f}{seconds:9.3f}{gflop(report['flops_per_image'][what]):>11}"
        f"{gflop(report[f'{what}_flop_per_s']):>9}{100 * report[f'{what}_fraction_of_f32_peak']:9.1f}"
        f"{100 * report[f'{what}_fraction_of_bf16_peak']:10.1f}{report[f'{what}_compile_s']:10.1f}")
  lines.append(f"peak memory: {report['peak_memory_bytes'] / 2 ** 30:.2f} GiB ({report['peak_memory_source']})")
  f = report["flops_per_image"]
  lines.append(f"GFLOP/image: teacher {gflop(f['teacher'])}, encoder {gflop(f['encoder_train'])} (train) / "
               f"{gflop(f['encoder_infer'])} (infer), FPN {gflop(f['fpn'])}, anomaly map {gflop(f['anomaly_map'])}")
  if "torch" in report:
    t = report["torch"]
    lines.append(f"PyTorch {t['torch_version']} ({t['threads']} threads, {t['baseline']} forms): "
                 f"train {t['train_img_per_s']:.2f} img/s, infer {t['infer_img_per_s']:.2f} img/s → "
                 f"JAX/PyTorch: train {report['train_speedup_vs_torch']:.2f}×, "
                 f"infer {report['infer_speedup_vs_torch']:.2f}×")
  return "\n".join(lines)


def define_flags() -> None:
  """Command-line flags, defined only when this module is the program (it is also imported as a library)."""
  config_flags.DEFINE_config_file("config", None, "A run config, e.g. configs/aebad_s.py.", lock_config=False)
  flags.DEFINE_integer("batch", None, "Global batch size (default: the config's batch_size).")
  flags.DEFINE_integer("num_seeds", None, "Seeds trained side by side (default: config.num_seeds).")
  flags.DEFINE_integer("devices", None, "Devices on the mesh's data axis (default: all visible).")
  flags.DEFINE_integer("steps", 3, "Timed calls of each function; the median is reported.")
  flags.DEFINE_integer("warmup", 1, "Untimed calls after compilation.")
  flags.DEFINE_list("probe_sizes", ["2048", "4096"], "Square matmul sizes of the peak probe.")
  flags.DEFINE_string("json", None, "Write the figures to this JSON file.")
  flags.DEFINE_bool("compare_torch", False, "Also time the PyTorch MMR (tools/benchmark_torch.py) in a child process.")
  flags.DEFINE_enum("torch_baseline", "published", ["published", "spec"],
                    "The PyTorch MMR's execution forms: the published code's, or the lean port's.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/aebad_s.py")
  config = f.config
  if f.batch is not None:
    config.batch_size = f.batch
  if f.num_seeds is not None:
    config.num_seeds = f.num_seeds
  try:
    probe_sizes = tuple(int(size) for size in f.probe_sizes)
  except ValueError:
    raise app.UsageError(f"--probe_sizes must list integers, got {','.join(f.probe_sizes)}") from None
  try:
    report = benchmark(config, num_devices=f.devices, warmup=f.warmup, steps_timed=f.steps,
                       probe_sizes=probe_sizes, compare_torch=f.compare_torch, torch_baseline=f.torch_baseline)
  except (config_lib.ConfigError, ValueError) as error:
    raise app.UsageError(str(error)) from error
  print(format_table(report))
  if f.json:
    path = pathlib.Path(f.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
  runtime.relaunch_with_malloc_tunables()
  define_flags()
  app.run(main)
