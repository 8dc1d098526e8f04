"""Trains MMR, then evaluates it: `python train.py --config=configs/aebad_s.py --workdir=runs/aebad_s`.

The command `train` of `python -m mmr_jax` (mmr_jax/commands/train.py; `--help` says more).
"""

from mmr_jax import cli

if __name__ == "__main__":
  cli.main("train")
