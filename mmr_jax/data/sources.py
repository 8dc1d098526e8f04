"""The splits a run reads, decoded and validated (decoding.py) once per process, with the held-out calibration
images split off the training set.

`train_set` is memoised per process (keyed by the config values that change it), so that building a tf.data
pipeline for each epoch costs nothing but the pipeline. With config.data.cache the decoded originals stay in
memory; otherwise only their shapes do and each epoch decodes again (the files were already checked).
No TensorFlow here, except through the TFDS route, which imports it when asked for.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence

import ml_collections

from mmr_jax.data import layouts
from mmr_jax.data.decoding import DecodedSplit, validate
from mmr_jax.data.layouts import DatasetError, Example, FileList


def list_split(config: ml_collections.ConfigDict, split: str, subset: str | None) -> FileList:
  """The FileList of a split: from the folders, or from the prepared TFDS dataset when config.data.use_tfds."""
  if config.data.use_tfds:
    from mmr_jax.data import tfds_builders  # imports TF and TFDS

    return tfds_builders.file_list(config, split, subset)
  if split == "train":
    return layouts.list_train(config, subset)
  return layouts.list_test(config, subset)


def split_key(config: ml_collections.ConfigDict, split: str, subset: str | None) -> tuple:
  data = config.data
  return (
    data.name,
    os.path.abspath(os.path.expanduser(data.root)),
    split,
    subset or "",
    bool(data.skip_bad_files),
    bool(data.use_tfds),
    data.tfds_data_dir,
    int(data.max_image_side),
  )


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
  return DecodedSplit(
    files=split.files,
    examples=[split.examples[i] for i in indices],
    shapes=split.shapes[indices],
    pixels=None if split.pixels is None else [split.pixels[i] for i in indices],
    dropped=split.dropped,
    max_side=split.max_side,
  )


def _train_and_calibration(
  config: ml_collections.ConfigDict, subset: str | None
) -> tuple[DecodedSplit, DecodedSplit | None]:
  subset = layouts.train_subset(config, subset)
  fraction = float(config.data.calibration_fraction)
  key = split_key(config, "train", subset) + (bool(config.data.cache), fraction)
  if key not in _TRAIN_SETS:
    files = list_split(config, "train", subset)
    whole = validate(
      files, config.data.skip_bad_files, keep_pixels=bool(config.data.cache), max_side=config.data.max_image_side
    )
    if fraction > 0 and len(whole) < 2:
      raise DatasetError(
        f"{files.location}: data.calibration_fraction={fraction} needs at least 2 training "
        f"images, there is {len(whole)}; add images or pass --config.data.calibration_fraction=0"
      )
    held = held_out_order(whole.examples)[: calibration_count(len(whole), fraction)]
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
    return validate(
      list_split(config, "test", subset),
      config.data.skip_bad_files,
      keep_pixels=True,
      max_side=config.data.max_image_side,
    )
  key = split_key(config, "test", subset)
  if key not in _TEST_SETS:
    _TEST_SETS[key] = validate(
      list_split(config, "test", subset),
      config.data.skip_bad_files,
      keep_pixels=False,
      max_side=config.data.max_image_side,
    )
  return _TEST_SETS[key]


def clear_caches() -> None:
  """Forgets every memoised split (tests; or after the files on disk changed)."""
  _TRAIN_SETS.clear()
  _TEST_SETS.clear()
