"""Scaling studies: how detection scales with the student, the images, the epochs or the data, against compute, over
seeds. A study is a grid of ordinary runs (`python -m mmr_jax study --config=FILE --grid=KEY=v1,v2 ... --workdir=DIR`):

- every grid point is a run in its own sub-workdir, DIR/<key=value,...>, trained with all its seeds in one program
  (config.num_seeds); so a point resumes after a kill, refuses a changed config and is skipped once finished, as any
  run is, and rerunning a killed study completes it without retraining what is done;
- `--points=i/n` takes every n-th point from the i-th: n machines (or hosts) share a study, each with its own i,
  into one DIR on a shared disk (or copy the point folders together before the last collect);
- each invocation ends by collecting every finished point into DIR/study.csv and drawing DIR/study.html with its
  PNGs: detection against training compute and against each varied key, error bars from the seeds.

Grid values are parsed as the key's type in the config (int, float, bool, str; a tuple as `a;b`). `model.vit=Ti,S,B`
names encoder sizes (`SIZES`), setting width, depth and heads; a `model.vit.*` key given beside it applies on top.
A point that varies data.image_size and not data.resize_size keeps the base config's resize-to-crop ratio (the
published 256/224), so that every size sees the same field of view at test time.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import itertools
import json
import logging
import math
import pathlib
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from mmr_jax import config as config_lib
from mmr_jax import errors
from mmr_jax import experiment
from mmr_jax import figures
from mmr_jax import files
from mmr_jax import report_page
from mmr_jax import reports
from mmr_jax import scoring
from mmr_jax.benchmark import flops
from mmr_jax.models import vit
from mmr_jax.training import sharding

SIZES_KEY = "model.vit"
METRICS = ("image_auroc", "pixel_auroc", "pro")
RECORD = "study_point.json"  # In each point's workdir: the study's own measurements (wall time).
TABLE, PAGE = "study.csv", "study.html"


class StudyError(errors.UserError):
  """A grid, a point share or a point's config that cannot work (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Point:
  """One grid point: (key, value as given) in the grid's order."""

  values: tuple[tuple[str, str], ...]

  @property
  def name(self) -> str:
    """Its sub-workdir's name, e.g. "model.vit.depth=2,data.image_size=128"."""
    return ",".join(f"{key}={value}" for key, value in self.values) or "base"


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
  """--grid=KEY=v1,v2 arguments → [(key, [values])], in the order given."""
  grid = []
  for spec in specs:
    key, sep, values = spec.partition("=")
    items = [v.strip() for v in values.split(",")]
    if not sep or not key or not all(items):
      raise StudyError(f"--grid={spec!r}: write KEY=v1,v2,... such as --grid=model.vit.depth=1,2,4")
    if any(key == other for other, _ in grid):
      raise StudyError(f"--grid names {key} twice: give its values once, comma-separated")
    if any("/" in item or "," in item for item in items):
      raise StudyError(f"--grid={spec!r}: values may not contain '/'")
    grid.append((key, items))
  return grid


def grid_points(grid: Sequence[tuple[str, Sequence[str]]]) -> list[Point]:
  """Every combination of the grid's values, the last key varying fastest."""
  keys = [key for key, _ in grid]
  return [Point(tuple(zip(keys, combination))) for combination in itertools.product(*(v for _, v in grid))]


def share(points: Sequence[Point], spec: str | None) -> list[Point]:
  """--points=i/n: every n-th point from the i-th (0 ≤ i < n); all points without it."""
  if not spec:
    return list(points)
  try:
    index, count = (int(part) for part in spec.split("/"))
  except ValueError:
    raise StudyError(f"--points must be i/n, such as 0/4 for the first of 4 machines, got {spec!r}") from None
  if not 0 <= index < count:
    raise StudyError(f"--points={spec}: i must lie in [0, n)")
  return list(points[index::count])


