"""Scores every test subset with K trained students at once and computes the paper's metrics per seed (§5, §8)."""

import dataclasses
import zlib
from typing import Any, Callable, Iterable, Sequence

import jax
import ml_collections
import numpy as np

from mmr_jax import calibration
from mmr_jax import metrics
from mmr_jax.data import pipeline
from mmr_jax.training import sharding


@dataclasses.dataclass
class SubsetPredictions:
  """Anomaly maps of one test subset for K seeds, with its ground truth."""

  maps: np.ndarray  # (K, N, H, W) float32, smoothed.
  scores: np.ndarray  # (K, N)
  masks: np.ndarray  # (N, H, W) uint8
  labels: np.ndarray  # (N,)
  names: np.ndarray  # (N,) relative paths
  kinds: np.ndarray  # (N,) defect types, "good" for normal images


def predict_subset(
  config: ml_collections.ConfigDict,
  subset: str,
  params: Any,
  teacher_params: Any,
  teacher_fn: Callable,
  anomaly_fn: Callable,
  mesh: jax.sharding.Mesh,
) -> SubsetPredictions:
  """Runs the students (params with a leading seed axis) over one subset's test images."""
  # Masking noise at test time (eval.test_mask_ratio > 0; unused at the published 0): a pure function of the
  # run's seed, the subset and the batch, so that evaluating again gives the same maps.
  subset_key = jax.random.fold_in(jax.random.key(config.seed), zlib.crc32(subset.encode()))
  return predict_batches(
    pipeline.eval_batches(config, subset), subset_key, params, teacher_params, teacher_fn, anomaly_fn, mesh
  )


def predict_batches(
  batches: Iterable[dict],
  key: jax.Array,
  params: Any,
  teacher_params: Any,
  teacher_fn: Callable,
  anomaly_fn: Callable,
  mesh: jax.sharding.Mesh,
) -> SubsetPredictions:
  """Runs the students over evaluation batches (pipeline.eval_batches' form); batch i masks with fold_in(key, i)
  when eval.test_mask_ratio > 0."""
  maps, scores, masks, labels, names, kinds = [], [], [], [], [], []
  batch_sharding = sharding.batch_sharding(mesh)
  # Every host reads each whole batch (test sets are small) and places the rows its own devices hold; the
  # maps come back whole on every host.
  for index, batch in enumerate(batches):
    valid = batch["valid"]
    rng = jax.random.key_data(jax.random.fold_in(key, index))
    batch_images = jax.device_put(batch["image"], batch_sharding)
    teacher_features = tuple(f[0] for f in teacher_fn(teacher_params, batch_images[None]))
    batch_maps, batch_scores = sharding.to_host(anomaly_fn(params, batch_images, teacher_features, rng))
    maps.append(batch_maps[:, valid])
    scores.append(batch_scores[:, valid])
    masks.append(batch["mask"][valid])
    labels.append(batch["label"][valid])
    names.append(batch["name"][valid])
    kinds.append(batch["kind"][valid])
  return SubsetPredictions(
    maps=np.concatenate(maps, axis=1),
    scores=np.concatenate(scores, axis=1),
    masks=np.concatenate(masks),
    labels=np.concatenate(labels),
    names=np.concatenate(names),
    kinds=np.concatenate(kinds),
  )


def test_images(config: ml_collections.ConfigDict, subset: str, indices: Sequence[int]) -> np.ndarray:
  """The preprocessed test images at `indices` (in eval order) as uint8 (n, H, W, 3), for the report's
  overlays. Read again rather than kept from the scoring pass, whose memory would grow with the test set."""
  wanted = {int(i): None for i in indices}
  start = 0
  for batch in pipeline.eval_batches(config, subset):
    rows = np.flatnonzero(batch["valid"])
    for row, index in zip(rows, range(start, start + len(rows))):
      if index in wanted:
        wanted[index] = pipeline.denormalize(batch["image"][row])
    start += len(rows)
  return np.stack([wanted[int(i)] for i in indices])


def subset_results(
  config: ml_collections.ConfigDict,
  predictions: SubsetPredictions,
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
