"""The report's pictures: heatmap overlays of chosen test images, and the image-score distributions per domain.

Matplotlib draws through its Agg canvas on `Figure` objects (no pyplot, so no global state and no display), and
every function returns PNG bytes: the report embeds them and writes them beside it.
"""

import dataclasses
import io
from typing import Mapping

import numpy as np
from matplotlib.backends import backend_agg
from matplotlib import figure as mpl_figure

from mmr_jax import metrics

GOOD = "good"
NORMAL_COLOUR, ANOMALOUS_COLOUR = "#2b7bba", "#d7301f"


@dataclasses.dataclass(frozen=True)
class Pick:
  """A test image chosen for an overlay, and why."""

  index: int  # In eval order.
  why: str  # "highest-scoring normal", "lowest-scoring ablation", "typical normal", ...


def pick_examples(scores: np.ndarray, kinds: np.ndarray, per_kind: int) -> list[Pick]:
  """Up to `per_kind` images of each kind (normal first, then the defect types by name), chosen from the scores
  so that the overlays show where the model is wrong as well as where it is typical: for normal images the
  highest-scoring ones (the false-positive candidates), for each defect type the lowest-scoring ones (the
  misses), alternating with the kind's median image. Deterministic: ties are broken by eval order."""
  picks = []
  for kind in sorted(set(kinds.tolist()), key=lambda k: (k != GOOD, k)):
    members = np.flatnonzero(kinds == kind)
    normal = kind == GOOD
    # Worst first: normals by descending score, defects by ascending score (stable, so ties keep eval order).
    order = members[np.argsort(-scores[members] if normal else scores[members], kind="stable")]
    label = "normal" if normal else kind
    extreme = f"{'highest' if normal else 'lowest'}-scoring {label}"
    candidates = [(order[0], extreme), (order[len(order) // 2], f"typical {label}")]
    candidates += [(index, extreme) for index in order[1:]]
    chosen: dict[int, str] = {}
    for index, why in candidates:
      if len(chosen) == per_kind:
        break
      chosen.setdefault(int(index), why)
    picks += [Pick(index, why) for index, why in chosen.items()]
  return picks


def overlay(image: np.ndarray, mask: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, title: str) -> bytes:
  """[image | ground truth | anomaly map over the image] with the run's colour scale printed beside it."""
  fig = mpl_figure.Figure(figsize=(7.8, 2.7), dpi=100, layout="constrained")
  axes = fig.subplots(1, 3)
  axes[0].imshow(image)
  axes[0].set_title("image", fontsize=9)
  axes[1].imshow(mask > 0, cmap="gray", vmin=0, vmax=1)
  axes[1].set_title("ground truth", fontsize=9)
  axes[2].imshow(image)
  heat = axes[2].imshow(amap, cmap="jet", vmin=vmin, vmax=vmax, alpha=0.5)
  axes[2].set_title("anomaly map", fontsize=9)
  for ax in axes:
    ax.set_axis_off()
  fig.colorbar(heat, ax=axes[2], fraction=0.05, pad=0.02).ax.tick_params(labelsize=7)
  fig.suptitle(title, fontsize=9)
  return _png(fig)


def prediction_overlay(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, title: str) -> bytes:
  """[image | anomaly map over the image] for an image without ground truth (predict.py)."""
  fig = mpl_figure.Figure(figsize=(5.4, 2.7), dpi=100, layout="constrained")
  axes = fig.subplots(1, 2)
  axes[0].imshow(image)
  axes[1].imshow(image)
  heat = axes[1].imshow(amap, cmap="jet", vmin=vmin, vmax=vmax, alpha=0.5)
  for ax in axes:
    ax.set_axis_off()
  fig.colorbar(heat, ax=axes[1], fraction=0.05, pad=0.02).ax.tick_params(labelsize=7)
  fig.suptitle(title, fontsize=8)
  return _png(fig)


def score_distributions(per_subset: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
  """One row per subset: the image scores of normal and anomalous images (histograms on one set of bins for the
  whole run) and the ROC curve with its AUROC."""
  every = np.concatenate([scores for scores, _ in per_subset.values()])
  bins = np.linspace(every.min(), every.max(), 31) if every.max() > every.min() else 10
  fig = mpl_figure.Figure(figsize=(9, 2.6 * len(per_subset)), dpi=100, layout="constrained")
  axes = np.asarray(fig.subplots(len(per_subset), 2, squeeze=False))
  for (subset, (scores, labels)), (hist, roc) in zip(per_subset.items(), axes):
    labels = labels.astype(bool)
    hist.hist(scores[~labels], bins=bins, color=NORMAL_COLOUR, alpha=0.6, label=f"normal ({(~labels).sum()})")
    hist.hist(scores[labels], bins=bins, color=ANOMALOUS_COLOUR, alpha=0.6, label=f"anomalous ({labels.sum()})")
    hist.set_title(f"{subset}: image scores", fontsize=10)
    hist.set_xlabel("image score (maximum of the map)", fontsize=8)
    hist.legend(fontsize=8)
    if labels.all() or not labels.any():
      roc.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center", fontsize=9)
    else:
      fpr, tpr = metrics.roc_curve(scores, labels)
      roc.plot(fpr, tpr, color=ANOMALOUS_COLOUR)
      roc.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
      roc.set_title(f"{subset}: ROC, image AUROC {100 * metrics.image_auroc(scores, labels):.1f}", fontsize=10)
    roc.set_xlabel("false positive rate", fontsize=8)
    roc.set_ylabel("true positive rate", fontsize=8)
    roc.set_aspect("equal")
  return _png(fig)


def domains_side_by_side(
  per_subset: Mapping[str, tuple[np.ndarray, np.ndarray]],
  thresholds: Mapping[str, float] | None = None,
  title: str = "",
) -> bytes:
  """Every subset's image scores on one axis, normal and anomalous side by side: under a domain shift the
  normal images' scores rise towards the defects', which is the picture of MMR's claim. `thresholds` (per subset)
  are drawn dashed across their subset's columns, so that one sees whether a threshold travels."""
  fig = mpl_figure.Figure(figsize=(max(5.0, 1.6 * len(per_subset) + 2), 4.2), dpi=100, layout="constrained")
  ax = fig.subplots()
  rng = np.random.default_rng(0)  # Horizontal jitter only, fixed so that the picture is the same every time.
  for position, (subset, (scores, labels)) in enumerate(per_subset.items()):
    labels = labels.astype(bool)
    for offset, chosen, colour in ((-0.17, ~labels, NORMAL_COLOUR), (0.17, labels, ANOMALOUS_COLOUR)):
      values = scores[chosen]
      ax.scatter(
        position + offset + rng.uniform(-0.1, 0.1, values.size), values, s=12, color=colour, alpha=0.6, linewidths=0
      )
      if values.size:
        ax.hlines(np.median(values), position + offset - 0.13, position + offset + 0.13, color="black")
    if thresholds and subset in thresholds:
      ax.hlines(thresholds[subset], position - 0.4, position + 0.4, color="0.3", linestyles="--", linewidth=1.2)
  ax.set_xticks(range(len(per_subset)), list(per_subset))
  ax.set_ylabel("image score")
  dashed = "; dashed: the decision threshold" if thresholds else ""
  ax.set_title(f"normal (blue), anomalous (red); bars: medians{dashed}{title}", fontsize=10)
  return _png(fig)


def _png(fig: mpl_figure.Figure) -> bytes:
  backend_agg.FigureCanvasAgg(fig)
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  return buffer.getvalue()


def _study_value(text: str) -> float | str:
  try:
    return float(text)
  except ValueError:
    return text


def study_against_compute(rows: list[dict], keys: list[str], metrics: tuple[str, ...]) -> bytes:
  """A scaling study's points: each metric (mean over the subsets; error bars: std over the seeds) against the
  training compute of one seed, on a log axis; each point labelled with its varied values."""
  fig = mpl_figure.Figure(figsize=(4.6 * len(metrics), 4.0), dpi=100, layout="constrained")
  axes = np.atleast_1d(fig.subplots(1, len(metrics)))
  for ax, metric in zip(axes, metrics):
    for row in rows:
      x, y = row.get("train_pflop_per_seed"), row.get(f"{metric}/mean")
      if x is None or y is None:
        continue
      ax.errorbar(x * 1e3, 100 * y, yerr=100 * (row.get(f"{metric}/mean_std") or 0.0), fmt="o", capsize=3)
      label = ", ".join(f"{key.rsplit('.', 1)[-1]}={row[key]}" for key in keys)
      ax.annotate(label, (x * 1e3, 100 * y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("training compute per seed (TFLOP)")
    ax.set_ylabel(f"{metric.replace('_', ' ')}, mean over subsets (%)")
    ax.grid(alpha=0.3)
  fig.suptitle("detection against training compute (error bars: std over seeds)", fontsize=10)
  return _png(fig)


def study_against_key(rows: list[dict], keys: list[str], key: str, metrics: tuple[str, ...]) -> bytes:
  """Each metric (mean over the subsets ± std over seeds) against one varied key, one line per combination of the
  other varied keys' values."""
  others = [other for other in keys if other != key]
  fig = mpl_figure.Figure(figsize=(4.6 * len(metrics), 4.0), dpi=100, layout="constrained")
  axes = np.atleast_1d(fig.subplots(1, len(metrics)))
  values = list(dict.fromkeys(row[key] for row in rows))
  numeric = all(isinstance(_study_value(v), float) for v in values)
  position = {v: (_study_value(v) if numeric else i) for i, v in enumerate(values)}
  for ax, metric in zip(axes, metrics):
    lines = {}
    for row in rows:
      lines.setdefault(tuple(row[other] for other in others), []).append(row)
    for line, members in lines.items():
      members = sorted((m for m in members if m.get(f"{metric}/mean") is not None), key=lambda m: position[m[key]])
      if not members:
        continue
      label = ", ".join(f"{other.rsplit('.', 1)[-1]}={v}" for other, v in zip(others, line)) or None
      ax.errorbar(
        [position[m[key]] for m in members],
        [100 * m[f"{metric}/mean"] for m in members],
        yerr=[100 * (m.get(f"{metric}/mean_std") or 0.0) for m in members],
        marker="o",
        capsize=3,
        label=label,
      )
    if not numeric:
      ax.set_xticks(range(len(values)), values)
    ax.set_xlabel(key)
    ax.set_ylabel(f"{metric.replace('_', ' ')}, mean over subsets (%)")
    ax.grid(alpha=0.3)
    if others:
      ax.legend(fontsize=7)
  fig.suptitle(f"detection against {key} (error bars: std over seeds)", fontsize=10)
  return _png(fig)
