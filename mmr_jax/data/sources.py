"""Decoded, validated splits: every file is decoded once up front, so a bad one is named before a run starts.

`train_set` is memoised per process (keyed by the config values that change it), so that building a tf.data
pipeline for each epoch costs nothing but the pipeline. With config.data.cache the decoded originals stay in
memory; otherwise only their shapes do and each epoch decodes again (the files were already checked).
No TensorFlow here, except through the TFDS route, which imports it when asked for.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import zlib
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging

from mmr_jax.data import images
from mmr_jax.data import layouts
from mmr_jax.data.layouts import DatasetError, Example, FileList

_MAX_LISTED_PROBLEMS = 20


@dataclasses.dataclass
class DecodedSplit:
  """A split whose files all decode. `pixels[i]` is (image, mask, mask_nearest) when kept, else None."""
  files: FileList
  examples: list[Example]
  shapes: np.ndarray  # (N, 2) int64: height, width of each original image.
  pixels: list[tuple[np.ndarray, np.ndarray | None, bool]] | None
  dropped: list[str]  # Problems left out under config.data.skip_bad_files.
  max_side: int = 0  # config.data.max_image_side: the decoded images were shrunk to this longer side.

  def __len__(self) -> int:
    return len(self.examples)

  def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(uint8 image (H, W, 3), uint8 mask (H, W) or None, mask_nearest) of example `index`."""
    if self.pixels is not None:
      return self.pixels[index]
    image, mask, nearest, problem = decode_example(self.examples[index], self.max_side)
    if problem:  # The file changed since it was checked.
      raise DatasetError(problem)
    return image, mask, nearest


def decode_example(example: Example, max_side: int = 0) -> tuple[np.ndarray | None, np.ndarray | None, bool,
                                                                    str | None]:
  """(image, mask, mask_nearest, problem): problem is a message naming the path, or None. With `max_side`, the
  image and mask are shrunk to it (images.limit_size) once they have been checked."""
  image, mask, nearest, problem = _decode_checked(example)
  if problem is None:
    image, mask = images.limit_size(image, mask, max_side)
  return image, mask, nearest, problem


