"""Scores new images with a trained MMR: `python predict.py --workdir=runs/synthetic --images='photos/*.png'`.

The command `predict` of `python -m mmr_jax` (mmr_jax/commands/predict.py; `--help` says more).
"""

from mmr_jax import cli

if __name__ == "__main__":
  cli.main("predict")
