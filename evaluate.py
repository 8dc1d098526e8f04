"""Evaluates a trained MMR: `python evaluate.py --config=configs/aebad_s.py --workdir=runs/aebad_s`.

Writes WORKDIR/results.json, results.md and heatmaps/. `--checkpoint` evaluates converted weights instead (a
student trained with the PyTorch code, as .pth/.safetensors/.npz under the published names).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "The training run's workdir (results are written there).", required=True)
flags.DEFINE_string("checkpoint", None, "Student weights to evaluate instead of the workdir's last checkpoint.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (TPU pod slices, multi-host GPU).")
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
  from mmr_jax.data import synthetic
  from mmr_jax.training import trainer

  config = config_lib.validate(FLAGS.config)
  if config.data.synthetic:
    synthetic.ensure_synthetic(config.data.root, seed=config.data.synthetic_seed)
  results = trainer.evaluate(config, FLAGS.workdir, FLAGS.checkpoint)
  if results:
    print(open(f"{FLAGS.workdir}/results.md").read())


if __name__ == "__main__":
  from mmr_jax import runtime
  runtime.relaunch_with_malloc_tunables()
  app.run(main)
