"""Scores every test subset with K trained students at once and computes the paper's metrics per seed (§5, §8)."""

import dataclasses
import zlib
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

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
  images: np.ndarray  # (n, H, W, 3) uint8: the first few, for heatmap overlays.


def predict_subset(config: ml_collections.ConfigDict, subset: str, params: Any, teacher_params: Any,
                   teacher_fn: Callable, anomaly_fn: Callable, mesh: jax.sharding.Mesh) -> SubsetPredictions:
  """Runs the students (params with a leading seed axis) over one subset's test images."""
  maps, scores, masks, labels, names, images = [], [], [], [], [], []
  batch_sharding = sharding.batch_sharding(mesh)
  keep_images = config.eval.num_heatmaps
  # Masking noise at test time (eval.test_mask_ratio > 0; unused at the published 0): a pure function of the
  # run's seed, the subset and the batch, so that evaluating again gives the same maps.
  subset_key = jax.random.fold_in(jax.random.key(config.seed), zlib.crc32(subset.encode()))
  # Every host reads each whole batch (test sets are small) and places the rows its own devices hold; the
  # maps come back whole on every host.
  for index, batch in enumerate(pipeline.eval_batches(config, subset)):
    valid = batch["valid"]
    rng = jax.random.key_data(jax.random.fold_in(subset_key, index))
    batch_images = jax.device_put(batch["image"], batch_sharding)
    teacher_features = tuple(f[0] for f in teacher_fn(teacher_params, batch_images[None]))
    batch_maps, batch_scores = sharding.to_host(anomaly_fn(params, batch_images, teacher_features, rng))
    maps.append(batch_maps[:, valid])
    scores.append(batch_scores[:, valid])
    masks.append(batch["mask"][valid])
    labels.append(batch["label"][valid])
    names.append(batch["name"][valid])
    if sum(len(i) for i in images) < keep_images:
      images.append(pipeline.denormalize(batch["image"][valid]))
  return SubsetPredictions(
      maps=np.concatenate(maps, axis=1), scores=np.concatenate(scores, axis=1),
      masks=np.concatenate(masks), labels=np.concatenate(labels), names=np.concatenate(names),
      images=np.concatenate(images)[:keep_images])


def subset_results(config: ml_collections.ConfigDict, predictions: SubsetPredictions) -> list[dict]:
  """The metrics of one subset, one dict per seed: image_auroc, pixel_auroc, pro (published), aupro."""
  has_masks = pipeline.has_masks(config)
  return [metrics.subset_metrics(predictions.maps[k], predictions.masks, predictions.labels,
                                 predictions.scores[k], has_masks=has_masks,
                                 fpr_limit=config.eval.aupro_fpr_limit)
          for k in range(predictions.maps.shape[0])]
