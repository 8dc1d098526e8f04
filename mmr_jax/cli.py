"""What the entry points share (train.py, evaluate.py, predict.py): their common flags, and the start-up every
one of them goes through.

    if __name__ == "__main__":
      cli.launch(__doc__, body)   # body(config or None) does the entry point's work

`launch` answers --help before anything is imported, relaunches with the host allocator settings (runtime.py),
then, inside absl: logging at WARNING, `jax.distributed.initialize()` under --multihost, the compilation cache, the
config validated before anything is built, and a user error printed as one line with its exit code (errors.py).
Nothing here imports JAX at module level, so that --help and the relaunch stay instant.
"""

from typing import Callable

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mmr_jax import runtime

FLAGS = flags.FLAGS


def define_flags(*, config: bool = True, multihost: bool = True) -> None:
  """--verbose always; --config (a config file) and --multihost where the entry point takes them."""
  flags.DEFINE_bool("verbose", False, "Show the traceback of config, data, weights and workdir errors too.")
  if multihost:
    flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (TPU pod slices, multi-host GPU).")
  if config:
    config_flags.DEFINE_config_file("config", None, "A config file, e.g. configs/aebad_s.py.", lock_config=True)


def launch(doc: str, body: Callable) -> None:
  """Runs an entry point: `body(config)` with the validated --config (None for entry points without one)."""
  runtime.exit_on_help(doc, shared_flags_module=__name__)
  runtime.relaunch_with_malloc_tunables()
  app.run(lambda argv: _main(argv, body))


def _main(argv: list[str], body: Callable) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {' '.join(argv[1:])!r}; flags take the form --name=value")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it reads and writes at INFO.
  import jax  # after the relaunch: see the module docstring

  if "multihost" in FLAGS and FLAGS.multihost:
    jax.distributed.initialize()
  runtime.enable_compilation_cache()
  from mmr_jax import config as config_lib
  from mmr_jax import errors

  def run() -> None:
    # Before TensorFlow is imported or anything is built: a bad value costs nothing.
    if "config" in FLAGS and FLAGS.config is None:
      raise errors.UserError("--config is required: a config file such as --config=configs/synthetic.py")
    config = config_lib.validate(FLAGS.config) if "config" in FLAGS else None
    if config is not None and config.data.synthetic:
      from mmr_jax.data import synthetic

      synthetic.ensure_synthetic(config.data.root, seed=config.data.synthetic_seed)
    body(config)

  errors.exit_on_user_error(run, FLAGS.verbose)
