"""Checks a dataset on disk before a run: counts, decodability, masks. Exits 0 only if a run can use it.

    python -m mmr_jax.data.check --config=configs/aebad_s.py --config.data.root=DIR
    python -m mmr_jax.data.check --config=configs/aebad_v.py --config.data.root=DIR
    python -m mmr_jax.data.check --config=configs/mvtec.py --config.data.root=DIR

Prints the number of images per split, subset and label, the non-image files skipped (macOS `._*` and the
like), and every problem with its path: a file that does not decode, a missing or mismatched mask, a missing
folder, an empty split. It reads the folders (the manual download) even when config.data.use_tfds is set,
since that is what the TFDS builders read.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import sys
from collections.abc import Callable

import ml_collections
from absl import app
from ml_collections import config_flags

from mmr_jax.data import layouts
from mmr_jax.data import sources
from mmr_jax.data.layouts import DatasetError

_MAX_LISTED = 5


@dataclasses.dataclass
class SplitReport:
  title: str
  images: int = 0
  usable: int = 0
  counts: dict[str, int] = dataclasses.field(default_factory=dict)  # By label.
  skipped: list[str] = dataclasses.field(default_factory=list)
  problems: list[str] = dataclasses.field(default_factory=list)
  empty_masks: list[str] = dataclasses.field(default_factory=list)
  types: dict[str, int] = dataclasses.field(default_factory=dict)  # Anomalous images by defect type.


def _inspect(example: layouts.Example) -> tuple[str | None, bool]:
  """(problem or None, whether an anomalous image's mask is all zero)."""
  _, mask, _, problem = sources.decode_example(example)
  return problem, mask is not None and not mask.any()


def check_split(files: layouts.FileList) -> SplitReport:
  report = SplitReport(files.title, images=len(files.examples), skipped=list(files.skipped))
  if not files.examples:
    report.problems.append(sources.empty_message(files))
    return report
  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    results = list(pool.map(_inspect, files.examples))
  for example, (problem, empty_mask) in zip(files.examples, results):
    if problem:
      report.problems.append(problem)
      continue
    report.usable += 1
    if empty_mask:
      report.empty_masks.append(example.mask_file)
  normal = sum(1 for e in files.examples if e.label == 0)
  report.counts = {"normal": normal, "anomalous": len(files.examples) - normal}
  report.types = layouts.count_by([e for e in files.examples if e.label], lambda e: e.defect_type)
  return report


def _splits(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(split, subset) pairs the config's run reads: for mvtec, each class's train and test."""
  subsets = layouts.subset_names(config)
  if config.data.name == "mvtec":
    return [pair for subset in subsets for pair in (("train", subset), ("test", subset))]
  return [("train", "")] + [("test", subset) for subset in subsets]


def run_check(config: ml_collections.ConfigDict, emit: Callable[[str], None] = print) -> bool:
  """Prints the report through `emit`; returns whether the dataset is usable for a run of `config`."""
  data = config.data
  emit(f"dataset {data.name} at {os.path.abspath(os.path.expanduser(data.root))}")
  try:
    pairs = _splits(config)
    layouts.data_root(config)
  except DatasetError as error:
    emit(f"PROBLEM: {error.message}")
    emit(f"NOT USABLE. {error.advice}".strip())
    return False

  reports = []
  for split, subset in pairs:
    try:
      files = layouts.list_train(config, subset) if split == "train" else layouts.list_test(config, subset)
    except DatasetError as error:
      reports.append(SplitReport(f"{split} {subset}".strip(), problems=[error.message]))
      continue
    reports.append(check_split(files))

  usable = True
  for pair, report in zip(pairs, reports):
    counts = ", ".join(f"{key} {value}" for key, value in report.counts.items())
    types = ", ".join(f"{key} {value}" for key, value in report.types.items())
    emit(f"{report.title:24s} {report.images:6d} images ({counts or 'none'}){': ' + types if types else ''}")
    if report.skipped:
      examples = ", ".join(report.skipped[:_MAX_LISTED])
      emit(f"  skipped {len(report.skipped)} non-image files (e.g. {examples})")
    if report.empty_masks:
      emit(f"  note: {len(report.empty_masks)} anomalous images have an all-zero mask and will count as normal "
           f"(e.g. {report.empty_masks[0]})")
    for problem in report.problems:
      emit(f"  PROBLEM: {problem}")
    # Bad files only break a run that does not skip them; a split with nothing usable breaks any run.
    if report.usable == 0 or (report.problems and not data.skip_bad_files):
      usable = False
    if pair[0] == "train" and 0 < report.usable < config.batch_size:
      emit(f"  PROBLEM: {report.usable} usable training images are fewer than one batch "
           f"(batch_size={config.batch_size})")
      usable = False

  problems = sum(len(r.problems) for r in reports)
  if usable and problems:
    emit(f"USABLE with --config.data.skip_bad_files=True: {problems} problems above are left out of the run")
  elif usable:
    emit("USABLE: no problems found")
  else:
    emit(f"NOT USABLE: {problems} problems above. Fix or remove the files named, or pass "
         f"--config.data.skip_bad_files=True to leave bad files out. {layouts.LAYOUT_HELP.get(data.name, '')}")
  return usable


_CONFIG = config_flags.DEFINE_config_file("config", None, "A run config, e.g. configs/aebad_s.py.", lock_config=True)


def main(argv) -> None:
  del argv
  sys.exit(0 if run_check(_CONFIG.value) else 1)


if __name__ == "__main__":
  app.run(main)
