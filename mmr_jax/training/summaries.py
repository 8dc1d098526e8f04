"""Training metrics as JSON lines (WORKDIR/metrics.jsonl) and TensorBoard summaries (WORKDIR/tensorboard).

On resume, lines of steps after the restored checkpoint (written by the killed run, about to be redone) are
dropped, so the log of a resumed run reads like that of an uninterrupted one; so is a last line that a kill cut
short, with a warning.
"""

import json
import logging
import pathlib
from typing import Mapping

import tensorboardX

from mmr_jax import errors


def _records_up_to(path: pathlib.Path, last_step: int) -> list[str]:
  """The lines of `path` with step ≤ last_step. A torn last line is dropped; a bad line elsewhere is an error."""
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  kept = []
  for number, line in enumerate(lines, start=1):
    try:
      step = json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
      if number == len(lines):
        logging.warning("%s: dropped its last line, cut short when the run was stopped: %.80s", path, line)
        break
      raise errors.RunError(f"{path}, line {number}, is not a metrics record: {line[:80]!r}; move the file aside "
                            f"to resume (the checkpoints are intact)") from None
    if step <= last_step:
      kept.append(line)
  return kept


class MetricWriter:

  def __init__(self, workdir: pathlib.Path, resume_after_step: int = 0):
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():
      kept = _records_up_to(self.path, resume_after_step)
      self.path.write_text("".join(line + "\n" for line in kept))
    self._file = self.path.open("a")
    self._tensorboard = tensorboardX.SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    self._file.write(json.dumps({"step": step, **scalars}) + "\n")
    self._file.flush()
    for name, value in scalars.items():
      if value is not None:
        self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    self._file.close()
    self._tensorboard.close()

