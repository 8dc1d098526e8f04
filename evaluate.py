"""Evaluates a trained MMR: `python evaluate.py --config=configs/aebad_s.py --workdir=runs/aebad_s`.

The command `evaluate` of `python -m mmr_jax` (mmr_jax/commands/evaluate.py; `--help` says more).
"""

from mmr_jax import cli

if __name__ == "__main__":
  cli.main("evaluate")
