"""Training metrics as JSON lines (WORKDIR/metrics.jsonl) and TensorBoard summaries (WORKDIR/tensorboard).

On resume, lines of steps after the restored checkpoint (written by the killed run, about to be redone) are
dropped, so the log of a resumed run reads like that of an uninterrupted one.
"""

import json
import logging
import pathlib
from typing import Mapping


class MetricWriter:

  def __init__(self, workdir: pathlib.Path, resume_after_step: int = 0):
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():
      kept = [line for line in self.path.read_text().splitlines()
              if line.strip() and json.loads(line)["step"] <= resume_after_step]
      self.path.write_text("".join(line + "\n" for line in kept))
    self._file = self.path.open("a")
    self._tensorboard = _tensorboard_writer(workdir / "tensorboard")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    self._file.write(json.dumps({"step": step, **scalars}) + "\n")
    self._file.flush()
    if self._tensorboard is not None:
      import tensorflow as tf  # Only where TensorFlow is installed (see _tensorboard_writer).
      with self._tensorboard.as_default(step=step):
        for name, value in scalars.items():
          if value is not None:
            tf.summary.scalar(name, value)
      self._tensorboard.flush()

  def close(self) -> None:
    self._file.close()
    if self._tensorboard is not None:
      self._tensorboard.close()


def _tensorboard_writer(directory: pathlib.Path):
  """A tf.summary writer, or None where TensorFlow is absent (the GPU machines): JSON lines still record all."""
  try:
    import tensorflow as tf
  except ImportError:
    logging.warning("TensorFlow is not installed: no TensorBoard summaries (metrics.jsonl has everything)")
    return None
  tf.config.set_visible_devices([], "GPU")
  return tf.summary.create_file_writer(str(directory))
