"""The one way into every command: `python -m mmr_jax COMMAND [--flag=value ...]` (`python -m mmr_jax --help` lists
them); train.py, evaluate.py and predict.py are the commands train, evaluate and predict.

Every command starts the same way (`main`):
1. --help is answered before anything is imported: the command's docstring and its flags;
2. a command that computes with JAX relaunches itself once with the host allocator settings (runtime.py);
3. its flags are parsed (into a FlagValues of the call's own, so `run` can be called from Python too);
4. logging at WARNING, `jax.distributed.initialize()` under --multihost, the compilation cache;
5. --config is loaded and validated before anything is built (the embedded dataset generated where it asks);
6. a user error (errors.UserError: config, data, weights, workdir) prints as one line and exits with its code
   (2, 3, 4, 6); a bad flag exits 2 the same way; --verbose shows the traceback. Anything else is a bug and keeps
   its traceback.

A command is a module of mmr_jax/commands/ with a docstring (its help), `define_flags(values)`, `main(call) -> int |
None`, and the attributes CONFIG (takes a required --config), COMPUTES (computes with JAX: the allocator relaunch),
MULTIHOST (takes --multihost) and POSITIONAL (a name for positional arguments, or None). Nothing here imports JAX
at module level, so that --help and the relaunch stay instant.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
from typing import Any

from absl import flags
from absl import logging

from mmr_jax import errors
from mmr_jax import files
from mmr_jax import runtime

# Command name → one line for `python -m mmr_jax --help`. The module is mmr_jax/commands/<name>.py.
COMMANDS = {
  "train": "train a config into a workdir and evaluate it (resumes after a kill)",
  "evaluate": "evaluate a trained workdir again (or converted weights, or the untrained model)",
  "predict": "score image files with a trained workdir: scores, decisions, heatmaps",
  "export": "export a trained model for use without this project (jax.export, SavedModel)",
  "study": "a scaling study: a grid of runs, detection against compute, over seeds",
  "benchmark": "time a config's compiled functions against the device's matmul peak",
  "sweep": "benchmark throughput over batch sizes and device counts",
  "parity": "check equality with a PyTorch MMR on reference files",
  "fetch_weights": "fetch, checksum and convert pretrained weights",
  "check_data": "check a dataset download against a config's layout",
  "benchmark_data": "time the input pipelines and the per-image transforms",
  "synthetic": "write the embedded AeBAD-like dataset",
}
HELP_FLAGS = ("-h", "--help", "-?", "--helpshort", "--helpfull")


@dataclasses.dataclass
class Call:
  """What a command's `main` receives."""

  name: str
  flags: flags.FlagValues
  config: Any  # The validated ml_collections.ConfigDict, or None for commands without --config.
  argv: list[str]  # The command's own arguments, as given.
  positional: list[str]


class UsageError(errors.UserError):
  """A command line that cannot be parsed: unknown flag, bad value, missing argument."""

  exit_code = 2


def positive_numbers(values: list[str], name: str, kind: type = int) -> list:
  """A list flag's values as positive numbers of `kind`, or a UsageError naming the flag."""
  try:
    numbers = [kind(value) for value in values]
  except ValueError:
    raise UsageError(f"--{name} must be a comma-separated list of numbers, got {','.join(values)}") from None
  if not numbers or min(numbers) <= 0:
    raise UsageError(f"--{name} must list positive numbers, got {','.join(values)}")
  return numbers


def load(name: str):
  if name not in COMMANDS:
    raise UsageError(f"unknown command {name!r}; the commands are: {', '.join(COMMANDS)}")
  return importlib.import_module(f"mmr_jax.commands.{name}")


def _flag_values(command, argv: list[str] | None = None) -> flags.FlagValues:
  """The command's flags, in a FlagValues of their own; `argv` (program name first) is what --config.KEY overrides
  are read from (ml_collections reads sys.argv otherwise)."""
  values = flags.FlagValues()
  flags.DEFINE_bool(
    "verbose", False, "Show the traceback of a config, data, weights or workdir error.", flag_values=values
  )
  if command.MULTIHOST:
    flags.DEFINE_bool(
      "multihost",
      False,
      "Call jax.distributed.initialize() first (TPU pod slices, multi-host GPU).",
      flag_values=values,
    )
  if command.CONFIG:
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
      "config", None, "A config file, e.g. configs/synthetic.py.", flag_values=values, lock_config=True, sys_argv=argv
    )
  command.define_flags(values)
  return values


def usage(name: str | None = None) -> str:
  """`python -m mmr_jax --help`, or one command's docstring and flags."""
  if name is None:
    width = max(map(len, COMMANDS))
    lines = [f"  {n:{width}}  {summary}" for n, summary in COMMANDS.items()]
    return (
      "python -m mmr_jax COMMAND [--flag=value ...]\n\nCommands:\n"
      + "\n".join(lines)
      + "\n\n`python -m mmr_jax COMMAND --help` says more."
    )
  command = load(name)
  return command.__doc__.strip() + "\n\nFlags:\n" + runtime.flags_help(_flag_values(command))


