"""`python -m mmr_jax.benchmark --config=...`: the command line (the package docstring says what it measures)."""

from __future__ import annotations

import json
import pathlib

from absl import app
from absl import flags
from ml_collections import config_flags

from mmr_jax import benchmark
from mmr_jax import config as config_lib
from mmr_jax import runtime


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
  flags.DEFINE_enum(
    "torch_baseline",
    "published",
    ["published", "spec"],
    "The PyTorch MMR's execution forms: the published code's, or the lean port's.",
  )


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
    report = benchmark.benchmark(
      config,
      num_devices=f.devices,
      warmup=f.warmup,
      steps_timed=f.steps,
      probe_sizes=probe_sizes,
      compare_torch=f.compare_torch,
      torch_baseline=f.torch_baseline,
    )
  except (config_lib.ConfigError, ValueError) as error:
    raise app.UsageError(str(error)) from error
  print(benchmark.format_table(report))
  if f.json:
    path = pathlib.Path(f.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
  runtime.relaunch_with_malloc_tunables()
  define_flags()
  app.run(main)
