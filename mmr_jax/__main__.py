"""`python -m mmr_jax COMMAND [--flag=value ...]`: every command of the project (mmr_jax/cli.py)."""

from mmr_jax import cli

if __name__ == "__main__":
  cli.main()
