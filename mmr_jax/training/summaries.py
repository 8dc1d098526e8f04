"""Training metrics as JSON lines (WORKDIR/metrics.jsonl) and TensorBoard summaries (WORKDIR/tensorboard).

On resume, lines of steps after the restored checkpoint (written by the killed run, about to be redone) are
dropped, so the log of a resumed run reads like that of an uninterrupted one.
"""

import json
import pathlib
from typing import Mapping

import tensorboardX


class MetricWriter:

  def __init__(self, workdir: pathlib.Path, resume_after_step: int = 0):
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():
      kept = [line for line in self.path.read_text().splitlines()
              if line.strip() and json.loads(line)["step"] <= resume_after_step]
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

