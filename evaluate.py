"""Evaluates a trained MMR: `python evaluate.py --config=configs/aebad_s.py --workdir=runs/aebad_s`.

Writes WORKDIR/results.json, results.md and report.html (with figures/ and heatmaps/), or into --out=DIR (the
workdir is then only read, so it may be read-only). `--checkpoint` evaluates converted weights instead (a student
trained with the PyTorch code, as .pth/.safetensors/.npz under the published names).
"""

from absl import flags

from mmr_jax import cli

flags.DEFINE_string("workdir", None, "The training run's workdir (results are written there).", required=True)
flags.DEFINE_string("checkpoint", None, "Student weights to evaluate instead of the workdir's last checkpoint.")
flags.DEFINE_string("out", None, "Write results.json, results.md and report.html here instead of the workdir.")
cli.define_flags()
FLAGS = flags.FLAGS


def evaluate(config):
  from mmr_jax import experiment  # after cli's start-up

  if experiment.evaluate(config, FLAGS.workdir, FLAGS.checkpoint, FLAGS.out):
    print(open(f"{FLAGS.out or FLAGS.workdir}/results.md").read())


if __name__ == "__main__":
  cli.launch(__doc__, evaluate)
