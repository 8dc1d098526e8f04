"""Speed of a config's compiled functions against this device's own matrix-multiply peak.

    python -m mmr_jax benchmark --config=configs/aebad_s.py --batch=16 --steps=5 --json=bench.json
    python -m mmr_jax benchmark --config=configs/aebad_s.py --config.model.compute_dtype=bfloat16
    python -m mmr_jax benchmark --config=configs/aebad_s.py --compare_torch   # + tools/benchmark_torch.py
    python -m mmr_jax benchmark --config=configs/aebad_s.py --config.num_seeds=4   # K seeds in one program

mmr_jax/benchmark/__init__.py says what is timed and how FLOPs and the peak are counted.
"""

import json
import pathlib

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = True, True, False, None


def define_flags(values: flags.FlagValues) -> None:
  define = dict(flag_values=values)
  flags.DEFINE_integer("batch", None, "Global batch size (default: the config's batch_size).", **define)
  flags.DEFINE_integer("num_seeds", None, "Seeds trained side by side (default: config.num_seeds).", **define)
  flags.DEFINE_integer("devices", None, "Devices on the mesh's data axis (default: all visible).", **define)
  flags.DEFINE_integer("steps", 3, "Timed calls of each function; the median is reported.", **define)
  flags.DEFINE_integer("warmup", 1, "Untimed calls after compilation.", **define)
  flags.DEFINE_list("probe_sizes", ["2048", "4096"], "Square matmul sizes of the peak probe.", **define)
  flags.DEFINE_string("json", None, "Write the figures to this JSON file.", **define)
  flags.DEFINE_bool(
    "compare_torch", False, "Also time the PyTorch MMR (tools/benchmark_torch.py) in a child process.", **define
  )
  flags.DEFINE_enum(
    "torch_baseline",
    "published",
    ["published", "spec"],
    "The PyTorch MMR's execution forms: the published code's, or the lean port's.",
    **define,
  )


def main(call) -> None:
  from mmr_jax import benchmark
  from mmr_jax import cli
  from mmr_jax import files

  args, config = call.flags, call.config
  with config.unlocked():
    if args.batch is not None:
      config.batch_size = args.batch
    if args.num_seeds is not None:
      config.num_seeds = args.num_seeds
  report = benchmark.benchmark(
    config,
    num_devices=args.devices,
    warmup=args.warmup,
    steps_timed=args.steps,
    probe_sizes=tuple(cli.positive_numbers(args.probe_sizes, "probe_sizes")),
    compare_torch=args.compare_torch,
    torch_baseline=args.torch_baseline,
  )
  print(benchmark.format_table(report))
  if args.json:
    print(f"wrote {files.write_atomic(pathlib.Path(args.json), json.dumps(report, indent=2) + chr(10))}")
