"""Metrics against scikit-learn and against deliberately naive, loop-based references written from docs/spec.md §8."""

import statistics

import numpy as np
import pytest
from skimage import measure
from sklearn import metrics as sk_metrics

from mmr_jax import metrics


# ---------------------------------------------------------------------------------------------------------------
# Naive references: one threshold at a time, regions from skimage, as the published code is structured.


def naive_published_pro(amap, mask, connectivity=2):
  """compute_pro's structure for one image: arange thresholds, regionprops overlaps, FPR < 0.3, sklearn auc."""
  low, high = amap.min(), amap.max()
  regions = measure.regionprops(measure.label(mask.astype(int), connectivity=connectivity))
  pros, fprs = [], []
  for t in np.arange(low, high, (high - low) / 200):
    binary = amap > t
    pros.append(statistics.mean(binary[r.coords[:, 0], r.coords[:, 1]].sum() / r.area for r in regions))
    fprs.append(np.logical_and(mask == 0, binary).sum() / (mask == 0).sum())
  pros, fprs = np.array(pros), np.array(fprs)
  kept = fprs < 0.3
  return sk_metrics.auc(fprs[kept] / fprs[kept].max(), pros[kept])


def naive_aupro(maps, masks, fpr_limit):
  """MVTec-style: every distinct value as a threshold (map >= t), curve from (0, 0), interpolated at the limit."""
  regions = []
  for i in range(maps.shape[0]):
    labelled = measure.label(masks[i].astype(int), connectivity=2)
    regions += [(i, labelled == k) for k in range(1, labelled.max() + 1)]
  normal = masks == 0
  xs, ys = [0.0], [0.0]
  for t in np.unique(maps)[::-1]:
    binary = maps >= t
    xs.append((binary & normal).sum() / normal.sum())
    ys.append(np.mean([binary[i][region].mean() for i, region in regions]))
  area = 0.0
  for k in range(1, len(xs)):
    if xs[k] <= fpr_limit:
      area += (xs[k] - xs[k - 1]) * (ys[k] + ys[k - 1]) / 2
    else:
      y_limit = np.interp(fpr_limit, [xs[k - 1], xs[k]], [ys[k - 1], ys[k]])
      area += (fpr_limit - xs[k - 1]) * (ys[k - 1] + y_limit) / 2
      break
  return area / fpr_limit


# ---------------------------------------------------------------------------------------------------------------
# Small hand-made data: several regions, an 8-connected diagonal, ties in the maps.


def hand_made_set():
  """Five 32² maps: more distinct values than the 200 thresholds, so where the thresholds fall matters."""
  rng = np.random.default_rng(0)
  masks = np.zeros((5, 32, 32), np.uint8)
  masks[0, [4, 5, 6, 7, 8], [4, 5, 6, 7, 8]] = 1  # one region only under 8-connectivity
  masks[0, 20:24, 10:20] = 1
  masks[1, 2:5, 2:5] = 1  # two regions of different size
  masks[1, 15:28, 12:22] = 1
  masks[3, 10:20, 8:14] = 1
  masks[3, 20, 14] = 1  # touches the block only diagonally
  labels = np.array([1, 1, 0, 1, 0])
  maps = rng.normal(size=masks.shape) + 1.5 * masks * rng.uniform(0.2, 1.0, size=masks.shape)
  maps[1] = np.round(maps[1], 1)  # ties between normal and anomalous pixels
  # Halves in [0, 200]: thresholds are exactly 0, 1, …, 199 and half the pixels sit on one (map > t, not >=).
  maps[3] = (rng.integers(0, 401, size=(32, 32)) + 120 * masks[3]).clip(0, 400) / 2
  maps[3, 0, 0], maps[3, 0, 1] = 0, 200
  return maps, masks, labels


def test_image_auroc_matches_sklearn_with_ties():
  rng = np.random.default_rng(1)
  for _ in range(5):
    scores = rng.integers(0, 6, size=200).astype(np.float32)
    labels = rng.integers(0, 2, size=200)
    assert metrics.image_auroc(scores, labels) == pytest.approx(sk_metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_pixel_auroc_matches_sklearn_with_ties():
  rng = np.random.default_rng(2)
  masks = (rng.uniform(size=(4, 16, 16)) < 0.2).astype(np.uint8)
  maps = (np.round(rng.normal(size=masks.shape) + masks, 1)).astype(np.float32)
  expected = sk_metrics.roc_auc_score(masks.ravel(), maps.ravel())
  assert metrics.pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-12)
  assert metrics.pixel_auroc(maps.astype(np.float64), masks.astype(bool)) == pytest.approx(expected, abs=1e-12)


def test_auroc_undefined_or_bad_input_raises():
  with pytest.raises(ValueError, match="no anomalous images"):
    metrics.image_auroc([0.1, 0.2], [0, 0])
  with pytest.raises(ValueError, match="no normal images"):
    metrics.image_auroc([0.1, 0.2], [1, 1])
  with pytest.raises(ValueError, match="no anomalous pixels"):
    metrics.pixel_auroc(np.ones((2, 4, 4)), np.zeros((2, 4, 4)))
  with pytest.raises(ValueError, match="binary"):
    metrics.pixel_auroc(np.ones((1, 4, 4)), np.full((1, 4, 4), 255))
  with pytest.raises(ValueError, match="shape"):
    metrics.pixel_auroc(np.ones((1, 4, 4)), np.ones((1, 4, 5)))
  with pytest.raises(ValueError, match="NaN"):
    metrics.image_auroc([np.nan, 0.2], [0, 1])


