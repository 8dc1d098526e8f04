"""One prepared check of an accelerator: `python tools/accelerator_check.py` (about 8 minutes on one GPU).

Prints, for the paper configuration (configs/aebad_s.py: ViT-B/16 + WRN50-2, 224², batch 16) in float32 and
bfloat16: training and inference images/s and their fraction of the chip's measured matmul peak; the speed-up of
K = 4 seeds in one program over four one-seed runs in turn; the largest batch whose training step runs; the input
pipeline's training transform per host core, from 4-megapixel originals, times the host's cores; and parity
with the committed PyTorch reference at model.precision highest and default (TF32 on GPUs). Every figure comes
from the project's own commands, run as child processes (`python -m mmr_jax benchmark`, `python -m mmr_jax
benchmark_data --transforms`, `python -m mmr_jax parity`), whose output is kept in --out.

On a CPU, a small configuration runs the same steps in a few minutes (tests/test_benchmark.py runs one):
`--config=configs/synthetic.py --override=--config.model.vit.depth=1 --batch=4 --max_batch=8 --probe_sizes=256`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
PARITY_FILES = ("tests/golden/tiny320_W.npz", "tests/golden/tiny320_R.npz")


def _run(command: list[str], log: pathlib.Path, timeout: float) -> tuple[int, str]:
  """Runs a child (stdout and stderr to `log`); returns (exit code, its output). A timeout counts as failure."""
  start = time.perf_counter()
  try:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    code, output = result.returncode, result.stdout + result.stderr
  except subprocess.TimeoutExpired as error:
    code, output = 124, f"timed out after {timeout:.0f} s\n{error.stdout or ''}"
  log.write_text(f"$ {' '.join(command)}\n({time.perf_counter() - start:.1f} s, exit {code})\n{output}")
  return code, output


def benchmark(args, name: str, *extra: str, batch: int | None = None, steps: int | None = None) -> dict | None:
  out = args.out / f"{name}.json"
  command = [
    sys.executable,
    "-m",
    "mmr_jax",
    "benchmark",
    f"--config={args.config}",
    *args.override,
    f"--probe_sizes={args.probe_sizes}",
    *extra,
    f"--batch={batch or args.batch}",
    f"--steps={steps or args.steps}",
    f"--json={out}",
  ]
  code, _ = _run(command, args.out / f"{name}.log", args.timeout)
  return json.loads(out.read_text()) if code == 0 and out.exists() else None


def largest_batch(args) -> int | None:
  """Doubles the batch from --batch until a training step fails (out of memory) or --max_batch is reached."""
  fits, batch = None, args.batch
  while batch <= args.max_batch:
    if benchmark(args, f"fit_{batch}", "--warmup=0", batch=batch, steps=1) is None:
      break
    fits, batch = batch, batch * 2
  return fits


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/aebad_s.py")
  parser.add_argument("--override", action="append", default=[], help="extra --config.* flags, repeatable")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--max_batch", type=int, default=512)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--probe_sizes", default="4096,8192", help="square matmul sizes of the peak probe")
  parser.add_argument("--timeout", type=float, default=240, help="seconds per child command")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("accelerator_check"))
  args = parser.parse_args()
  args.out.mkdir(parents=True, exist_ok=True)
  lines = []
  for dtype in ("float32", "bfloat16"):
    one = benchmark(args, f"{dtype}_k1", f"--config.model.compute_dtype={dtype}")
    four = benchmark(args, f"{dtype}_k4", f"--config.model.compute_dtype={dtype}", "--config.num_seeds=4")
    if one is None:
      lines.append(f"{dtype}: the benchmark failed (see {args.out}/{dtype}_k1.log)")
      continue
    lines.append(
      f"{dtype} on {one['device_kind']}: train {one['train_img_per_s']:.1f} img/s "
      f"({100 * one['train_fraction_of_' + ('f32' if dtype == 'float32' else 'bf16') + '_peak']:.0f} % of "
      f"peak), inference {one['infer_img_per_s']:.1f} img/s; 4 seeds in one program: "
      + (
        f"train {4 * one['train_step_s'] / four['train_step_s']:.2f}×, inference "
        f"{4 * one['infer_batch_s'] / four['infer_batch_s']:.2f}× as fast as 4 one-seed runs in turn"
        if four
        else "failed"
      )
    )
  fits = largest_batch(args)
  lines.append(
    f"largest training batch that runs (float32, doubling from {args.batch} to at most "
    f"{args.max_batch}): {fits if fits else 'none'}"
  )
  code, output = _run(
    [
      sys.executable,
      "-m",
      "mmr_jax",
      "benchmark_data",
      f"--config={args.config}",
      "--transforms",
      "--megapixels=4",
      "--count=6",
    ],
    args.out / "pipeline.log",
    args.timeout,
  )
  rows = [line for line in output.splitlines() if line.strip().startswith("4 ")]
  if code == 0 and rows:
    per_core = float(rows[0].split("|")[1].split()[0])
    lines.append(
      f"input pipeline, training transform from 4 MP originals: {per_core:.1f} img/s per core, "
      f"{per_core * (os.cpu_count() or 1):.0f} img/s on the host's {os.cpu_count()} cores"
    )
  else:
    lines.append(f"input pipeline: the data benchmark failed (see {args.out}/pipeline.log)")
  for precision in ("highest", "default"):
    code, output = _run(
      [
        sys.executable,
        "-m",
        "mmr_jax",
        "parity",
        f"--weights={PARITY_FILES[0]}",
        f"--reference={PARITY_FILES[1]}",
        f"--precision={precision}",
      ],
      args.out / f"parity_{precision}.log",
      args.timeout,
    )
    summary = next((line for line in reversed(output.splitlines()) if " passed, " in line), "no summary")
    lines.append(f"parity at precision {precision}: {summary} (exit {code})")
  report = "\n".join(lines)
  print(report)
  (args.out / "summary.txt").write_text(report + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
