"""WORKDIR/report.html: one self-contained page per run (the results table, the score distributions per domain,
heatmap overlays of every kind of test image, the config, the command and the software versions).

The figures are embedded as data URIs, so the page opens anywhere without a server or its folder; the same PNGs
are written to WORKDIR/heatmaps/<subset>/ and WORKDIR/figures/ for use elsewhere. With K seeds the table is the
mean ± std and the figures are the first seed's.
"""

import base64
import dataclasses
import html
import importlib.metadata
import json
import pathlib
import platform
import shlex
import sys
from typing import Sequence

import jax
import ml_collections
import numpy as np

from mmr_jax import calibration
from mmr_jax import figures
from mmr_jax import files
from mmr_jax import reports
from mmr_jax import scoring
from mmr_jax.data import pipeline

PACKAGES = (
  "mmr_jax",
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "numpy",
  "tensorflow",
  "tensorflow-datasets",
  "scikit-image",
  "matplotlib",
)


@dataclasses.dataclass
class _Overlay:
  subset: str
  name: str
  title: str
  image: np.ndarray
  mask: np.ndarray
  amap: np.ndarray


@dataclasses.dataclass
class _View:
  """What the page shows of one way of scoring the test sets: as trained, or adapted to each subset."""

  title: str  # "" or " (adapted)"
  heatmaps: str  # The folder of its overlays' PNGs.
  scores: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
  thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
  overlays: list[_Overlay] = dataclasses.field(default_factory=list)
  map_range: tuple[float, float] = (np.inf, -np.inf)


