"""Evaluates a trained MMR: `python evaluate.py --config=configs/aebad_s.py --workdir=runs/aebad_s`.

Writes WORKDIR/results.json, results.md and report.html (with figures/ and heatmaps/), or into --out=DIR (the
workdir is then only read, so it may be read-only). `--checkpoint` evaluates converted weights instead (a student trained with the PyTorch code,
as .pth/.safetensors/.npz under the published names).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "The training run's workdir (results are written there).", required=True)
flags.DEFINE_string("checkpoint", None, "Student weights to evaluate instead of the workdir's last checkpoint.")
flags.DEFINE_string("out", None, "Write results.json, results.md and report.html here instead of the workdir.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (TPU pod slices, multi-host GPU).")
flags.DEFINE_bool("verbose", False, "Show the traceback of config, data, weights and workdir errors too.")
config_flags.DEFINE_config_file("config", None, "A config file, e.g. configs/aebad_s.py.", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it reads at INFO.
  import jax
  if FLAGS.multihost:
    jax.distributed.initialize()
  from mmr_jax import runtime
  runtime.enable_compilation_cache()
  from mmr_jax import config as config_lib
  from mmr_jax import errors

  def run():
    config = config_lib.validate(FLAGS.config)  # Before TensorFlow is imported or anything is built.
    from mmr_jax.data import synthetic
    from mmr_jax.training import trainer
    if config.data.synthetic:
      synthetic.ensure_synthetic(config.data.root, seed=config.data.synthetic_seed)
    if trainer.evaluate(config, FLAGS.workdir, FLAGS.checkpoint, FLAGS.out):
      print(open(f"{FLAGS.out or FLAGS.workdir}/results.md").read())

  errors.exit_on_user_error(run, FLAGS.verbose)


if __name__ == "__main__":
  from mmr_jax import runtime
  runtime.exit_on_help(__doc__)
  runtime.relaunch_with_malloc_tunables()
  app.run(main)
