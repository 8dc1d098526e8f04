"""Training metrics as JSON lines (WORKDIR/metrics.jsonl) and TensorBoard summaries (WORKDIR/tensorboard).

On resume, lines of steps after the restored checkpoint (written by the killed run, about to be redone) are
dropped, so the log of a resumed run reads like that of an uninterrupted one; so is a last line that a kill cut
short, with a warning.
"""

import json
import logging
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
import tensorboardX

from mmr_jax import errors
from mmr_jax import files


def _records_up_to(path: pathlib.Path, last_step: int, drop_evaluation: bool = False) -> list[str]:
  """The lines of `path` with step ≤ last_step (with `drop_evaluation`, less the evaluation's at last_step, which
  is about to be redone). A torn last line is dropped; a bad line elsewhere is an error."""
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  kept = []
  for number, line in enumerate(lines, start=1):
    try:
      step = json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
      if number == len(lines):
        logging.warning("%s: dropped its last line, cut short when the run was stopped: %.80s", path, line)
        break
      raise errors.RunError(
        f"{path}, line {number}, is not a metrics record: {line[:80]!r}; move the file aside "
        f"to resume (the checkpoints are intact)"
      ) from None
    if step < last_step or (step == last_step and not (drop_evaluation and '"eval/' in line)):
      kept.append(line)
  return kept


class MetricWriter:
  """Appends records to metrics.jsonl and TensorBoard; with enabled=False (every host but the first of a
  multi-host run, which share the workdir) it writes nothing."""

  def __init__(
    self, workdir: pathlib.Path, resume_after_step: int = 0, enabled: bool = True, drop_evaluation: bool = False
  ):
    self.path = workdir / files.METRICS
    self.enabled = enabled
    if not enabled:
      return
    if self.path.exists():
      kept = _records_up_to(self.path, resume_after_step, drop_evaluation)
      files.write_atomic(self.path, "".join(line + "\n" for line in kept))
    self._file = self.path.open("a")
    self._tensorboard = tensorboardX.SummaryWriter(str(workdir / files.TENSORBOARD))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    self._file.write(json.dumps({"step": step, **scalars}) + "\n")
    self._file.flush()
    for name, value in scalars.items():
      if value is not None:
        self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    if not self.enabled:
      return
    self._file.close()
    self._tensorboard.close()


def step_record(metrics: Mapping[str, Any], epoch: int, lr: float, seeds: Sequence[int]) -> dict:
  """The logged record of one step's metrics (host arrays with a seed axis): means over the seeds, the loss of
  each scale, and with several seeds each seed's loss."""
  record = {
    "epoch": epoch,
    "lr": lr,
    "loss": float(np.mean(metrics["loss"])),
    "grad_norm": float(np.mean(metrics["grad_norm"])),
    "param_norm": float(np.mean(metrics["param_norm"])),
  }
  for s, value in enumerate(np.mean(metrics["loss_per_scale"], axis=0)):
    record[f"loss_scale{s + 1}"] = float(value)
  if len(seeds) > 1:
    record.update({f"loss_seed{seed}": float(v) for seed, v in zip(seeds, metrics["loss"])})
  return record


def show_progress(progress: Any, epoch: int, metrics: Mapping[str, Any], images_per_step: int) -> None:
  """The progress bar's postfix: epoch, mean loss, images per second (all seeds' images)."""
  rate = progress.format_dict.get("rate")
  progress.set_postfix(
    epoch=epoch, loss=f"{float(np.mean(metrics['loss'])):.4f}", img_s=f"{rate * images_per_step:.1f}" if rate else "–"
  )