def _decode_checked(example: Example) -> tuple[np.ndarray | None, np.ndarray | None, bool, str | None]:
  try:
    image = images.decode_rgb(example.image_bytes if example.image_bytes is not None else example.image_file)
  except Exception as error:  # PIL raises many types for bad files; each becomes one line naming the file.
    return None, None, False, images.describe_failure(example.image_file, error)
  if not example.has_mask:
    return image, None, False, None
  if example.mask_bytes is None and not os.path.isfile(example.mask_file):
    return image, None, False, f"{example.mask_file}: missing mask for the anomalous test image {example.image_file}"
  try:
    mask, nearest = images.decode_mask(example.mask_bytes if example.mask_bytes is not None else example.mask_file)
  except Exception as error:  # As above.
    return image, None, False, images.describe_failure(example.mask_file, error)
  if mask.shape != image.shape[:2]:
    return image, None, False, (f"{example.mask_file}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                                f"{example.image_file} is {image.shape[1]}x{image.shape[0]}; they must match")
  return image, mask, nearest, None


def decode_all(examples: Sequence[Example], keep_pixels: bool, workers: int | None = None, max_side: int = 0):
  """Decodes every example (in parallel: PIL releases the GIL while decoding), in order.

  Returns (shapes, pixels or None, problems) with problems[i] the message for example i or None.
  """
  workers = workers or min(8, os.cpu_count() or 1)
  shapes = np.zeros((len(examples), 2), np.int64)
  pixels = [] if keep_pixels else None
  problems = []
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    decode = lambda example: decode_example(example, max_side)
    for i, (image, mask, nearest, problem) in enumerate(pool.map(decode, examples)):
      problems.append(problem)
      if image is not None:
        shapes[i] = image.shape[:2]
      if keep_pixels:
        pixels.append((image, mask, nearest))
  return shapes, pixels, problems


def problems_message(files: FileList, problems: Sequence[str], total: int) -> str:
  listed = "\n  ".join(problems[:_MAX_LISTED_PROBLEMS])
  more = f"\n  ... and {len(problems) - _MAX_LISTED_PROBLEMS} more" if len(problems) > _MAX_LISTED_PROBLEMS else ""
  return (f"{len(problems)} of {total} files of {files.dataset} {files.title} cannot be used:\n  {listed}{more}\n"
          f"Fix or remove them (`python -m mmr_jax.data.check --config=... --config.data.root=...` lists every "
          f"problem), or pass --config.data.skip_bad_files=True to leave them out of the run.")


def empty_message(files: FileList) -> str:
  return f"{files.location}: no images for the {files.title} split."


def validate(files: FileList, skip_bad_files: bool, keep_pixels: bool, max_side: int = 0) -> DecodedSplit:
  """Decodes every file of `files`; raises DatasetError on any problem unless skip_bad_files (then drops it).
  `max_side`: shrink larger images to this longer side (config.data.max_image_side; 0 keeps them)."""
  if not files.examples:
    raise DatasetError(empty_message(files), layouts.LAYOUT_HELP[files.dataset])
  if files.skipped:
    logging.info("%s %s: skipped %d non-image files (e.g. %s)", files.dataset, files.title, len(files.skipped),
                 files.skipped[0])
  shapes, pixels, problems = decode_all(files.examples, keep_pixels, max_side=max_side)
  bad = [i for i, problem in enumerate(problems) if problem]
  messages = [problems[i] for i in bad]
  if bad and not skip_bad_files:
    raise DatasetError(problems_message(files, messages, len(files.examples)))
  if bad:
    logging.warning("%s %s: leaving out %d unusable files (data.skip_bad_files), e.g. %s", files.dataset,
                    files.title, len(bad), messages[0])
  keep = [i for i, problem in enumerate(problems) if not problem]
  if not keep:
    raise DatasetError(f"{files.location}: none of the {len(problems)} images of the {files.title} split decodes.",
                       layouts.LAYOUT_HELP[files.dataset])
  return DecodedSplit(
      files=files,
      examples=[files.examples[i] for i in keep],
      shapes=shapes[keep],
      pixels=[pixels[i] for i in keep] if keep_pixels else None,
      dropped=messages,
      max_side=max_side)


def list_split(config: ml_collections.ConfigDict, split: str, subset: str | None) -> FileList:
  """The FileList of a split: from the folders, or from the prepared TFDS dataset when config.data.use_tfds."""
  if config.data.get("use_tfds", False):
    from mmr_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top  (imports TF and TFDS)
    return tfds_builders.file_list(config, split, subset)
  if split == "train":
    return layouts.list_train(config, subset)
  return layouts.list_test(config, subset)


def split_key(config: ml_collections.ConfigDict, split: str, subset: str | None) -> tuple:
  data = config.data
  return (data.name, os.path.abspath(os.path.expanduser(data.root)), split, subset or "",
          bool(data.skip_bad_files), bool(data.get("use_tfds", False)), data.get("tfds_data_dir", ""),
          int(data.max_image_side))


_TRAIN_SETS: dict[tuple, tuple[DecodedSplit, DecodedSplit | None]] = {}


def calibration_count(num_examples: int, fraction: float) -> int:
  """How many of the training images data.calibration_fraction holds out: the fraction rounded, at least one when
  it is > 0, and never all of them."""
  if fraction <= 0:
    return 0
  return min(max(1, round(fraction * num_examples)), num_examples - 1)


def held_out_order(examples: Sequence[Example]) -> list[int]:
  """Indices of `examples` in the order they are held out for calibration: by the CRC-32 of their names, so the
  choice is a fixed function of the file names (the same for every seed and every run on the same files)."""
  return sorted(range(len(examples)), key=lambda i: (zlib.crc32(examples[i].name.encode()), examples[i].name))


def _subsplit(split: DecodedSplit, indices: Sequence[int]) -> DecodedSplit:
  indices = sorted(indices)
  return DecodedSplit(files=split.files, examples=[split.examples[i] for i in indices], shapes=split.shapes[indices],
                      pixels=None if split.pixels is None else [split.pixels[i] for i in indices],
                      dropped=split.dropped, max_side=split.max_side)


def _train_and_calibration(config: ml_collections.ConfigDict, subset: str | None
                           ) -> tuple[DecodedSplit, DecodedSplit | None]:
  subset = layouts.train_subset(config, subset)
  fraction = float(config.data.calibration_fraction)
  key = split_key(config, "train", subset) + (bool(config.data.cache), fraction)
  if key not in _TRAIN_SETS:
    files = list_split(config, "train", subset)
    whole = validate(files, config.data.skip_bad_files, keep_pixels=bool(config.data.cache),
                     max_side=config.data.max_image_side)
    if fraction > 0 and len(whole) < 2:
      raise DatasetError(f"{files.location}: data.calibration_fraction={fraction} needs at least 2 training "
                         f"images, there is {len(whole)}; add images or pass --config.data.calibration_fraction=0")
    held = held_out_order(whole.examples)[:calibration_count(len(whole), fraction)]
    kept = sorted(set(range(len(whole))) - set(held))
    _TRAIN_SETS[key] = (_subsplit(whole, kept), _subsplit(whole, held)) if held else (whole, None)
  return _TRAIN_SETS[key]


def train_set(config: ml_collections.ConfigDict, subset: str | None = None) -> DecodedSplit:
  """The decoded training split (memoised per process; pixels kept when config.data.cache), less the images that
  data.calibration_fraction holds out."""
  return _train_and_calibration(config, subset)[0]


def calibration_set(config: ml_collections.ConfigDict, subset: str | None = None) -> DecodedSplit | None:
  """The normal training images held out for calibration (data.calibration_fraction), never trained on; None at
  fraction 0 (the published protocol: every training image is trained on)."""
  return _train_and_calibration(config, subset)[1]


_TEST_SETS: dict[tuple, DecodedSplit] = {}


def test_set(config: ml_collections.ConfigDict, subset: str, keep_pixels: bool) -> DecodedSplit:
  """The decoded test split of one subset.

  Without pixels it is memoised (a list of checked files); with them it is not, since the pipeline keeps the
  preprocessed images instead of the originals.
  """
  if keep_pixels:
    return validate(list_split(config, "test", subset), config.data.skip_bad_files, keep_pixels=True,
                    max_side=config.data.max_image_side)
  key = split_key(config, "test", subset)
  if key not in _TEST_SETS:
    _TEST_SETS[key] = validate(list_split(config, "test", subset), config.data.skip_bad_files, keep_pixels=False,
                               max_side=config.data.max_image_side)
  return _TEST_SETS[key]


def clear_caches() -> None:
  """Forgets every memoised split (tests; or after the files on disk changed)."""
  _TRAIN_SETS.clear()
  _TEST_SETS.clear()
