"""The published preprocessing (docs/spec.md §7), computed with PIL exactly as torchvision computes it.

torchvision's Resize, RandomResizedCrop and CenterCrop act on PIL images: PIL resamples the width then the
height, widening its filter on downscale (antialiasing) and rounding to uint8 after each pass. TF's resize
differs from it: mean 8-12, max over 100 grey levels without antialiasing on ~1000-px photo-like images;
mean ~0.1, max up to 6 with it (bicubic overshoot is clipped between PIL's passes). Emulating PIL pass by
pass in TF agrees within 1 grey level but costs 2-5x PIL's time (`python tools/compare_pil.py` prints
these figures). So the pipeline calls PIL itself inside tf.data: the pixels are the published code's, and
PIL releases the GIL while it resamples, so tf.data's threads run in parallel. No TensorFlow here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmr_jax.data import images

# Normalisation as one multiply-add: (x / 255 - mean) / std = x * scale + offset.
_SCALE = (1.0 / (255.0 * images.IMAGENET_STD)).astype(np.float32)
_OFFSET = (-images.IMAGENET_MEAN / images.IMAGENET_STD).astype(np.float32)


def normalization_constants() -> tuple[np.ndarray, np.ndarray]:
  """(scale, offset), float32 (3,): `normalize` is x · scale + offset, for computing it elsewhere (an export)."""
  return _SCALE.copy(), _OFFSET.copy()


def centre_offset(resized: int, cropped: int) -> int:
  """torchvision CenterCrop's offset: Python's round, so (73 - 64) / 2 = 4.5 gives 4."""
  return int(round((resized - cropped) / 2.0))


def centre_padding(resized: int, cropped: int) -> tuple[int, int]:
  """torchvision CenterCrop's zero padding (before, after) of a side shorter than the crop: (64 - 51) gives (6, 7).

  The odd pixel goes after (right, bottom); a side at least as long as the crop gets none.
  """
  extra = max(cropped - resized, 0)
  return extra // 2, (extra + 1) // 2


def centre_crop(array: np.ndarray, size: int) -> np.ndarray:
  """CenterCrop(size) of a square uint8 image (S, S, ...): cropped, or padded with zeros when S < size, as
  torchvision pads the PIL image with fill 0 before cropping (so, before Normalize: black pixels)."""
  side = array.shape[0]
  if side < size:
    before, after = centre_padding(side, size)
    return np.pad(array, [(before, after), (before, after)] + [(0, 0)] * (array.ndim - 2))
  start = centre_offset(side, size)
  return array[start : start + size, start : start + size]


def normalize(image: np.ndarray) -> np.ndarray:
  """uint8 RGB (..., 3) -> float32 ImageNet-normalised (ToTensor + Normalize)."""
  return image.astype(np.float32) * _SCALE + _OFFSET


def denormalize(image: np.ndarray) -> np.ndarray:
  """ImageNet-normalised float (..., 3) -> uint8 RGB, for heatmap overlays."""
  rgb = np.asarray(image, np.float32) * images.IMAGENET_STD + images.IMAGENET_MEAN
  return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def train_transform(image: np.ndarray, box: tuple[int, int, int, int], flip: bool, image_size: int) -> np.ndarray:
  """RandomResizedCrop (bicubic) of `box` = (top, left, height, width), horizontal flip, normalisation.

  Returns float32 (S, S, 3).
  """
  top, left, height, width = box
  crop = Image.fromarray(image[top : top + height, left : left + width])
  resized = np.asarray(crop.resize((image_size, image_size), Image.Resampling.BICUBIC))
  if flip:
    resized = resized[:, ::-1]
  return normalize(resized)


def binarize_mask(mask: np.ndarray, strict: bool) -> np.ndarray:
  """A resized, cropped uint8 mask -> uint8 {0, 1}.

  Default (the published code): divide by the max and truncate to int, so only pixels equal to the max count.
  strict: threshold mask / max at 0.5. An all-zero mask stays all zero either way.
  """
  peak = mask.max()
  if peak == 0:
    return np.zeros_like(mask, np.uint8)
  binary = mask >= 0.5 * peak if strict else mask == peak
  return binary.astype(np.uint8)


def eval_transform(
  image: np.ndarray, mask: np.ndarray | None, mask_nearest: bool, resize_size: int, image_size: int, strict_masks: bool
) -> tuple[np.ndarray, np.ndarray]:
  """Resize to resize_size² (bilinear, aspect not kept), centre-crop image_size; the mask likewise, binarised.

  With resize_size < image_size the crop pads a zero border instead (`centre_crop`): black in the image, normal
  in the mask. Returns (uint8 (S, S, 3) image, uint8 (S, S) mask in {0, 1}); no mask gives an all-zero one.
  """
  size = (resize_size, resize_size)
  resized = centre_crop(np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)), image_size)
  if mask is None:
    return resized, np.zeros((image_size, image_size), np.uint8)
  # PIL resizes 1-bit and palette images with nearest neighbour whatever filter is asked.
  resample = Image.Resampling.NEAREST if mask_nearest else Image.Resampling.BILINEAR
  mask = centre_crop(np.asarray(Image.fromarray(mask).resize(size, resample)), image_size)
  return resized, binarize_mask(mask, strict_masks)