class Report:
  """Collects what the page shows while the evaluation scores one subset after another (seed 0 only, and of its
  maps only those overlaid), then writes the page."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.views = [_View("", files.HEATMAPS), _View(" (adapted)", files.HEATMAPS_ADAPTED)]

  def add(
    self,
    subset: str,
    predictions: scoring.Predictions,
    calibrations: Sequence[calibration.Calibration] | None = None,
    adapted: scoring.Predictions | None = None,
    adapted_thresholds: Sequence[calibration.Calibration] | None = None,
  ) -> None:
    """One subset's maps as trained, with the run's calibration; and adapted, with the adaptation's thresholds."""
    self._add(self.views[0], subset, predictions, calibrations)
    if adapted is not None:
      self._add(self.views[1], subset, adapted, adapted_thresholds)

  def _add(
    self,
    view: _View,
    subset: str,
    predictions: scoring.Predictions,
    calibrations: Sequence[calibration.Calibration] | None,
  ) -> None:
    maps, scores = predictions.maps[0], predictions.scores[0]
    view.scores[subset] = (scores, predictions.labels)
    if calibrations:
      view.thresholds[subset] = calibrations[0].threshold
    view.map_range = (min(view.map_range[0], float(maps.min())), max(view.map_range[1], float(maps.max())))
    picks = figures.pick_examples(scores, predictions.kinds, self.config.eval.heatmaps_per_kind)
    if not picks:
      return
    images = pipeline.test_images(self.config, subset, [int(predictions.position(p.index)) for p in picks])
    for pick, image in zip(picks, images):
      label = "anomalous" if predictions.labels[pick.index] else "normal"
      name = str(predictions.names[pick.index])
      view.overlays.append(
        _Overlay(
          subset,
          name,
          f"{subset} · {name} · {label} · score {scores[pick.index]:.3f} · {pick.why}",
          image,
          predictions.masks[pick.index],
          maps[pick.index],
        )
      )

  def write(
    self, directory: pathlib.Path, seeds: Sequence[int], per_seed: Sequence[reports.Results], header: str
  ) -> pathlib.Path:
    """Writes the PNGs and report.html into `directory` (the workdir, or evaluate.py's --out)."""
    top, std = reports.over_seeds([reports.with_mean(r) for r in per_seed])
    first = f" (seed {seeds[0]})" if len(seeds) > 1 else ""
    note = reports.adaptation_note(top)
    sections = [
      f"<h1>{html.escape(header)}</h1>",
      f"<p>{html.escape(reports.seeds_text(seeds))}.</p>",
      _html_table(top, std),
    ] + ([f"<p>{html.escape(note)}</p>"] if note else [])
    for view in self.views:
      if view.scores:
        sections += self._scores_section(view, directory, first)
    for view in self.views:
      if view.overlays:
        sections += self._heatmaps_section(view, directory, first)
    sections += [
      "<h2>Config</h2>",
      f"<pre>{html.escape(json.dumps(self.config.to_dict(), indent=2, default=str))}</pre>",
      "<h2>Written by</h2>",
      f"<pre>{html.escape(_command())}</pre>",
      "<h2>Software</h2>",
      _versions_table(),
    ]
    return files.write_atomic(directory / files.REPORT, page(header, "\n".join(sections)))

  def _scores_section(self, view: _View, directory: pathlib.Path, first: str) -> list[str]:
    suffix = "_adapted" if view.title else ""
    plots = {
      f"domains{suffix}.png": (
        figures.domains_side_by_side(view.scores, view.thresholds, view.title),
        f"image scores per domain{view.title}",
      ),
      f"score_distributions{suffix}.png": (
        figures.score_distributions(view.scores),
        f"score distributions and ROC curves per subset{view.title}",
      ),
    }
    for name, (png, _) in plots.items():
      files.write_atomic(directory / files.FIGURES / name, png)
    what = (
      "dashed: each subset's threshold from its own shots"
      if view.title
      else "dashed: the threshold calibrated on the held-out normal training images"
    )
    return [
      f"<h2>Image scores per domain{html.escape(view.title)}{first}</h2>",
      f"<p>{what}.</p>" if view.thresholds else "",
      *(image_tag(png, alt) for png, alt in plots.values()),
    ]

  def _heatmaps_section(self, view: _View, directory: pathlib.Path, first: str) -> list[str]:
    vmin, vmax = view.map_range
    sections = [
      f"<h2>Heatmaps{html.escape(view.title)}{first}</h2><p>Per subset, a few images of each kind: the "
      f"highest-scoring normal images (false-positive candidates), the lowest-scoring of each defect type (the "
      f"misses) and typical ones. One colour scale for the whole run{view.title and ', adapted'}: {vmin:.3f} (blue) "
      f"to {vmax:.3f} (red).</p>"
    ]
    for subset in view.scores:
      chosen = [o for o in view.overlays if o.subset == subset]
      if chosen:
        sections.append(f"<h3>{html.escape(subset)}</h3>")
      for item in chosen:
        png = figures.overlay(item.image, item.mask, item.amap, vmin, vmax, item.title)
        name = item.name.replace("/", "__").rsplit(".", 1)[0] + ".png"
        files.write_atomic(directory / view.heatmaps / subset / name, png)
        sections.append(image_tag(png, item.title))
    return sections


def _html_table(results: reports.Results, std) -> str:
  head = "".join(f"<th>{html.escape(subset)}</th>" for subset in results)
  rows = "".join(
    f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    for label, cells in reports.table_cells(results, std)
  )
  return f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"


def image_tag(png: bytes, alt: str) -> str:
  """An <img> with the PNG inside (a data URI): the page needs no folder beside it."""
  return f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(alt)}"></figure>'


def _command() -> str:
  return shlex.join([pathlib.Path(sys.executable).name, *sys.argv])


def _versions_table() -> str:
  rows = [
    ("python", platform.python_version()),
    ("platform", platform.platform()),
    ("devices", ", ".join(sorted({d.device_kind for d in jax.devices()})) + f" × {jax.device_count()}"),
  ]
  for package in PACKAGES:
    try:
      rows.append((package, importlib.metadata.version(package)))
    except importlib.metadata.PackageNotFoundError:
      rows.append((package, "not installed"))
  return (
    "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows) + "</table>"
  )


def page(title: str, body: str) -> str:
  """A self-contained HTML page in the report's style (report.html, study.html)."""
  return _PAGE.format(title=html.escape(title), body=body)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th {{ background: #f4f4f4; }}
figure {{ margin: 0.5em 0; }}
img {{ max-width: 100%; }}
pre {{ background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }}
</style></head>
<body>
{body}
</body></html>
"""