def run(argv: list[str]) -> int:
  """Runs `COMMAND --flags...` in this process (steps 3–6 of the module docstring); returns the exit code."""
  verbose = "--verbose" in argv
  try:
    return _run(argv)
  except errors.UserError as error:
    if verbose:
      raise
    print(f"error: {error}", file=sys.stderr)
    return error.exit_code
  except KeyboardInterrupt:  # Ctrl-C: what was saved (checkpoints, whole files) is kept, as after any stop.
    print("\ninterrupted: rerun the same command to go on from what is saved", file=sys.stderr)
    return 130
  except OSError as error:
    if error.errno not in files.OS_PROBLEMS or verbose:
      raise
    # A full disk or an unwritable folder met mid-run: what was saved (checkpoints, files written whole) stays.
    print(
      f"error: {files.describe_os_error(error)}. Nothing saved before is lost: make room (or fix the folder) and "
      f"rerun the same command, which goes on from what is saved",
      file=sys.stderr,
    )
    return errors.RunError.exit_code


def _run(argv: list[str]) -> int:
  if not argv or argv[0].startswith("-"):
    raise UsageError(f"name a command first: {', '.join(COMMANDS)} (python -m mmr_jax --help)")
  name, rest = argv[0], argv[1:]
  command = load(name)
  argv = [f"python -m mmr_jax {name}", *rest]
  values = _flag_values(command, argv)
  try:
    positional = values(argv)[1:]
  except flags.Error as error:
    raise UsageError(f"{error} (python -m mmr_jax {name} --help lists the flags)") from None
  except Exception as error:  # A --config.KEY the config lacks, or the config file's own failure (it is code).
    if not command.CONFIG:
      raise
    raise _config_error(rest, error) from None
  if positional and not command.POSITIONAL:
    raise UsageError(f"unexpected arguments {' '.join(positional)!r}; flags take the form --name=value")
  flags.FLAGS.mark_as_parsed()  # absl's logging asks whether the global flags are parsed; ours are our own.
  logging.use_absl_handler()
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it reads and writes at INFO.
  config = None
  if command.COMPUTES or command.MULTIHOST:
    import jax  # after the relaunch: see the module docstring

    if command.MULTIHOST and values.multihost:
      jax.distributed.initialize()
    runtime.enable_compilation_cache()
  if command.CONFIG:
    config = _config(values)
  status = command.main(Call(name, values, config, rest, positional))
  return 0 if status is None else int(status)


def _config_error(arguments: list[str], error: Exception) -> errors.UserError:
  """The one-line error for a command line whose config does not load: the config file's own failure (a syntax
  error with its line, an exception of its get_config), or --config.KEY=VALUE arguments whose KEY the config lacks,
  each with the closest keys."""
  from ml_collections import config_flags

  from mmr_jax import config as config_lib

  files_only = ["prog", *(a for a in arguments if a.startswith("--config="))]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=files_only)
  try:
    values(files_only)
    known = config_lib.flat_keys(values.config) if values.config is not None else []
  except Exception as failure:  # The file itself.
    where = f" ({failure.filename}, line {failure.lineno})" if isinstance(failure, SyntaxError) else ""
    text = " ".join(str(getattr(failure, "msg", None) or failure).split())
    return config_lib.ConfigError(f"--config cannot be loaded: {type(failure).__name__}: {text}{where}")
  if not isinstance(error, (KeyError, AttributeError)):
    return config_lib.ConfigError(f"--config cannot be loaded: {type(error).__name__}: {' '.join(str(error).split())}")
  given = [a[len("--config.") :].split("=", 1)[0] for a in arguments if a.startswith("--config.")]
  unknown = [key for key in given if key not in known] or given
  hints = []
  for key in unknown:
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.5)
    hints.append(key + (f" (did you mean {' or '.join(close)}?)" if close else ""))
  return config_lib.ConfigError(
    f"unknown config key{'s' if len(hints) > 1 else ''}: {'; '.join(hints)}. Every key is in configs/common.py"
  )


def _config(values: flags.FlagValues):
  """The validated --config; the embedded dataset generated when the config asks for it."""
  from mmr_jax import config as config_lib

  try:
    loaded = values.config
    if loaded is not None:
      loaded.keys()  # ml_collections defers a config file's failure to load until the config is first read.
  except Exception as error:  # Whatever the file raised (missing, a syntax error, its own check): one line.
    cause = " ".join(str(error.__cause__ or error).split())
    raise config_lib.ConfigError(f"--config cannot be loaded: {cause}") from None
  if loaded is None:
    raise errors.UserError("--config is required: a config file such as --config=configs/synthetic.py")
  config = config_lib.validate(loaded)  # Before TensorFlow is imported or anything is built.
  if config.data.synthetic:
    from mmr_jax.data import synthetic

    synthetic.ensure_synthetic(config.data.root, seed=config.data.synthetic_seed)
  return config


def main(name: str | None = None, argv: list[str] | None = None) -> None:
  """The process: `python -m mmr_jax [COMMAND] ...` (name None: the command is argv's first word) or one of the
  top-level scripts (name given). Exits with the command's code."""
  argv = sys.argv[1:] if argv is None else argv
  if name is not None:
    argv = [name, *argv]
  if not argv or argv[0] in HELP_FLAGS:
    print(usage())
    sys.exit(0)
  if any(arg in HELP_FLAGS for arg in argv[1:]):
    try:
      print(usage(argv[0]))
    except UsageError as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(error.exit_code)
    sys.exit(0)
  if argv[0] in COMMANDS and load(argv[0]).COMPUTES:
    runtime.relaunch_with_malloc_tunables()
  sys.exit(run(argv))
