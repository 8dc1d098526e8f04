"""Trains MMR, then evaluates it: `python train.py --config=configs/aebad_s.py --workdir=runs/aebad_s`.

Resumes from the workdir's last checkpoint when there is one, so rerunning a killed command finishes the run.
Any config value can be overridden, e.g. `--config.num_seeds=5 --config.data.root=/data`.
"""

from absl import flags

from mmr_jax import cli

flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results go.", required=True)
cli.define_flags()
FLAGS = flags.FLAGS


def train(config):
  from mmr_jax import experiment  # after cli's start-up

  if experiment.train(config, FLAGS.workdir):
    print(open(f"{FLAGS.workdir}/results.md").read())


if __name__ == "__main__":
  cli.launch(__doc__, train)
