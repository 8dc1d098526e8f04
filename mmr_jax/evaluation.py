"""Evaluation with K trained students at once: every test subset scored (`scoring.Scorer`), the paper's metrics per
seed (docs/spec.md §5, §8), results.json / results.md and report.html; and the scores of the held-out normals that
calibrate the decision threshold (§10).

With eval.adapt_shots = K (0, the published protocol, by default), each subset is also scored by the model adapted
to it (mmr_jax/adaptation.py) from K of its normal test images, drawn by a fixed rule (`adaptation_shots`). Those K
images are left out of every metric of the subset, adapted or not, so both rows are measured on the same images."""

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
from mmr_jax.training import sharding


def describe(config: ml_collections.ConfigDict) -> str:
  """The run in one line: the header of results.md and report.html."""
  vit = config.model.vit
  student = f"ViT {vit.width} wide × {vit.depth} blocks"
  return (
    f"MMR on {config.data.name} ({student} student, {config.model.teacher} teacher, "
    f"{config.data.image_size} px, {config.num_epochs} epochs)"
  )


def predict_subset(
  config: ml_collections.ConfigDict,
  scorer: scoring.Scorer,
  params: Any,
  subset: str,
  adaptation: scoring.Adaptation | None = None,
) -> scoring.Predictions:
  """The K students' maps of one test subset (adapted, with an adaptation), with its ground truth."""
  # Masking noise at test time (eval.test_mask_ratio > 0; unused at the published 0): a pure function of the
  # run's seed, the subset and the batch, so that evaluating again gives the same maps.
  subset_key = jax.random.fold_in(jax.random.key(config.seed), zlib.crc32(subset.encode()))
  return scorer.score_batches(params, pipeline.eval_batches(config, subset), subset_key, adaptation)


def adaptation_shots(kinds: np.ndarray, subset: str, count: int) -> np.ndarray:
  """The indices (in eval order) of the `count` normal test images of a subset that adapt the model to it: the
  first of a permutation of its normal images drawn from a generator seeded by the subset's name alone, so every
  run and seed of a study adapts from the same images. At least one normal image must remain to be scored
  (pipeline.check_adaptation_shots says so before any work)."""
  normals = np.flatnonzero(kinds == layouts.GOOD)
  if len(normals) <= count:
    raise ValueError(f"{subset}: {len(normals)} normal images cannot give {count} shots and one to score")
  return np.sort(np.random.default_rng(zlib.crc32(subset.encode())).permutation(normals)[:count])


def adapted_subset(
  config: ml_collections.ConfigDict,
  scorer: scoring.Scorer,
  params: Any,
  subset: str,
  predictions: scoring.Predictions,
) -> tuple[scoring.Predictions, scoring.Predictions, list[calibration.Calibration]]:
  """(unadapted, adapted predictions on the images that are not shots, the adapted thresholds per seed) of a
  subset, with eval.adapt_shots of its normal images as the shots."""
  shots = adaptation_shots(predictions.kinds, subset, config.eval.adapt_shots)
  rest = np.setdiff1d(np.arange(len(predictions.labels)), shots)
  adaptation = scorer.adapt(params, pipeline.test_images(config, subset, shots))
  adapted = predict_subset(config, scorer, params, subset, adaptation).take(rest)
  fpr = config.eval.threshold_fpr
  thresholds = [calibration.from_shots(row, fpr) for row in sharding.to_host(adaptation.shot_scores)]
  return predictions.take(rest), adapted, thresholds


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
    adapted, thresholds = None, None
    if config.eval.adapt_shots:
      predictions, adapted, thresholds = adapted_subset(config, scorer, params, subset, predictions)
      adapted_rows = subset_results(config, adapted, thresholds)
    for k, results in enumerate(subset_results(config, predictions, calibrations)):
      if adapted is not None:
        shots = config.eval.adapt_shots
        results[reports.ADAPTED] = {**adapted_rows[k], "threshold": thresholds[k].threshold, "shots": shots}
      per_seed[k][subset] = results
    if report:
      report.add(subset, predictions, calibrations, adapted, thresholds)
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