def _parse_like(current: Any, text: str, key: str) -> Any:
  """`text` as a value of `current`'s type (the config's own value for the key)."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, tuple):
      kind = type(current[0]) if current else str
      return tuple(_parse_like(kind(), part, key) if kind is not str else part for part in text.split(";"))
  except ValueError:
    raise StudyError(
      f"--grid: {key}={text!r} is not a {type(current).__name__} like the config's {current!r}"
    ) from None
  return text


def point_config(base: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
  """The base config with the point's values applied (named encoder sizes first), validated."""
  config = ml_collections.ConfigDict(base.to_dict())
  ordered = sorted(point.values, key=lambda item: item[0] != SIZES_KEY)
  for key, text in ordered:
    if key == SIZES_KEY:
      if text not in vit.SIZES:
        raise StudyError(f"--grid: {SIZES_KEY}={text} is not a named size; choose from {', '.join(vit.SIZES)}")
      config.model.vit.size = text
      config.model.vit.update(vit.SIZES[text])
      continue
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      if parent not in node or not isinstance(node[parent], ml_collections.ConfigDict):
        raise StudyError(f"--grid: the config has no key {key}")
      node = node[parent]
    if leaf not in node or isinstance(node[leaf], ml_collections.ConfigDict):
      raise StudyError(f"--grid: the config has no key {key}")
    node[leaf] = _parse_like(node[leaf], text, key)
  varied = {key for key, _ in point.values}
  if "data.image_size" in varied and "data.resize_size" not in varied:
    config.data.resize_size = round(config.data.image_size * base.data.resize_size / base.data.image_size)
  try:
    return config_lib.validate(config)
  except config_lib.ConfigError as error:
    raise StudyError(f"grid point {point.name}: {error}") from None


def run(
  base: ml_collections.ConfigDict, grid: Sequence[tuple[str, Sequence[str]]], workdir: pathlib.Path, points: str | None
) -> list[dict]:
  """Trains this invocation's share of the grid's points (each as `experiment.train` does), then collects every
  finished point of the study; returns the rows of study.csv."""
  every = grid_points(grid)
  configs = {point: point_config(base, point) for point in every}  # Every bad value now, before any training.
  files.check_folder(workdir, "--workdir")
  mine = share(every, points)
  for number, point in enumerate(mine, 1):
    logging.warning("study point %d of %d here (%d in all): %s", number, len(mine), len(every), point.name)
    point_dir = workdir / point.name
    done_before = _finished(point_dir, configs[point]) is not None
    start = time.perf_counter()
    experiment.train(configs[point], point_dir)  # A finished point returns at once (its record checked).
    if not done_before and jax.process_index() == 0:  # Hosts of a multi-host run share the folder: one writes.
      _add_wall_time(point_dir, time.perf_counter() - start)
  rows = collect(configs, [key for key, _ in grid], workdir)
  if jax.process_index() == 0:
    write_table(rows, [key for key, _ in grid], workdir / TABLE)
    write_page(rows, [key for key, _ in grid], workdir, base)
  return rows


def _add_wall_time(point_dir: pathlib.Path, seconds: float) -> None:
  """The study's wall time on a point, added over invocations (a resumed point counts both parts)."""
  path = point_dir / RECORD
  before = json.loads(path.read_text()).get("wall_seconds", 0.0) if path.exists() else 0.0
  files.write_json(path, {"wall_seconds": before + seconds})


def _finished(point_dir: pathlib.Path, config: ml_collections.ConfigDict) -> dict | None:
  """{seed: results} of a point whose run is finished and evaluated, else None."""
  try:
    return {
      seed: json.loads(files.seed_results(point_dir, seed, config.num_seeds).read_text())
      for seed in config_lib.seeds_of(config)
    }
  except (OSError, ValueError):
    return None


def _epochs(point_dir: pathlib.Path) -> list[dict]:
  """The point's per-epoch records (metrics.jsonl: seconds, images/s, step at its end)."""
  path = point_dir / files.METRICS
  lines = path.read_text().splitlines() if path.exists() else []
  return [json.loads(line) for line in lines if '"epoch_seconds"' in line]


