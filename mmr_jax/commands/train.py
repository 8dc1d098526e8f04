"""Trains MMR, then evaluates it: `python train.py --config=configs/aebad_s.py --workdir=runs/aebad_s`.

Resumes from the workdir's last checkpoint when there is one, so rerunning a killed command finishes the run.
Any config value can be overridden, e.g. `--config.num_seeds=5 --config.data.root=/data`.
"""

import pathlib

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = True, True, True, None


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go.", required=True, flag_values=values)


def main(call) -> None:
  from mmr_jax import experiment
  from mmr_jax import files

  if experiment.train(call.config, call.flags.workdir):
    print((pathlib.Path(call.flags.workdir) / files.RESULTS_TABLE).read_text())
