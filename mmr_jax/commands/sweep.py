"""Throughput over batch sizes and device counts; writes a CSV and a PNG plot.

    python -m mmr_jax sweep --config=configs/synthetic.py --batch_sizes=8,16,32 --devices=1,2,4,8 --out=runs/sweep
    python -m mmr_jax sweep --config=configs/scaling/vit_s.py --batch_sizes=16,32 --devices=1 --out=runs/vit_s

Each point is one `python -m mmr_jax benchmark` child process with the `--config.*` overrides passed on
(mmr_jax/sweep.py says more).
"""

import pathlib

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = True, False, False, None


def define_flags(values: flags.FlagValues) -> None:
  define = dict(flag_values=values)
  flags.DEFINE_list("batch_sizes", ["8", "16", "32"], "Global batch sizes.", **define)
  flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Device counts of the data axis.", **define)
  flags.DEFINE_string("out", None, "Output folder: sweep.csv, sweep.png and one JSON per point.", **define)
  flags.DEFINE_integer("steps", 3, "Timed calls per point (median reported).", **define)
  flags.DEFINE_integer("warmup", 1, "Untimed calls per point after compilation.", **define)
  flags.DEFINE_list("probe_sizes", ["1024", "2048"], "Square matmul sizes of each point's peak probe.", **define)
  flags.mark_flag_as_required("out", flag_values=values)


def main(call) -> None:
  from mmr_jax import cli
  from mmr_jax import sweep

  args = call.flags
  out = pathlib.Path(args.out)
  sweep.sweep(
    sweep.config_arguments(call.argv),
    cli.positive_numbers(args.batch_sizes, "batch_sizes"),
    cli.positive_numbers(args.devices, "devices"),
    out,
    steps=args.steps,
    warmup=args.warmup,
    probe_sizes=[str(size) for size in cli.positive_numbers(args.probe_sizes, "probe_sizes")],
  )
  print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
