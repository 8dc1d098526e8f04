"""Throughput of the training and evaluation pipelines, in images per second, on this machine's CPUs.

    python -m mmr_jax benchmark_data --config=configs/synthetic.py
    python -m mmr_jax benchmark_data --config=configs/aebad_s.py --config.data.root=data/synthetic
    python -m mmr_jax benchmark_data --config=configs/aebad_s.py --transforms   # per core, 1 / 4 / 9 MP originals

mmr_jax/data/benchmark.py says what each figure measures.
"""

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = True, False, False, None


def define_flags(values: flags.FlagValues) -> None:
  define = dict(flag_values=values)
  flags.DEFINE_integer("epochs", 3, "Training epochs timed (after a first, warm-up epoch).", **define)
  flags.DEFINE_bool("transforms", False, "Time the per-image transforms per core instead of the pipelines.", **define)
  flags.DEFINE_list("megapixels", ["1", "4", "9"], "With --transforms: sizes of the generated originals.", **define)
  flags.DEFINE_integer("count", 8, "With --transforms: originals per size.", **define)
  flags.DEFINE_integer("max_side", 512, "With --transforms: the longer side the shrunk route keeps.", **define)


def main(call) -> None:
  from mmr_jax import cli
  from mmr_jax.data import benchmark

  args = call.flags
  if args.transforms:
    megapixels = cli.positive_numbers(args.megapixels, "megapixels", float)
    benchmark.transform_rates(call.config, megapixels, args.count, args.max_side)
  else:
    benchmark.run(call.config, args.epochs)
