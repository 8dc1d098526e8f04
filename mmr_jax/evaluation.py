"""Evaluation with K trained students at once: every test subset scored (`scoring.Scorer`), the paper's metrics per
seed (docs/spec.md §5, §8), results.json / results.md and report.html; and the scores of the held-out normals that
calibrate the decision threshold (§10)."""

from __future__ import annotations

import logging
import pathlib
import zlib
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from mmr_jax import calibration
from mmr_jax import config as config_lib
from mmr_jax import metrics
from mmr_jax import report_page
from mmr_jax import reports
from mmr_jax import scoring
from mmr_jax.data import layouts
from mmr_jax.data import pipeline


def describe(config: ml_collections.ConfigDict) -> str:
  """The run in one line: the header of results.md and report.html."""
  vit = config.model.vit
  student = f"ViT {vit.width} wide × {vit.depth} blocks"
  return (
    f"MMR on {config.data.name} ({student} student, {config.model.teacher} teacher, "
    f"{config.data.image_size} px, {config.num_epochs} epochs)"
  )


def predict_subset(config: ml_collections.ConfigDict, scorer: scoring.Scorer, params: Any, subset: str):
  """The K students' maps of one test subset, with its ground truth (scoring.Predictions)."""
  # Masking noise at test time (eval.test_mask_ratio > 0; unused at the published 0): a pure function of the
  # run's seed, the subset and the batch, so that evaluating again gives the same maps.
  subset_key = jax.random.fold_in(jax.random.key(config.seed), zlib.crc32(subset.encode()))
  return scorer.score_batches(params, pipeline.eval_batches(config, subset), subset_key)


def subset_results(
  config: ml_collections.ConfigDict,
  predictions: scoring.Predictions,
  calibrations: Sequence[calibration.Calibration] | None = None,
) -> list[dict]:
  """The metrics of one subset, one dict per seed: image_auroc, pixel_auroc, pro (published), aupro; with the
  seeds' calibrations, also how their thresholds fare here (metrics.decisions_at), as information."""
  has_masks = pipeline.has_masks(config)
  results = []
  for k in range(predictions.maps.shape[0]):
    row = metrics.subset_metrics(
      predictions.maps[k],
      predictions.masks,
      predictions.labels,
      predictions.scores[k],
      has_masks=has_masks,
      fpr_limit=config.eval.aupro_fpr_limit,
    )
    if calibrations:
      row.update(metrics.decisions_at(predictions.scores[k], predictions.labels, calibrations[k].threshold))
    results.append(row)
  return results


def evaluate(
  config: ml_collections.ConfigDict,
  scorer: scoring.Scorer,
  params: Any,
  out: pathlib.Path,
  calibrations: Sequence[calibration.Calibration] | None = None,
  write_report: bool = True,
) -> dict:
  """All test subsets, K seeds; writes results.json / results.md (and report.html with its figures) into OUT;
  returns the top level. With the seeds' calibrations, the results also say how their thresholds fare."""
  seeds = config_lib.seeds_of(config)
  per_seed = [{} for _ in seeds]
  report = report_page.Report(config) if write_report and jax.process_index() == 0 else None
  for subset in layouts.subset_names(config):
    predictions = predict_subset(config, scorer, params, subset)
    for k, results in enumerate(subset_results(config, predictions, calibrations)):
      per_seed[k][subset] = results
    if report:
      report.add(subset, predictions)
  if jax.process_index() != 0:
    return {}
  top = reports.write_results(out, seeds, per_seed, header=describe(config))
  if report:
    report.write(out, seeds, per_seed, header=describe(config))
  return top


def calibrate(
  config: ml_collections.ConfigDict, scorer: scoring.Scorer, params: Any, workdir: pathlib.Path
) -> list[calibration.Calibration] | None:
  """Scores the held-out normal training images (data.calibration_fraction) and writes calibration.json; returns
  the K seeds' calibrations, or None when nothing was held out (the published protocol)."""
  batches = pipeline.calibration_batches(config)
  if batches is None:
    return None
  predictions = scorer.score_batches(params, batches, jax.random.key(config.seed))
  seeds = config_lib.seeds_of(config)
  fraction, fpr = config.data.calibration_fraction, config.eval.threshold_fpr
  calibrations = [calibration.Calibration(np.sort(row.astype(np.float64)), fpr, fraction) for row in predictions.scores]
  if jax.process_index() == 0:
    calibration.write(workdir, seeds, predictions.scores, predictions.names, fraction, fpr)
  logging.warning("calibrated: %s", "; ".join(f"seed {s}: {c.describe()}" for s, c in zip(seeds, calibrations)))
  return calibrations


def recorded_calibrations(
  config: ml_collections.ConfigDict, directory: pathlib.Path
) -> list[calibration.Calibration] | None:
  """The K seeds' calibrations recorded in DIRECTORY/calibration.json (at eval.threshold_fpr), or None."""
  found = [calibration.read(directory, seed, config.eval.threshold_fpr) for seed in config_lib.seeds_of(config)]
  return None if any(c is None for c in found) else found
