"""Speed of a run's compiled functions, against this device's own matrix-multiply peak.

    python -m mmr_jax benchmark --config=configs/aebad_s.py --batch=16 --steps=5 --json=bench.json
    python -m mmr_jax benchmark --config=configs/aebad_s.py --config.model.compute_dtype=bfloat16
    python -m mmr_jax benchmark --config=configs/aebad_s.py --compare_torch   # + tools/benchmark_torch.py
    python -m mmr_jax benchmark --config=configs/aebad_s.py --config.num_seeds=4   # K seeds in one program

Times exactly what a run executes, built as a run builds it (`experiment.Run`): the teacher features plus the
training step (student forward/backward, Eq. 1, AdamW) on K seeds, and inference (teacher, student at mask ratio
0, Eq. 2 map with its smoothing, image score) as `scoring.Scorer` runs it for evaluation. Batches are
synthetic and already on the device; each figure is the median over `--steps` timed calls after `--warmup`.

FLOPs are counted analytically from the config (matmuls and convolutions, a multiply-add = 2 FLOPs); a training
image costs the teacher's forward plus 3× the student's forward (its backward counted as 2× the forward). The
fraction of peak divides the achieved FLOP/s by the best large-matmul rate measured in the same process, in
float32 and in bfloat16 with float32 accumulation. Imports nothing from `mmr_jax.data` (TensorFlow-free).
"""

from __future__ import annotations

import os
import platform
from typing import Any

from absl import logging
import jax
import ml_collections

from mmr_jax import config as config_lib
from mmr_jax import runtime
from mmr_jax.benchmark import flops
from mmr_jax.benchmark import timing
from mmr_jax.training import sharding


def benchmark(
  config: ml_collections.ConfigDict,
  *,
  num_devices: int | None = None,
  warmup: int = 1,
  steps_timed: int = 3,
  probe_sizes: tuple[int, ...] = (2048, 4096),
  compare_torch: bool = False,
  torch_baseline: str = "published",
) -> dict[str, Any]:
  """All figures of one benchmark as a flat JSON-ready dict (see the module docstring)."""
  config_lib.validate(config)
  mesh = sharding.make_mesh(num_devices)
  sharding.check_batch_divisible(config.batch_size, mesh, "batch_size")
  devices = mesh.devices.size
  peaks = timing.probe_peaks(probe_sizes, mesh)
  timings = timing.time_run(config, mesh, warmup, steps_timed)
  # Probe again: the larger of the two brackets the timings (the machine's speed drifts).
  peaks = {name: max(rate, timing.probe_peaks(probe_sizes, mesh)[name]) for name, rate in peaks.items()}
  memory, memory_source = timing.peak_memory()
  device = jax.devices()[0]
  # Simulated CPU devices share the host's cores, so the host's peak is the reference; real devices add up.
  peak_scale = devices if device.platform != "cpu" else 1
  per_image = flops.analytic_flops(config)
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
      "width": config.model.vit.width,
      "depth": config.model.vit.depth,
      "teacher": config.model.teacher,
      "image_size": config.data.image_size,
      "batch_size": b,
      "num_seeds": k,
      "mask_ratio": config.model.mask_ratio,
      "compute_dtype": config.model.compute_dtype,
      "conv3x3": runtime.Platform.of(device).conv3x3_form(config.model.conv3x3, config.model.compute_dtype),
    },
    "warmup": warmup,
    "steps": steps_timed,
    "train_step_s": timings.train_step_s,
    "train_step_all_s": timings.train_step_all_s,
    "train_img_per_s": train_images / timings.train_step_s,
    "train_compile_s": timings.train_compile_s,
    "infer_batch_s": timings.infer_batch_s,
    "infer_batch_all_s": timings.infer_batch_all_s,
    "infer_img_per_s": infer_images / timings.infer_batch_s,
    "infer_compile_s": timings.infer_compile_s,
    "peak_memory_bytes": memory,
    "peak_memory_source": memory_source,
    "flops_per_image": per_image,
    "train_flop_per_s": per_image["train"] * train_images / timings.train_step_s,
    "infer_flop_per_s": per_image["infer"] * infer_images / timings.infer_batch_s,
    "peak_f32_flop_per_s": peaks["float32"] * peak_scale,
    "peak_bf16_flop_per_s": peaks["bfloat16"] * peak_scale,
  }
  for what in ("train", "infer"):
    report[f"{what}_fraction_of_f32_peak"] = report[f"{what}_flop_per_s"] / report["peak_f32_flop_per_s"]
    report[f"{what}_fraction_of_bf16_peak"] = report[f"{what}_flop_per_s"] / report["peak_bf16_flop_per_s"]
  if compare_torch:
    logging.info("timing the PyTorch MMR (tools/benchmark_torch.py)")
    torch_report = timing.torch_figures(config, warmup, steps_timed, torch_baseline)
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
    f"{'':8}{'img/s':>9}{'s/batch':>9}{'GFLOP/img':>11}{'GFLOP/s':>9}{'% f32 pk':>9}{'% bf16 pk':>10}{'compile s':>10}",
  ]
  for what, seconds in (("train", report["train_step_s"]), ("infer", report["infer_batch_s"])):
    lines.append(
      f"{what:8}{report[f'{what}_img_per_s']:9.2f}{seconds:9.3f}{gflop(report['flops_per_image'][what]):>11}"
      f"{gflop(report[f'{what}_flop_per_s']):>9}{100 * report[f'{what}_fraction_of_f32_peak']:9.1f}"
      f"{100 * report[f'{what}_fraction_of_bf16_peak']:10.1f}{report[f'{what}_compile_s']:10.1f}"
    )
  lines.append(f"peak memory: {report['peak_memory_bytes'] / 2**30:.2f} GiB ({report['peak_memory_source']})")
  f = report["flops_per_image"]
  lines.append(
    f"GFLOP/image: teacher {gflop(f['teacher'])}, encoder {gflop(f['encoder_train'])} (train) / "
    f"{gflop(f['encoder_infer'])} (infer), FPN {gflop(f['fpn'])}, anomaly map {gflop(f['anomaly_map'])}"
  )
  if "torch" in report:
    t = report["torch"]
    lines.append(
      f"PyTorch {t['torch_version']} ({t['threads']} threads, {t['baseline']} forms): "
      f"train {t['train_img_per_s']:.2f} img/s, infer {t['infer_img_per_s']:.2f} img/s → "
      f"JAX/PyTorch: train {report['train_speedup_vs_torch']:.2f}×, "
      f"infer {report['infer_speedup_vs_torch']:.2f}×"
    )
  return "\n".join(lines)
