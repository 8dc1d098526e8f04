"""The files a run, an evaluation and a prediction write: their names, defined here once, and the one way they
are written — whole or not at all (a temporary file in the same folder, renamed over the target), so that a kill,
a full disk or a crash never leaves a torn file that a rerun would trust."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import tempfile
from typing import Any

from mmr_jax import errors

# A training run's workdir.
CONFIG = "config.json"  # The config it trains with, written when it starts or resumes.
CHECKPOINTS = "checkpoints"
LOCK = ".lock"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CALIBRATION = "calibration.json"  # The held-out normals' scores (mmr_jax/calibration.py).
# What an evaluation writes (into the workdir, or evaluate.py's --out).
RESULTS = "results.json"
RESULTS_TABLE = "results.md"
REPORT = "report.html"
FIGURES = "figures"
HEATMAPS = "heatmaps"
HEATMAPS_ADAPTED = "heatmaps_adapted"  # With eval.adapt_shots: the adapted maps' overlays.
# What predict.py writes into its --out (default WORKDIR/predictions).
PREDICTIONS = "predictions"
SCORES = "scores.csv"
UNREADABLE = "unreadable.csv"
PREDICT_SETTINGS = "predict.json"
MAPS = "maps"
ADAPTATION = "adaptation.npz"  # predict.py --adapt: the adaptation used (its memories and the shots' scores),
ADAPTATION_RECORD = "adaptation.json"  # and which images (with their SHA-256) it came from.
# What the export writes.
EXPORTED_JAX = "model.jax"
EXPORTED_SAVEDMODEL = "savedmodel"
EXPORT_METADATA = "model.json"


# What each OSError number says is wrong with a folder or a disk, for the one-line message.
OS_PROBLEMS = {
  errno.ENOSPC: "the disk is full",
  errno.EDQUOT: "the disk quota is used up",
  errno.EROFS: "the file system is read-only",
  errno.EACCES: "permission denied",
  errno.EPERM: "permission denied",
  errno.ENOTDIR: "a file stands where a folder must be",
  errno.EEXIST: "a file stands where a folder must be",
}


def check_folder(path: str | os.PathLike, flag: str, create: bool = True) -> pathlib.Path:
  """PATH as a folder this process can write into, created when missing (with `create`), or one RunError (exit 6)
  that names the flag, the path and what is wrong, before any work: a file in its place, a read-only disk, no
  permission. Writing is tried for real (root passes permission checks that a read-only mount does not)."""
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise errors.RunError(f"{flag}={path} is a file, not a folder: pass a folder (it is created when missing)")
  try:
    if create:
      path.mkdir(parents=True, exist_ok=True)
    elif not path.is_dir():
      raise errors.RunError(f"{flag}={path} does not exist")
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as error:
    raise errors.RunError(
      f"{flag}={path} cannot be written ({describe_os_error(error)}): pass a writable folder"
    ) from None
  return path


def describe_os_error(error: OSError) -> str:
  """What an OSError says of the disk or a path, in a few words, with the path it names."""
  what = OS_PROBLEMS.get(error.errno, error.strerror or type(error).__name__)
  return f"{what}: {error.filename}" if error.filename else what


def seed_results(directory: pathlib.Path, seed: int, num_seeds: int) -> pathlib.Path:
  """Where one seed's results.json is: the top level of a one-seed run, seed_<s>/ of a K-seed run."""
  return directory / RESULTS if num_seeds == 1 else directory / f"seed_{seed}" / RESULTS


def write_atomic(path: pathlib.Path, content: str | bytes) -> pathlib.Path:
  """Writes `content` to PATH whole or not at all: into a temporary file beside it, flushed to disk, then renamed
  over PATH (an atomic replace on POSIX file systems). Creates the parent folder."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  data = content.encode() if isinstance(content, str) else content
  try:
    with open(temporary, "wb") as handle:
      handle.write(data)
      handle.flush()
      os.fsync(handle.fileno())
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)
  return path


def write_json(path: pathlib.Path, value: Any) -> pathlib.Path:
  return write_atomic(path, json.dumps(value, indent=2) + "\n")
