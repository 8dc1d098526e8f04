"""Checks a dataset on disk before a run: counts, decodability, masks. Exits 0 only if a run can use it.

    python -m mmr_jax check_data --config=configs/aebad_s.py --config.data.root=DIR
    python -m mmr_jax check_data --config=configs/aebad_v.py --config.data.root=DIR
    python -m mmr_jax check_data --config=configs/mvtec.py --config.data.root=DIR

Prints the number of images per split, subset and label, the non-image files skipped (macOS `._*` and the
like), and every problem with its path: a file that does not decode, a missing or mismatched mask, a missing
folder, an empty split. It reads the folders (the manual download) even when config.data.use_tfds is set,
since that is what the TFDS builders read. It also compares each split's files with those the published code's
globs would find (nested folders, other extensions, hidden files): a note on whether results are comparable with
the paper's, never a reason to refuse the dataset.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import posixpath
from collections.abc import Callable

import ml_collections

from mmr_jax.data import images
from mmr_jax.data import layouts
from mmr_jax.data import decoding
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
  published: list[str] = dataclasses.field(default_factory=list)  # How the files compare with the published code's.
  high_bit_depth: list[str] = dataclasses.field(default_factory=list)  # Images scaled down to 8 bits.
  oriented: list[str] = dataclasses.field(default_factory=list)  # Images (or masks) turned by their EXIF tag.
  transparent: list[str] = dataclasses.field(default_factory=list)  # Alpha channels with transparent pixels.
  tiny: list[str] = dataclasses.field(default_factory=list)  # Images smaller than one patch of the student.


def _inspect(example: layouts.Example) -> tuple[str | None, bool, list[images.Facts]]:
  """(problem or None, whether an anomalous image's mask is all zero, the Facts of the image and of its mask)."""
  _, mask, _, problem = decoding.decode_example(example)
  if problem is not None:
    return problem, False, []
  found = [example.image_bytes if example.image_bytes is not None else example.image_file]
  if example.has_mask:
    found.append(example.mask_bytes if example.mask_bytes is not None else example.mask_file)
  return None, mask is not None and not mask.any(), [images.facts(source) for source in found]


def check_split(files: layouts.FileList, patch_size: int = 16) -> SplitReport:
  report = SplitReport(files.title, images=len(files.examples), skipped=list(files.skipped))
  if not files.examples:
    report.problems.append(decoding.empty_message(files))
    return report
  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    results = list(pool.map(_inspect, files.examples))
  for example, (problem, empty_mask, found) in zip(files.examples, results):
    if problem:
      report.problems.append(problem)
      continue
    report.usable += 1
    if empty_mask:
      report.empty_masks.append(example.mask_file)
    image = found[0]
    if image.high_bit_depth:
      report.high_bit_depth.append(example.name)
    if any(f.orientation != 1 for f in found):
      tags = "/".join(str(f.orientation) for f in found)
      report.oriented.append(f"{example.name} (orientation {tags}{' image/mask' if len(found) > 1 else ''})")
    if image.transparent:
      report.transparent.append(example.name)
    if min(image.size) < patch_size:
      report.tiny.append(f"{example.name} ({image.size[0]}x{image.size[1]})")
  normal = sum(1 for e in files.examples if e.label == 0)
  report.counts = {"normal": normal, "anomalous": len(files.examples) - normal}
  report.types = layouts.count_by([e for e in files.examples if e.label], lambda e: e.defect_type)
  if files.split == "test" and (normal == 0 or normal == len(files.examples)):
    report.problems.append(decoding.one_class_message(files, normal, len(files.examples) - normal))
  return report


def _note(names: list[str], what: str) -> str:
  return f"note: {len(names)} files {what} (e.g. {names[0]})"


def compare_published(files: layouts.FileList, published: layouts.PublishedFiles) -> list[str]:
  """Lines saying how the files read here differ from those the published code enumerates, ending with whether
  the images are the same (results comparable with the paper's)."""
  ours, theirs = {e.name for e in files.examples}, set(published.names)
  extra, missing = sorted(ours - theirs), sorted(theirs - ours)
  if not extra and not missing:
    return [f"the files match the published code's ({published.pattern})"]
  folders, skipped = set(published.folders), set(files.skipped)
  other_extension = [n for n in extra if posixpath.dirname(n) in folders]
  nested = [
    n
    for n in extra
    if n not in other_extension and any(posixpath.dirname(n).startswith(folder + "/") for folder in folders)
  ]
  outside = [n for n in extra if n not in other_extension and n not in nested]
  # Resource forks first, so that the example shown is one.
  hidden = sorted(
    (n for n in missing if posixpath.basename(n).startswith(".")),
    key=lambda n: not posixpath.basename(n).startswith("._"),
  )
  non_image = [n for n in missing if n not in hidden and n in skipped]
  unread = [n for n in missing if n not in hidden and n not in skipped]
  lines = []
  if nested:
    lines.append(_note(nested, "are in nested folders the published code does not read"))
  if other_extension:
    lines.append(
      _note(other_extension, f"have extensions other than {published.extension} that the published code does not read")
    )
  if outside:
    lines.append(_note(outside, "are outside the folders the published code reads"))
  if unread:
    lines.append(_note(unread, "in hidden folders are read by the published code but not here"))
  if hidden:
    forks = ", macOS `._*` resource forks among them" if posixpath.basename(hidden[0]).startswith("._") else ""
    lines.append(
      _note(
        hidden,
        f"are hidden and not images{forks}: skipped here, but the published code lists them "
        f"too and its loader would fail on them",
      )
    )
  if non_image:
    lines.append(
      _note(
        non_image,
        "have no image extension: skipped here, but the published code lists them too and would try to decode them",
      )
    )
  if nested or other_extension or outside or unread:
    lines.append(
      f"note: so the images differ from the published code's ({published.pattern}) and results are "
      f"not comparable file for file with the paper's; move the files named aside for a comparable run"
    )
  else:
    lines.append(
      f"the images match the published code's ({published.pattern}); it would also open the other files named"
    )
  return lines


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
    report = check_split(files, config.model.vit.patch_size)
    published = layouts.published_files(config, split, subset)
    if published is not None:
      report.published = compare_published(files, published)
    reports.append(report)

  usable = True
  for pair, report in zip(pairs, reports):
    counts = ", ".join(f"{key} {value}" for key, value in report.counts.items())
    types = ", ".join(f"{key} {value}" for key, value in report.types.items())
    emit(f"{report.title:24s} {report.images:6d} images ({counts or 'none'}){': ' + types if types else ''}")
    if report.skipped:
      examples = ", ".join(report.skipped[:_MAX_LISTED])
      emit(f"  skipped {len(report.skipped)} non-image files (e.g. {examples})")
    for line in report.published:
      emit(f"  {line}")
    if report.high_bit_depth:
      emit(
        f"  note: {len(report.high_bit_depth)} images have more than 8 bits per pixel (e.g. "
        f"{report.high_bit_depth[0]}): scaled to 8 bits here (value / 257); the published loader's PIL "
        f"convert('RGB') clips them at 255, which makes them almost white"
      )
    if report.oriented:
      emit(
        f"  note: {len(report.oriented)} files carry an EXIF orientation (e.g. {report.oriented[0]}): each is turned "
        f"as a viewer shows it, images and masks by their own tags; a mask drawn on the stored pixels of a turned "
        f"image would now be off (the published loader turns nothing)"
      )
    if report.transparent:
      emit(
        f"  note: {len(report.transparent)} images have transparent pixels (e.g. {report.transparent[0]}): the alpha "
        f"channel is dropped, so those pixels show the colour stored under them, not a background"
      )
    if report.tiny:
      emit(
        f"  note: {len(report.tiny)} images are smaller than one {config.model.vit.patch_size}-pixel patch (e.g. "
        f"{report.tiny[0]}): they are resized up to data.image_size, and hold almost nothing to inspect"
      )
    if report.empty_masks:
      emit(
        f"  note: {len(report.empty_masks)} anomalous images have an all-zero mask and will count as normal "
        f"(e.g. {report.empty_masks[0]})"
      )
    for problem in report.problems:
      emit(f"  PROBLEM: {problem}")
    # Bad files only break a run that does not skip them; a split with nothing usable breaks any run.
    if report.usable == 0 or (report.problems and not data.skip_bad_files):
      usable = False
    if pair[0] == "train" and data.drop_last and 0 < report.usable < config.batch_size:
      report.problems.append(
        f"{report.usable} usable training images are fewer than one batch "
        f"(batch_size={config.batch_size}, data.drop_last=True)"
      )
      emit(f"  PROBLEM: {report.problems[-1]}")
      usable = False

  problems = sum(len(r.problems) for r in reports)
  if usable and problems:
    emit(f"USABLE with --config.data.skip_bad_files=True: {problems} problems above are left out of the run")
  elif usable:
    emit("USABLE: no problems found")
  else:
    emit(
      f"NOT USABLE: {problems} problems above. Fix or remove the files named, or pass "
      f"--config.data.skip_bad_files=True to leave bad files out. {layouts.LAYOUT_HELP.get(data.name, '')}"
    )
  return usable
