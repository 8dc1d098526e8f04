"""Checks a dataset on disk before a run: counts, decodability, masks. Exits 0 only if a run can use it.

    python -m mmr_jax check_data --config=configs/aebad_s.py --config.data.root=DIR
    python -m mmr_jax check_data --config=configs/aebad_v.py --config.data.root=DIR
    python -m mmr_jax check_data --config=configs/mvtec.py --config.data.root=DIR

Prints the number of images per split, subset and label, the non-image files skipped, and every problem with its
path (mmr_jax/data/check.py says what is checked).
"""

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = True, False, False, None


def define_flags(values: flags.FlagValues) -> None:
  del values  # --config only.


def main(call) -> int:
  from mmr_jax.data import check

  return 0 if check.run_check(call.config) else 1
