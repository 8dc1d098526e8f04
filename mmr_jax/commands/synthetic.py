"""Writes the embedded AeBAD-like dataset: `python -m mmr_jax synthetic --out=data/synthetic [--seed=0] [--size=small]`.

The same seed writes the same files (mmr_jax/data/synthetic says what is generated); configs/synthetic.py
generates it on first use by itself.
"""

import time

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = False, False, False, None


def define_flags(values: flags.FlagValues) -> None:
  define = dict(flag_values=values)
  flags.DEFINE_string("out", None, "Folder to write AeBAD_S/ and AeBAD_V/ into.", required=True, **define)
  flags.DEFINE_integer("seed", 0, "Seed; the same seed writes the same files.", **define)
  flags.DEFINE_string("size", "small", "How much to generate: tiny, small (the demo's) or large.", **define)
  flags.DEFINE_integer("workers", 0, "Processes (0: one per CPU core).", **define)


def main(call) -> None:
  from mmr_jax import cli
  from mmr_jax.data import synthetic

  args = call.flags
  if args.size not in synthetic.SIZES:
    raise cli.UsageError(f"--size must be one of {', '.join(synthetic.SIZES)}, got {args.size!r}")
  start = time.perf_counter()
  counts = synthetic.generate(args.out, seed=args.seed, size=args.size, workers=args.workers)
  for key, value in sorted(counts.items()):
    print(f"{key:28s} {value:6d}")
  print(f"wrote {args.out}/AeBAD_S and {args.out}/AeBAD_V in {time.perf_counter() - start:.1f} s")
