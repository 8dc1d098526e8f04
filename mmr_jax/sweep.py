"""Scaling sweep: benchmark throughput over batch sizes and device counts; writes a CSV and a PNG plot.

    python -m mmr_jax sweep --config=configs/synthetic.py --batch_sizes=8,16,32 --devices=1,2,4,8 --out=runs/sweep
    python -m mmr_jax sweep --config=configs/scaling/vit_s.py --batch_sizes=16,32 --devices=1 --out=runs/vit_s

Each point is one `python -m mmr_jax benchmark` child process (so every point has its own compile, memory peak
and matmul-peak probe), with `--config.*` overrides passed on. On a CPU host the devices are simulated
(XLA_FLAGS=--xla_force_host_platform_device_count=max(--devices), set for the children before JAX starts); they
share the host's cores, so more of them measure the cost of data parallelism, not a speed-up. Batch sizes that
a device count does not divide are skipped. Every row carries the FLOPs and the fraction of the f32 peak.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys


COLUMNS = (
  "devices",
  "batch_size",
  "num_seeds",
  "student",
  "teacher",
  "image_size",
  "compute_dtype",
  "train_img_per_s",
  "infer_img_per_s",
  "train_step_s",
  "infer_batch_s",
  "train_gflop_per_image",
  "infer_gflop_per_image",
  "train_gflop_per_s",
  "infer_gflop_per_s",
  "peak_f32_gflop_per_s",
  "train_fraction_of_f32_peak",
  "infer_fraction_of_f32_peak",
  "train_compile_s",
  "infer_compile_s",
  "peak_memory_gib",
  "device_kind",
  "platform",
)


def config_arguments(argv: list[str]) -> list[str]:
  """The `--config=FILE` and `--config.key=value` arguments of a command line, to pass on to the children."""
  passed = []
  for i, arg in enumerate(argv):
    if arg == "--config" or (arg.startswith("--config.") and "=" not in arg):
      if i + 1 < len(argv):
        passed.append(f"{arg}={argv[i + 1]}")
    elif arg.startswith("--config=") or arg.startswith("--config."):
      passed.append(arg)
  return passed


def point_row(report: dict) -> dict:
  c, f = report["config"], report["flops_per_image"]
  return {
    "devices": report["num_devices"],
    "batch_size": c["batch_size"],
    "num_seeds": c["num_seeds"],
    "student": c["student"],
    "teacher": c["teacher"],
    "image_size": c["image_size"],
    "compute_dtype": c["compute_dtype"],
    "train_img_per_s": report["train_img_per_s"],
    "infer_img_per_s": report["infer_img_per_s"],
    "train_step_s": report["train_step_s"],
    "infer_batch_s": report["infer_batch_s"],
    "train_gflop_per_image": f["train"] / 1e9,
    "infer_gflop_per_image": f["infer"] / 1e9,
    "train_gflop_per_s": report["train_flop_per_s"] / 1e9,
    "infer_gflop_per_s": report["infer_flop_per_s"] / 1e9,
    "peak_f32_gflop_per_s": report["peak_f32_flop_per_s"] / 1e9,
    "train_fraction_of_f32_peak": report["train_fraction_of_f32_peak"],
    "infer_fraction_of_f32_peak": report["infer_fraction_of_f32_peak"],
    "train_compile_s": report["train_compile_s"],
    "infer_compile_s": report["infer_compile_s"],
    "peak_memory_gib": report["peak_memory_bytes"] / 2**30,
    "device_kind": report["device_kind"],
    "platform": report["platform"],
  }


def run_point(
  config_args: list[str],
  devices: int,
  batch: int,
  max_devices: int,
  out: pathlib.Path,
  *,
  steps: int,
  warmup: int,
  probe_sizes: list[str],
) -> dict:
  """One benchmark child process; returns its JSON report. Raises RuntimeError with the child's error."""
  path = out / "points" / f"devices{devices}_batch{batch}.json"
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={max_devices}".strip()
  command = [
    sys.executable,
    "-m",
    "mmr_jax",
    "benchmark",
    *config_args,
    f"--batch={batch}",
    f"--devices={devices}",
    f"--steps={steps}",
    f"--warmup={warmup}",
    f"--probe_sizes={','.join(probe_sizes)}",
    f"--json={path}",
  ]
  result = subprocess.run(command, capture_output=True, text=True, env=env)
  if result.returncode != 0:
    raise RuntimeError(
      f"the benchmark of {devices} device(s), batch {batch} failed:\n{' '.join(command)}\n{result.stderr[-3000:]}"
    )
  return json.loads(path.read_text())


def write_csv(rows: list[dict], path: pathlib.Path) -> None:
  with path.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def plot(rows: list[dict], path: pathlib.Path, title: str) -> None:
  """Throughput (training and inference) against batch size, one line per device count, and against devices."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  fig, axes = plt.subplots(2, 2, figsize=(11, 8), squeeze=False)
  for r, what in enumerate(("train", "infer")):
    for c, (x_key, line_key) in enumerate((("batch_size", "devices"), ("devices", "batch_size"))):
      ax = axes[r][c]
      for line in sorted({row[line_key] for row in rows}):
        points = sorted(
          (row[x_key], row[f"{what}_img_per_s"], row[f"{what}_fraction_of_f32_peak"])
          for row in rows
          if row[line_key] == line
        )
        xs, ys, fractions = zip(*points)
        ax.plot(xs, ys, marker="o", label=f"{line_key.replace('_', ' ')} {line}")
        for x, y, fraction in points:
          ax.annotate(f"{100 * fraction:.0f}%", (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
      ax.set_xscale("log", base=2)
      ax.set_xlabel(x_key.replace("_", " "))
      ax.set_ylabel(f"{what} images/s")
      ax.set_title(f"{what}: images/s vs {x_key.replace('_', ' ')} (labels: % of f32 peak)", fontsize=9)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def sweep(
  config_args: list[str],
  batch_sizes: list[int],
  device_counts: list[int],
  out: pathlib.Path,
  *,
  steps: int = 3,
  warmup: int = 1,
  probe_sizes: list[str] = ("1024", "2048"),
) -> list[dict]:
  """Runs every (devices, batch) point that divides; writes sweep.csv and sweep.png under `out`."""
  out.mkdir(parents=True, exist_ok=True)
  rows = []
  for devices in device_counts:
    for batch in batch_sizes:
      if batch % devices:
        print(f"skipping {devices} device(s) × batch {batch}: the batch does not split evenly")
        continue
      report = run_point(
        config_args, devices, batch, max(device_counts), out, steps=steps, warmup=warmup, probe_sizes=list(probe_sizes)
      )
      rows.append(point_row(report))
      print(
        f"{devices} device(s), batch {batch:4d}: train {report['train_img_per_s']:9.2f} img/s "
        f"({100 * report['train_fraction_of_f32_peak']:5.1f}% of f32 peak), infer "
        f"{report['infer_img_per_s']:9.2f} img/s ({100 * report['infer_fraction_of_f32_peak']:5.1f}%)",
        flush=True,
      )
  if not rows:
    raise ValueError("no point of the sweep has a batch size divisible by its device count")
  write_csv(rows, out / "sweep.csv")
  first = rows[0]
  plot(
    rows,
    out / "sweep.png",
    f"{first['student']} + {first['teacher']}, {first['image_size']}², "
    f"{first['compute_dtype']}, {first['device_kind']}",
  )
  return rows
