"""Decision thresholds from normal images the model never trained on, and scores normalised by them.

At the end of training, `data.calibration_fraction` of the normal training images (held out from training by
`data.sources`) are scored as test images; their scores are WORKDIR/calibration.json. From them, per seed:

- the threshold at a false-positive rate f (eval.threshold_fpr, default 1 %): the smallest held-out score with at
  most ⌊f·n⌋ held-out scores above it; an image is anomalous when its score is above the threshold, so at most
  a fraction f of the held-out normals are flagged. With n < 1/f held-out images, f cannot be resolved and the
  threshold is their maximum (FPR 0 on them); `describe` says so.
- a normalised score, 0.5 · (score − m) / (threshold − m) with m the held-out median: the median normal maps to
  0, the threshold to 0.5, whatever the model's raw scale, so that scores of different runs read alike. It is not
  clipped, so it ranks images as the raw score does.

An adapted model (mmr_jax/adaptation.py) is calibrated the same way from its K shots: each shot's score with the
memory of the other K − 1 (leave one out) stands for a new normal image of the domain, and the same rule sets the
threshold on those K scores (`from_shots`). K scores resolve rates down to 1/K only: with fewer than 1/f shots the
threshold is the highest of them, which a new normal image of the domain exceeds about once in K + 1.

Nothing here looks at a labelled test set: test results only report how the threshold fares (`metrics`).
No JAX here.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Sequence

import numpy as np

from mmr_jax import errors
from mmr_jax import files


@dataclasses.dataclass(frozen=True)
class Calibration:
  """One seed's held-out normal scores and the threshold at `fpr`."""

  scores: np.ndarray  # (n,) float64, ascending.
  fpr: float
  fraction: float  # data.calibration_fraction that held them out (0 for shots).
  source: str = "held-out normal images"  # What the scores are of, for `describe`.

  @property
  def threshold(self) -> float:
    return threshold_at_fpr(self.scores, self.fpr)

  @property
  def centre(self) -> float:
    return float(np.median(self.scores))

  def normalise(self, scores: np.ndarray) -> np.ndarray:
    """Raw image scores → normalised: held-out median 0, threshold 0.5 (module docstring)."""
    spread = self.threshold - self.centre
    if spread <= 0:  # One held-out image, or all alike: scale by the threshold alone.
      return 0.5 * np.asarray(scores, np.float64) / max(abs(self.threshold), 1e-12)
    return 0.5 * (np.asarray(scores, np.float64) - self.centre) / spread

  def is_anomalous(self, scores: np.ndarray) -> np.ndarray:
    return np.asarray(scores) > self.threshold

  def held_out_fpr(self) -> float:
    """The fraction of the held-out normals above the threshold (≤ fpr by construction)."""
    return float(np.mean(self.is_anomalous(self.scores)))

  def describe(self) -> str:
    n = len(self.scores)
    text = (
      f"threshold {self.threshold:.5g} at {100 * self.fpr:g} % false positives on {n} {self.source} "
      f"({100 * self.held_out_fpr():.1f} % of them above it)"
    )
    if n * self.fpr < 1:
      more = (
        "more normal images to adapt with"
        if self.fraction == 0
        else "a larger data.calibration_fraction or more training images"
      )
      text += (
        f"; {n} images resolve rates down to {100 / n:.3g} % only, so the threshold is their "
        f"maximum ({int(np.ceil(1 / self.fpr))} would resolve {100 * self.fpr:g} %: {more})"
      )
    return text


def from_shots(shot_scores: np.ndarray, fpr: float) -> Calibration:
  """An adapted model's calibration: the same rule on its shots' leave-one-out scores (module docstring)."""
  scores = np.sort(np.asarray(shot_scores, np.float64))
  return Calibration(scores, fpr, 0.0, "normal images of the domain, each scored against the others")


def threshold_at_fpr(normal_scores: np.ndarray, fpr: float) -> float:
  """The smallest of `normal_scores` with at most ⌊fpr·n⌋ of them strictly above it."""
  if not 0 < fpr < 1:
    raise ValueError(f"the false-positive rate must lie in (0, 1), got {fpr}")
  descending = np.sort(np.asarray(normal_scores, np.float64))[::-1]
  allowed = int(np.floor(fpr * len(descending) + 1e-9))
  return float(descending[min(allowed, len(descending) - 1)])


def write(
  directory: pathlib.Path, seeds: Sequence[int], scores: np.ndarray, names: Sequence[str], fraction: float, fpr: float
) -> list[Calibration]:
  """Writes DIRECTORY/calibration.json from the held-out scores (K, n) of K seeds; returns their Calibrations."""
  record = {
    "fraction": fraction,
    "fpr": fpr,
    "images": list(map(str, names)),
    "seeds": {str(seed): [float(v) for v in row] for seed, row in zip(seeds, scores)},
  }
  files.write_atomic(directory / files.CALIBRATION, json.dumps(record, indent=1) + "\n")
  return [Calibration(np.sort(np.asarray(row, np.float64)), fpr, fraction) for row in scores]


def read(directory: pathlib.Path, seed: int, fpr: float | None = None) -> Calibration | None:
  """Seed `seed`'s calibration from DIRECTORY/calibration.json (at `fpr`, default the one recorded); None when
  the run held no images out. Raises ValueError when the file lacks the seed."""
  path = pathlib.Path(directory) / files.CALIBRATION
  if not path.exists():
    return None
  try:
    record = json.loads(path.read_text())
  except ValueError as error:
    raise errors.RunError(
      f"{path} is not the JSON a run writes ({error}): rerun `python train.py` with the run's config and "
      f"--workdir, which scores the held-out images again"
    ) from None
  if str(seed) not in record["seeds"]:
    raise errors.RunError(f"{path} calibrates seeds {', '.join(record['seeds'])}, not seed {seed}")
  scores = np.sort(np.asarray(record["seeds"][str(seed)], np.float64))
  return Calibration(scores, record["fpr"] if fpr is None else fpr, record["fraction"])
