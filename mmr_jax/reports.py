"""What a run leaves for people: results.json and a results.md table laid out like the paper's (the figures and
report.html: mmr_jax/report_page.py).

With eval.adapt_shots = K each subset's row also holds an "adapted" row of the same metrics: the model adapted to
the subset from K of its normal images (mmr_jax/adaptation.py), scored on the same remaining images; the tables
then show both side by side, unadapted → adapted."""

import math
import pathlib
from typing import Mapping, Optional, Sequence

import numpy as np

from mmr_jax import files
from mmr_jax import metrics

METRIC_NAMES = {
  "image_auroc": "Image AUROC",
  "pixel_auroc": "Pixel AUROC",
  "pro": "PRO (published)",
  "aupro": "AUPRO@0.3",
}
# How a decision threshold fares (metrics.decisions_at): shown where the results have one (a calibrated run, or an
# adapted one, whose threshold comes from its shots).
DECISION_NAMES = {"fpr_at_threshold": "FPR at the threshold", "tpr_at_threshold": "TPR at the threshold"}
ADAPTED = "adapted"  # The key of a row's adapted metrics.
Results = Mapping[str, Mapping[str, Optional[float]]]
# The published evaluation returns image AUROC and PRO rounded to 3 decimals per subset, and the paper's means are
# means of those (docs/spec.md §8). results.json keeps the raw values and adds these as "<metric>_rounded".
PUBLISHED_ROUNDING = ("image_auroc", "pro")


def published_rounding(row: Mapping[str, Optional[float]]) -> dict:
  """`row` plus "<metric>_rounded" for PUBLISHED_ROUNDING: NumPy's round to 3 decimals (round half to even after
  ×1000), which is what `round()` does to the np.float64 that its sklearn 0.24 and np.mean return: 0.8445 → 0.844,
  where Python's round of a float gives 0.845."""
  rounded = {
    f"{name}_rounded": float(np.round(np.float64(row[name]), 3))
    for name in PUBLISHED_ROUNDING
    if row.get(name) is not None
  }
  adapted = {ADAPTED: published_rounding(row[ADAPTED])} if ADAPTED in row else {}
  return {**row, **rounded, **adapted}


def with_mean(per_subset: Results) -> dict:
  """{subset: metrics with the published rounding} plus "mean": the plain mean over subsets (the paper's "Mean"
  column; for the rounded metrics, the mean of the rounded values, as the paper's), the adapted rows' alike."""
  rows = {subset: published_rounding(row) for subset, row in per_subset.items()}
  return {**rows, "mean": _mean_row(rows)}


def _mean_row(rows: Results) -> dict:
  scalars = {subset: {k: v for k, v in row.items() if k != ADAPTED} for subset, row in rows.items()}
  mean = metrics.mean_over_subsets(scalars)
  if all(ADAPTED in row for row in rows.values()):
    mean[ADAPTED] = metrics.mean_over_subsets({subset: row[ADAPTED] for subset, row in rows.items()})
  return mean


def mean_and_std(runs: Sequence[Results]) -> tuple[dict, dict]:
  """Per subset and metric, the mean and the sample std (ddof=1, as for the paper's ± over 5 runs); the adapted
  rows' alike."""
  mean, std = {}, {}
  for subset in runs[0]:
    mean[subset], std[subset] = _row_mean_and_std([run[subset] for run in runs])
  return mean, std


def _row_mean_and_std(rows: Sequence[Mapping]) -> tuple[dict, dict]:
  mean, std = {}, {}
  for metric in rows[0]:
    values = [row[metric] for row in rows]
    if metric == ADAPTED:
      mean[metric], std[metric] = _row_mean_and_std(values)
    elif any(v is None for v in values):
      mean[metric] = std[metric] = None
    else:
      mean[metric] = float(np.mean(values))
      std[metric] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return mean, std


def _cell(row: Mapping, std_row: Optional[Mapping], metric: str) -> str:
  key = f"{metric}_rounded" if f"{metric}_rounded" in row else metric
  value = row.get(key)
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "–"
  if std_row is not None and std_row.get(key) is not None:
    return f"{100 * value:.1f} ± {100 * std_row[key]:.1f}"
  return f"{100 * value:.1f}"


def table_cells(results: Results, std: Optional[Results] = None) -> list[tuple[str, list[str]]]:
  """(metric label, one cell per subset then Mean) for each metric: values in % with one decimal (and ± std when
  given). Image AUROC and PRO show the published rounding where results carry it, so the table reads as the
  paper's. Adapted results show as "unadapted → adapted"; FPR and TPR at the threshold are added where a threshold
  was set."""
  names = dict(METRIC_NAMES)
  if any("fpr_at_threshold" in row or "fpr_at_threshold" in row.get(ADAPTED, {}) for row in results.values()):
    names.update(DECISION_NAMES)
  rows = []
  for metric, label in names.items():
    cells = []
    for subset, row in results.items():
      std_row = None if std is None else std[subset]
      cell = _cell(row, std_row, metric)
      if ADAPTED in row:
        cell += " → " + _cell(row[ADAPTED], None if std_row is None else std_row.get(ADAPTED), metric)
      cells.append(cell)
    rows.append((label, cells))
  return rows


def over_seeds(per_seed: Sequence[Results]) -> tuple[dict, Optional[dict]]:
  """The table a run reports from its seeds' results (already with_mean): one seed's as they are, no std; K
  seeds' mean and std."""
  return (dict(per_seed[0]), None) if len(per_seed) == 1 else mean_and_std(per_seed)


def markdown_table(results: Results, std: Optional[Results] = None, title: str = "") -> str:
  """Rows = metrics, columns = subsets then Mean (see table_cells)."""
  lines = [f"### {title}", ""] if title else []
  lines.append("| metric | " + " | ".join(results) + " |")
  lines.append("|---|" + "---|" * len(results))
  lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in table_cells(results, std)]
  note = adaptation_note(results)
  return "\n".join(lines + ([f"\n{note}"] if note else [])) + "\n"


def adaptation_note(results: Results) -> str:
  """What "unadapted → adapted" means in a table of adapted results; "" for others."""
  shots = {row.get(ADAPTED, {}).get("shots") for row in results.values()} - {None}
  if not shots:
    return ""
  return (
    f"unadapted → adapted: {', '.join(f'{s:g}' for s in sorted(shots))} normal test images of each subset adapt the "
    f"model to it (eval.adapt_shots) and are left out of both; the adapted threshold comes from them alone."
  )


def seeds_text(seeds: Sequence[int]) -> str:
  return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± std over seeds {', '.join(map(str, seeds))}"


def write_results(workdir: pathlib.Path, seeds: Sequence[int], per_seed: Sequence[Results], header: str = "") -> dict:
  """Writes results.json and results.md. One seed: its results. K seeds: each under seed_<s>/results.json,
  and at the top the mean over seeds (results.json) and mean ± std (results.md). Returns the top-level dict."""
  per_seed = [with_mean(r) for r in per_seed]
  if len(per_seed) > 1:
    for seed, results in zip(seeds, per_seed):
      files.write_json(files.seed_results(workdir, seed, len(seeds)), results)
  top, std = over_seeds(per_seed)
  files.write_json(workdir / files.RESULTS, top)
  files.write_atomic(
    workdir / files.RESULTS_TABLE, markdown_table(top, std, title=f"{header} ({seeds_text(seeds)})".strip())
  )
  return top
