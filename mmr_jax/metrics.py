"""Evaluation metrics (docs/spec.md §8): image AUROC, pixel AUROC, the PRO as the published code computes it, and the
standard AUPRO of the MVTec AD evaluation code.

Everything is NumPy on the host and sort-based: no per-threshold loops over pixels, so a subset of a few hundred
224² maps takes seconds. Nothing here imports TensorFlow or scikit-learn.

Inputs: `maps` float (N, H, W) anomaly maps, `masks` binary (N, H, W) ground truth (already binarised the
published way by the data pipeline), `labels` (N,) with 1 = anomalous image, `scores` (N,) image scores.

Undefined cases raise ValueError (an AUROC over one class, a PRO/AUPRO without an anomalous region or without a
normal pixel). The one exception is the published PRO of a single degenerate image, which follows the published
arithmetic and is NaN; see `pro_published`.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional

import numpy as np
from scipy import ndimage

# The published PRO (`utils/common.py::compute_pro`): thresholds per image and its FPR cut-off.
PUBLISHED_PRO_NUM_THRESHOLDS = 200
PUBLISHED_PRO_FPR_CUTOFF = 0.3
# Ground-truth regions are 8-connected, as skimage.measure.label's default on 2-D and scipy's ones((3, 3)).
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
METRIC_NAMES = ("image_auroc", "pixel_auroc", "pro", "aupro")


# ---------------------------------------------------------------------------------------------------------------
# Input checks: a wrong shape or a non-binary mask is reported here, not deep inside NumPy.


def _as_finite(values: Any, name: str, shape: str) -> np.ndarray:
  """`values` as a float array of the dimensions `shape` names ("(N, H, W)", "(N,)"), all finite; else a
  ValueError naming it."""
  values = np.asarray(values)
  if values.ndim != len([axis for axis in shape.strip("()").split(",") if axis.strip()]):
    raise ValueError(f"{name} must have shape {shape}, got {values.shape}.")
  if not np.issubdtype(values.dtype, np.floating):
    values = values.astype(np.float64)
  if not np.isfinite(values).all():
    raise ValueError(f"{name} contain NaN or inf; check the model output before computing metrics.")
  return values


def _as_maps(maps: Any, name: str = "maps") -> np.ndarray:
  return _as_finite(maps, name, "(N, H, W)")


def _as_binary(values: Any, name: str, shape: Optional[tuple[int, ...]] = None) -> np.ndarray:
  values = np.asarray(values)
  if shape is not None and values.shape != shape:
    raise ValueError(f"{name} must have shape {shape} to match the maps/scores, got {values.shape}.")
  if values.dtype != bool:
    if not ((values == 0) | (values == 1)).all():
      found = np.unique(values)[:5]
      raise ValueError(
        f"{name} must be binary (0/1); found values such as {found}. Binarise them first "
        "(the data pipeline keeps only pixels equal to the mask's maximum, docs/spec.md §7)."
      )
    values = values.astype(bool)
  return values


def _as_labels(labels: Any, n: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must have shape (N,), got {labels.shape}.")
  return _as_binary(labels, "labels", (n,))


def _as_scores(scores: Any) -> np.ndarray:
  return _as_finite(scores, "scores", "(N,)")


# ---------------------------------------------------------------------------------------------------------------
# AUROC


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float:
  """ROC AUC = P(positive > negative) + ½·P(tie), the Mann–Whitney statistic; identical to scikit-learn's
  roc_auc_score (its trapezoids over distinct thresholds count ties ½ as well).

  Counts are exact integers and the final division is rounded once, so this is at least as exact as sklearn.
  """
  negative = np.sort(negative)
  positive = np.sort(positive)  # sorted needles keep the binary searches cache-friendly
  below = np.searchsorted(negative, positive, side="left").sum(dtype=np.int64)
  below_or_tied = np.searchsorted(negative, positive, side="right").sum(dtype=np.int64)
  # Python int division is correctly rounded: twice the win count over twice the number of pairs.
  return (int(below) + int(below_or_tied)) / (2 * positive.size * negative.size)


def image_auroc(scores: Any, labels: Any) -> float:
  """ROC AUC of image scores against image labels (1 = anomalous), ties counted ½ as in scikit-learn.

  Raises ValueError when the subset lacks anomalous or normal images (the AUROC is undefined).
  """
  scores = _as_scores(scores)
  labels = _as_labels(labels, scores.size)
  n_anomalous = int(labels.sum())
  if n_anomalous == 0 or n_anomalous == labels.size:
    missing = "anomalous" if n_anomalous == 0 else "normal"
    raise ValueError(f"image AUROC is undefined: the subset has no {missing} images ({labels.size} images).")
  return _auroc(scores[labels], scores[~labels])


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  """(false positive rates, true positive rates) at every distinct score taken as the threshold (score ≥ it is
  anomalous), from (0, 0) to (1, 1): the curve whose trapezoidal area is image_auroc."""
  scores = _as_scores(scores)
  labels = _as_labels(labels, scores.size)
  order = np.argsort(-scores, kind="stable")
  scores, labels = scores[order], labels[order]
  last_of_each_score = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
  true_positives = np.cumsum(labels)[last_of_each_score]
  false_positives = (last_of_each_score + 1) - true_positives
  tpr = np.r_[0.0, true_positives / max(int(labels.sum()), 1)]
  fpr = np.r_[0.0, false_positives / max(int((~labels).sum()), 1)]
  return fpr, tpr


def decisions_at(scores: Any, labels: Any, threshold: float) -> dict[str, float]:
  """How a decision threshold (score > threshold is anomalous) fares on a labelled set, and the F1-optimal
  threshold on it, for information: "fpr_at_threshold", "tpr_at_threshold", "f1_at_threshold",
  "f1_best_threshold" (midway between the two scores where the best cut falls) and "f1_best"."""
  scores = _as_scores(scores).astype(np.float64)
  labels = _as_labels(labels, scores.size)
  flagged = scores > threshold
  positives, negatives = int(labels.sum()), int((~labels).sum())
  result = {
    "fpr_at_threshold": float((flagged & ~labels).sum() / max(negatives, 1)),
    "tpr_at_threshold": float((flagged & labels).sum() / max(positives, 1)),
    "f1_at_threshold": _f1(int((flagged & labels).sum()), int(flagged.sum()), positives),
  }
  # Every cut between two distinct scores, highest first: the top i images flagged.
  order = np.argsort(-scores, kind="stable")
  ranked, ranked_labels = scores[order], labels[order]
  cuts = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
  true_flagged = np.cumsum(ranked_labels)[cuts]
  f1 = 2 * true_flagged / np.maximum((cuts + 1) + positives, 1)
  best = int(np.argmax(f1))
  below = ranked[cuts[best] + 1] if cuts[best] + 1 < ranked.size else ranked[cuts[best]] - 1.0
  result.update(f1_best_threshold=float((ranked[cuts[best]] + below) / 2), f1_best=float(f1[best]))
  return result


def _f1(true_flagged: int, flagged: int, positives: int) -> float:
  return 2 * true_flagged / max(flagged + positives, 1)


def pixel_auroc(maps: Any, masks: Any) -> float:
  """ROC AUC over every pixel of every map (1 = anomalous pixel in the mask), ties counted ½ as in scikit-learn.

  Float32 maps stay float32 (sorting them is what costs). Raises ValueError without anomalous or normal pixels.
  """
  maps = _as_maps(maps)
  masks = _as_binary(masks, "masks", maps.shape)
  positive = maps[masks]
  if positive.size == 0 or positive.size == maps.size:
    missing = "anomalous" if positive.size == 0 else "normal"
    raise ValueError(f"pixel AUROC is undefined: the masks hold no {missing} pixels.")
  return _auroc(positive, maps[~masks])


# ---------------------------------------------------------------------------------------------------------------
# PRO as published (`utils/common.py::compute_pro`)


def _published_thresholds(amap: np.ndarray) -> np.ndarray:
  """The published thresholds: `np.arange(min, max, (max - min) / 200)` of one float64 map.

  Called literally so that np.arange's float arithmetic (which gives 200 or 201 values) is reproduced.
  """
  low, high = amap.min(), amap.max()
  return np.arange(low, high, (high - low) / PUBLISHED_PRO_NUM_THRESHOLDS)


def _count_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
  """How many of `sorted_values` are strictly greater than each threshold (binary = map > t)."""
  return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="right")


def _published_pro_of_image(amap: np.ndarray, mask: np.ndarray) -> tuple[float, Optional[str]]:
  """Published PRO of one anomalous image; returns (value, why it is NaN or None)."""
  if amap.max() == amap.min():
    return np.nan, "its map is constant, so there are no thresholds"
  normal = np.sort(amap[~mask])
  if normal.size == 0:
    return np.nan, "it has no normal pixel, so its FPR is 0/0"
  thresholds = _published_thresholds(amap)
  fpr = _count_above(normal, thresholds) / normal.size

  regions, n_regions = ndimage.label(mask, structure=_EIGHT_CONNECTED)
  region_of_pixel = regions[mask]
  values = amap[mask]
  order = np.lexsort((values, region_of_pixel))  # grouped by region, ascending values inside each
  sorted_values = values[order]
  starts = np.searchsorted(region_of_pixel[order], np.arange(1, n_regions + 2))
  overlaps = np.empty((n_regions, thresholds.size))
  for r in range(n_regions):
    region_values = sorted_values[starts[r] : starts[r + 1]]
    overlaps[r] = _count_above(region_values, thresholds) / region_values.size
  pro = overlaps.mean(axis=0)

  kept = fpr < PUBLISHED_PRO_FPR_CUTOFF
  if kept.sum() < 2:
    return np.nan, f"only {kept.sum()} threshold(s) give FPR < {PUBLISHED_PRO_FPR_CUTOFF}; no area"
  x, y = fpr[kept], pro[kept]
  if x.max() == 0:
    # The published code divides by the largest kept FPR: 0/0, so every x is NaN and so is the area.
    return np.nan, "no normal pixel exceeds any kept threshold (largest kept FPR is 0)"
  x = x / x.max()
  # sklearn.metrics.auc: x is FPR in increasing-threshold order, hence non-increasing; auc detects this and
  # flips the sign of the trapezoid sum.
  direction = -1.0 if np.any(np.diff(x) < 0) else 1.0
  return float(direction * np.trapezoid(y, x)), None


def pro_published(maps: Any, masks: Any, labels: Any) -> tuple[np.ndarray, float]:
  """The PRO as the published MMR code computes it (docs/spec.md §8); not the standard AUPRO (see `aupro`).

  For each anomalous image on its own: thresholds `np.arange(min, max, (max − min)/200)` of its map; at each,
  binary = map > t, PRO = mean over its 8-connected ground-truth regions of TP/area, FPR = FP / its normal
  pixels; keep the points with FPR < 0.3, divide their FPR by the largest kept one, trapezoid area in threshold
  order (as sklearn.metrics.auc, which flips the sign for the decreasing FPR). Maps are taken in float64, as the
  published maps are (thresholds and comparisons are float64 arithmetic).

  Returns (per_image, mean): per_image in label order (one per anomalous image) and their plain mean.

  Degenerate images get NaN, with a RuntimeWarning naming them: a constant map, no normal pixel, fewer than two
  thresholds with FPR < 0.3, or a largest kept FPR of 0 (e.g. a map that is exactly 0 on every normal pixel).
  The published code gives NaN in the last case and raises in the others; a NaN image makes the mean NaN, as
  it does there. Raises ValueError if no image is anomalous or an anomalous image has an empty mask (the spec
  counts such an image as normal: fix its label).
  """
  maps = _as_maps(maps)
  masks = _as_binary(masks, "masks", maps.shape)
  labels = _as_labels(labels, maps.shape[0])
  anomalous = np.flatnonzero(labels)
  if anomalous.size == 0:
    raise ValueError("PRO is undefined: the subset has no anomalous images.")
  empty = [int(i) for i in anomalous if not masks[i].any()]
  if empty:
    raise ValueError(
      f"images {empty[:10]} are labelled anomalous but their masks are empty; an image whose "
      "mask is empty counts as normal (docs/spec.md §7): give it label 0."
    )

  per_image = np.empty(anomalous.size)
  degenerate = []
  for k, i in enumerate(anomalous):
    per_image[k], why = _published_pro_of_image(maps[i].astype(np.float64), masks[i])
    if why is not None:
      degenerate.append(f"image {int(i)}: {why}")
  if degenerate:
    warnings.warn(
      "published PRO is NaN for "
      + "; ".join(degenerate[:5])
      + (f"; and {len(degenerate) - 5} more" if len(degenerate) > 5 else ""),
      RuntimeWarning,
      stacklevel=2,
    )
  return per_image, float(np.mean(per_image))


# ---------------------------------------------------------------------------------------------------------------
# Standard AUPRO (MVTec AD evaluation code)


def _first_count_beyond(limit: float, total: int) -> int:
  """Smallest integer m with m / total > limit, evaluated in floats exactly as the FPRs are."""
  m = int(np.floor(limit * total))
  while m > 0 and (m / total) > limit:
    m -= 1
  while (m / total) <= limit:
    m += 1
  return m


def aupro(maps: Any, masks: Any, fpr_limit: float = 0.3) -> float:
  """Standard AUPRO, as the MVTec AD evaluation code defines it.

  One set of thresholds over the whole set (every distinct map value, normal images included); binary =
  map >= t; PRO = overlap TP/area averaged over all 8-connected ground-truth regions of all images; FPR = FP over
  all normal pixels of all images. The curve, starting at (0, 0), is integrated with trapezoids up to
  `fpr_limit` (the point at exactly the limit linearly interpolated) and divided by `fpr_limit`.

  Exact over all distinct thresholds, computed without a per-threshold loop: only pixels at or above the value
  where FPR first passes the limit are sorted. Raises ValueError without an anomalous region or a normal pixel.
  """
  if not 0.0 < fpr_limit <= 1.0:
    raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}.")
  maps = _as_maps(maps)
  masks = _as_binary(masks, "masks", maps.shape)

  # Each anomalous pixel carries 1 / its region's area; the PRO at t is their sum over pixels >= t / #regions.
  region_ids = []  # per anomalous pixel, in the C order of maps[masks]
  n_regions = 0
  for i in range(maps.shape[0]):
    if masks[i].any():
      labelled, count = ndimage.label(masks[i], structure=_EIGHT_CONNECTED)
      region_ids.append(labelled[masks[i]] - 1 + n_regions)
      n_regions += count
  if n_regions == 0:
    raise ValueError("AUPRO is undefined: the masks hold no anomalous region.")
  region_ids = np.concatenate(region_ids)
  weights = 1.0 / np.bincount(region_ids)[region_ids]
  anomalous_values = maps[masks]
  order = np.argsort(anomalous_values, kind="stable")
  anomalous_values = anomalous_values[order]
  # weight_at_or_above[j] = summed weight of sorted anomalous pixels j.. (0 past the end).
  weight_at_or_above = np.concatenate([np.cumsum(weights[order][::-1])[::-1], [0.0]])

  normal_values = maps[~masks]
  n_normal = normal_values.size
  if n_normal == 0:
    raise ValueError("AUPRO is undefined: the masks leave no normal pixel.")
  # Points beyond the first one past the limit do not matter: keep normal values >= that point's value.
  m = _first_count_beyond(fpr_limit, n_normal)
  if m <= n_normal:
    cut = np.partition(normal_values, n_normal - m)[n_normal - m]
    normal_values = normal_values[normal_values >= cut]
  normal_values = np.sort(normal_values)[::-1]

  # The curve's FPR only moves at distinct normal values v (descending). Between two of them only anomalous
  # pixels enter (vertical steps, no area); at v the curve goes from (FP(> v), PRO(> v)) to (FP(>= v), PRO(>= v)).
  is_new = np.concatenate([[True], normal_values[1:] != normal_values[:-1]])
  distinct = normal_values[is_new]
  fp_at_or_above = np.concatenate([np.flatnonzero(is_new)[1:], [normal_values.size]])
  fp_above = np.concatenate([[0], fp_at_or_above[:-1]])
  x0, x1 = fp_above / n_normal, fp_at_or_above / n_normal
  y0 = weight_at_or_above[np.searchsorted(anomalous_values, distinct, side="right")] / n_regions
  y1 = weight_at_or_above[np.searchsorted(anomalous_values, distinct, side="left")] / n_regions
  y0, y1 = np.minimum(y0, 1.0), np.minimum(y1, 1.0)  # summed weights may pass 1 by rounding; MVTec clips too

  inside = x1 <= fpr_limit
  area = float(np.sum(0.5 * (y0[inside] + y1[inside]) * (x1[inside] - x0[inside])))
  crossing = np.flatnonzero(~inside)
  if crossing.size:
    j = crossing[0]
    y_limit = y0[j] + (y1[j] - y0[j]) * (fpr_limit - x0[j]) / (x1[j] - x0[j])
    area += 0.5 * (y0[j] + y_limit) * (fpr_limit - x0[j])
  return float(area / fpr_limit)


# ---------------------------------------------------------------------------------------------------------------
# Per subset and across subsets


def subset_metrics(
  maps: Any, masks: Any, labels: Any, scores: Any, has_masks: bool = True, fpr_limit: float = 0.3
) -> dict[str, Optional[float]]:
  """The reported metrics of one test subset (docs/spec.md §8): image AUROC, pixel AUROC, published PRO, AUPRO.

  Pixel metrics are None when `has_masks` is False (AeBAD-V; maps and masks may then be None). "pro" is NaN
  when an anomalous image is degenerate (see `pro_published`).
  """
  result: dict[str, Optional[float]] = {
    "image_auroc": image_auroc(scores, labels),
    "pixel_auroc": None,
    "pro": None,
    "aupro": None,
  }
  if has_masks:
    if maps is None or masks is None:
      raise ValueError("has_masks=True needs both maps and masks; pass has_masks=False for a set without masks.")
    result["pixel_auroc"] = pixel_auroc(maps, masks)
    result["pro"] = pro_published(maps, masks, labels)[1]
    result["aupro"] = aupro(maps, masks, fpr_limit)
  return result


def mean_over_subsets(results: Mapping[str, Mapping[str, Optional[float]]]) -> dict[str, Optional[float]]:
  """Plain mean of each metric over subsets (the tables' "Mean"), ignoring None; None if every value is None.

  A NaN (a degenerate published PRO) is not ignored: it makes that mean NaN.
  """
  names = list(METRIC_NAMES) + sorted({k for r in results.values() for k in r} - set(METRIC_NAMES))
  means: dict[str, Optional[float]] = {}
  for name in names:
    values = [r[name] for r in results.values() if r.get(name) is not None]
    means[name] = float(np.mean(values)) if values else None
  return means
