"""`python -m mmr_jax.data.synthetic --out data/synthetic --seed 0 [--size tiny|small|large]`: writes the dataset."""

import time

from absl import app
from absl import flags

from mmr_jax.data import synthetic


def main(argv) -> None:
  del argv
  start = time.perf_counter()
  counts = synthetic.generate(
    flags.FLAGS.out, seed=flags.FLAGS.seed, size=flags.FLAGS.size, workers=flags.FLAGS.workers
  )
  elapsed = time.perf_counter() - start
  for key, value in sorted(counts.items()):
    print(f"{key:28s} {value:6d}")
  print(f"wrote {flags.FLAGS.out}/AeBAD_S and {flags.FLAGS.out}/AeBAD_V in {elapsed:.1f} s")


if __name__ == "__main__":
  flags.DEFINE_string("out", None, "Folder to write AeBAD_S/ and AeBAD_V/ into.", required=True)
  flags.DEFINE_integer("seed", 0, "Seed; the same seed writes the same files.")
  flags.DEFINE_enum("size", "small", list(synthetic.SIZES), "How much to generate.")
  flags.DEFINE_integer("workers", 0, "Processes (0: one per CPU core).")
  app.run(main)