def parameter_count(config: ml_collections.ConfigDict) -> int:
  """The student's parameters (one seed), from its shapes alone."""
  with config.unlocked():
    one = ml_collections.ConfigDict(config.to_dict())
    one.num_seeds = 1
  shapes = scoring.Scorer(config_lib.validate(one), mesh=sharding.make_mesh(1)).abstract_params()
  return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes)))


def collect(configs: dict[Point, ml_collections.ConfigDict], keys: Sequence[str], workdir: pathlib.Path) -> list[dict]:
  """One row per finished point: its varied values, size and compute, speed, and the metrics per subset and mean
  as mean and std over its seeds."""
  rows = []
  for point, config in configs.items():
    point_dir = workdir / point.name
    per_seed = _finished(point_dir, config)
    if per_seed is None:
      continue
    per_image = flops.analytic_flops(config)
    epochs = _epochs(point_dir)
    record = json.loads((point_dir / RECORD).read_text()) if (point_dir / RECORD).exists() else {}
    row = {"point": point.name, **dict(point.values), "num_seeds": config.num_seeds}
    row["parameters"] = parameter_count(config)
    row["train_gflop_per_image"] = per_image["train"] / 1e9
    row["test_gflop_per_image"] = per_image["infer"] / 1e9
    # Training compute of one seed: every image of every step, the padding rows of an epoch's last batch included.
    steps_per_epoch = epochs[0]["step"] // (epochs[0]["epoch"] + 1) if epochs else None
    images_trained = None if steps_per_epoch is None else steps_per_epoch * config.batch_size * config.num_epochs
    row["train_pflop_per_seed"] = None if images_trained is None else per_image["train"] * images_trained / 1e15
    # The median epoch's rate (the first epoch's includes compilation), all seeds' images counted.
    row["train_images_per_second"] = float(np.median([e["images_per_second"] for e in epochs])) if epochs else None
    row["train_seconds"] = float(sum(e["epoch_seconds"] for e in epochs)) if epochs else None
    row["wall_seconds"] = record.get("wall_seconds")  # The study's own clock: train + evaluate (+ compile).
    mean, std = reports.mean_and_std(list(per_seed.values()))
    for metric in METRICS:
      for subset in mean:
        row[f"{metric}/{subset}"] = mean[subset].get(metric)
        row[f"{metric}/{subset}_std"] = std[subset].get(metric)
    rows.append(row)
  return rows


def write_table(rows: list[dict], keys: Sequence[str], path: pathlib.Path) -> None:
  columns = list(dict.fromkeys(column for row in rows for column in row)) or ["point", *keys]
  text = io.StringIO()
  writer = csv.DictWriter(text, columns, lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  files.write_atomic(path, text.getvalue())


def write_page(rows: list[dict], keys: Sequence[str], workdir: pathlib.Path, base: ml_collections.ConfigDict) -> None:
  """study.html: the figures (also in DIR/figures/) and the table."""
  sections = [f"<h1>Scaling study: {html.escape(', '.join(keys) or 'one point')}</h1>"]
  if rows:
    plots = {"compute.png": figures.study_against_compute(rows, keys, METRICS)}
    for key in keys:
      if len({row[key] for row in rows}) > 1:
        plots[f"by_{key}.png"] = figures.study_against_key(rows, keys, key, METRICS)
    for name, png in plots.items():
      files.write_atomic(workdir / files.FIGURES / name, png)
      sections.append(report_page.image_tag(png, name))
  else:
    sections.append("<p>No point has finished yet.</p>")
  head = "".join(f"<th>{html.escape(column)}</th>" for column in (rows[0] if rows else {}))
  body = "".join(
    "<tr>" + "".join(f"<td>{html.escape(_cell(value))}</td>" for value in row.values()) + "</tr>" for row in rows
  )
  sections.append(f"<table><tr>{head}</tr>{body}</table>")
  sections.append(f"<h2>Base config</h2><pre>{html.escape(json.dumps(base.to_dict(), indent=2, default=str))}</pre>")
  files.write_atomic(workdir / PAGE, report_page.page("Scaling study", "\n".join(sections)))


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return "" if value is None else str(value)
