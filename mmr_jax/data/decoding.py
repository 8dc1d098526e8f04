"""Decoding a split's files, every one up front, so that a bad file is named before a run starts.

`validate` decodes a FileList (in threads: PIL releases the GIL) into a `DecodedSplit`, or raises DatasetError
listing every file that cannot be used. No TensorFlow here.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence

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


def decode_example(
  example: Example, max_side: int = 0
) -> tuple[np.ndarray | None, np.ndarray | None, bool, str | None]:
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
    return (
      image,
      None,
      False,
      (
        f"{example.mask_file}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
        f"{example.image_file} is {image.shape[1]}x{image.shape[0]}; they must match"
      ),
    )
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
  return (
    f"{len(problems)} of {total} files of {files.dataset} {files.title} cannot be used:\n  {listed}{more}\n"
    f"Fix or remove them (`python -m mmr_jax check_data --config=... --config.data.root=...` lists every "
    f"problem), or pass --config.data.skip_bad_files=True to leave them out of the run."
  )


def empty_message(files: FileList) -> str:
  return f"{files.location}: no images for the {files.title} split."


def one_class_message(files: FileList, normal: int, anomalous: int) -> str:
  """A test split of one class only: its image AUROC (and every other metric) is undefined."""
  missing = "anomalous" if anomalous == 0 else "normal"
  return (
    f"{files.location}: the {files.title} split has {normal} normal and {anomalous} anomalous images, so its image "
    f"AUROC is undefined; add {missing} images to it, or leave the subset out of data.subsets"
  )


def validate(files: FileList, skip_bad_files: bool, keep_pixels: bool, max_side: int = 0) -> DecodedSplit:
  """Decodes every file of `files`; raises DatasetError on any problem unless skip_bad_files (then drops it).
  `max_side`: shrink larger images to this longer side (config.data.max_image_side; 0 keeps them)."""
  if not files.examples:
    raise DatasetError(empty_message(files), layouts.LAYOUT_HELP[files.dataset])
  if files.skipped:
    logging.info(
      "%s %s: skipped %d non-image files (e.g. %s)", files.dataset, files.title, len(files.skipped), files.skipped[0]
    )
  shapes, pixels, problems = decode_all(files.examples, keep_pixels, max_side=max_side)
  bad = [i for i, problem in enumerate(problems) if problem]
  messages = [problems[i] for i in bad]
  if bad and not skip_bad_files:
    raise DatasetError(problems_message(files, messages, len(files.examples)))
  if bad:
    logging.warning(
      "%s %s: leaving out %d unusable files (data.skip_bad_files), e.g. %s",
      files.dataset,
      files.title,
      len(bad),
      messages[0],
    )
  keep = [i for i, problem in enumerate(problems) if not problem]
  if not keep:
    raise DatasetError(
      f"{files.location}: none of the {len(problems)} images of the {files.title} split decodes.",
      layouts.LAYOUT_HELP[files.dataset],
    )
  normal = sum(files.examples[i].label == 0 for i in keep)
  if files.split == "test" and normal in (0, len(keep)):  # Before any training: the metrics need both classes.
    raise DatasetError(one_class_message(files, normal, len(keep) - normal))
  return DecodedSplit(
    files=files,
    examples=[files.examples[i] for i in keep],
    shapes=shapes[keep],
    pixels=[pixels[i] for i in keep] if keep_pixels else None,
    dropped=messages,
    max_side=max_side,
  )