def test_pro_published_matches_naive_loop():
  maps, masks, labels = hand_made_set()
  per_image, mean = metrics.pro_published(maps, masks, labels)
  expected = [naive_published_pro(maps[i], masks[i]) for i in np.flatnonzero(labels)]
  np.testing.assert_allclose(per_image, expected, rtol=0, atol=1e-12)
  assert mean == pytest.approx(np.mean(expected), abs=1e-12)
  # The data can tell 8- from 4-connectivity, so the comparison above does check it.
  assert abs(per_image[0] - naive_published_pro(maps[0], masks[0], connectivity=1)) > 1e-3


def test_pro_published_fpr_of_exactly_cutoff_is_dropped():
  # Thresholds 0, 1, …, 199; at 60 < t < 70 exactly 3 of the 10 normal pixels are above: FPR = 0.3, not kept.
  normal = np.arange(0, 100, 10)
  anomalous = np.array([200, 150, 95, 85, 45, 100, 75, 66, 30, 180])
  amap = np.concatenate([normal, anomalous]).reshape(4, 5).astype(float)
  mask = np.concatenate([np.zeros(10), np.ones(10)]).reshape(4, 5).astype(np.uint8)
  per_image, _ = metrics.pro_published(amap[None], mask[None], [1])
  assert per_image[0] == pytest.approx(naive_published_pro(amap, mask), abs=1e-12)


def test_pro_published_float32_maps_and_201_thresholds():
  # Find a range whose np.arange gives 201 thresholds, then put it in an image.
  rng = np.random.default_rng(3)
  for _ in range(10_000):
    low, high = rng.uniform(-1, 1), rng.uniform(1, 3)
    if len(np.arange(low, high, (high - low) / 200)) == 201:
      break
  else:
    pytest.fail("no 201-threshold range found")
  maps, masks, labels = hand_made_set()
  maps = maps.astype(np.float32)
  maps[0] = np.clip(maps[0], low, high)
  maps[0, 0, 0], maps[0, 0, 1] = low, high
  per_image, _ = metrics.pro_published(maps, masks, labels)
  expected = naive_published_pro(maps[0].astype(np.float64), masks[0])
  assert per_image[0] == pytest.approx(expected, abs=1e-12)


def test_pro_published_degenerate_images_are_nan():
  masks = np.zeros((3, 8, 8), np.uint8)
  masks[:, 2:4, 2:4] = 1
  maps = np.random.default_rng(4).uniform(size=masks.shape)
  maps[0] = masks[0]  # perfect: FPR is 0 at every threshold, the published normalisation is 0/0
  maps[2] = 0.5  # constant: no thresholds
  with pytest.warns(RuntimeWarning, match="image 0.*image 2"):
    per_image, mean = metrics.pro_published(maps, masks, [1, 1, 1])
  assert np.isnan(per_image[0]) and np.isnan(per_image[2]) and np.isfinite(per_image[1])
  assert np.isnan(mean)
  with pytest.raises(ValueError, match="masks are empty"):
    metrics.pro_published(maps, np.zeros_like(masks), [1, 0, 0])
  with pytest.raises(ValueError, match="no anomalous images"):
    metrics.pro_published(maps, masks, [0, 0, 0])


def test_aupro_matches_naive_loop():
  maps, masks, _ = hand_made_set()
  for fpr_limit in (0.3, 0.05, 1.0):
    assert metrics.aupro(maps, masks, fpr_limit) == pytest.approx(naive_aupro(maps, masks, fpr_limit), abs=1e-12)
  maps32 = maps.astype(np.float32)
  assert metrics.aupro(maps32, masks) == pytest.approx(naive_aupro(maps32, masks, 0.3), abs=1e-12)


def test_aupro_hand_computed():
  masks = np.zeros((2, 6, 6), np.uint8)
  masks[0, 1:3, 1:4] = 1
  masks[0, 4, 4] = 1
  assert metrics.aupro(masks.astype(float), masks) == pytest.approx(1.0, abs=1e-12)  # perfect
  assert metrics.aupro(1.0 - masks, masks) == pytest.approx(0.0, abs=1e-12)  # anti-correlated
  # Normals 0.95, 0.5, 0.1 and one anomalous pixel at 0.9: (0,0) → (1/3,0) → (1/3,1) → (2/3,1) → (1,1).
  one_map = np.array([[[0.95, 0.9, 0.5, 0.1]]])
  one_mask = np.array([[[0, 1, 0, 0]]])
  assert metrics.aupro(one_map, one_mask, 0.5) == pytest.approx((0.5 - 1 / 3) / 0.5, abs=1e-12)
  assert metrics.aupro(one_map, one_mask, 0.3) == pytest.approx(0.0, abs=1e-12)
  with pytest.raises(ValueError, match="no anomalous region"):
    metrics.aupro(one_map, np.zeros_like(one_mask))
  with pytest.raises(ValueError, match="fpr_limit"):
    metrics.aupro(one_map, one_mask, 0.0)


def test_subset_metrics_and_mean_over_subsets():
  maps, masks, labels = hand_made_set()
  scores = maps.reshape(len(maps), -1).max(axis=1)
  result = metrics.subset_metrics(maps, masks, labels, scores)
  assert set(result) == {"image_auroc", "pixel_auroc", "pro", "aupro"}
  assert result["pixel_auroc"] == pytest.approx(sk_metrics.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
  assert all(0.0 <= v <= 1.0 for v in result.values())
  no_masks = metrics.subset_metrics(None, None, labels, scores, has_masks=False)
  assert no_masks["pixel_auroc"] is None and no_masks["pro"] is None and no_masks["aupro"] is None
  mean = metrics.mean_over_subsets({"a": result, "b": no_masks})
  assert mean["image_auroc"] == pytest.approx(result["image_auroc"])
  assert mean["pro"] == pytest.approx(result["pro"])
  assert metrics.mean_over_subsets({"v1": no_masks})["aupro"] is None
