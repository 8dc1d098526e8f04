"""The published preprocessing (docs/spec.md §7), computed with PIL exactly as torchvision computes it.

torchvision's Resize, RandomResizedCrop and CenterCrop act on PIL images: PIL resamples the width then the
height, widening its filter on downscale (antialiasing) and rounding to uint8 after each pass. TF's resize
differs from it: mean 8-12, max over 100 grey levels without antialiasing on ~1000-px photo-like images;
mean ~0.1, max up to 6 with it (bicubic overshoot is clipped between PIL's passes). Emulating PIL pass by
pass in TF agrees within 1 grey level but costs 2-5x PIL's time (`python -m mmr_jax.data.compare_pil` prints
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


def centre_offset(resized: int, cropped: int) -> int:
  """torchvision CenterCrop's offset: Python's round, so (73 - 64) / 2 = 4.5 gives 4."""
  return int(round((resized - cropped) / 2.0))


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
  crop = Image.fromarray(image[top:top + height, left:left + width])
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


def eval_transform(image: np.ndarray, mask: np.ndarray | None, mask_nearest: bool, resize_size: int,
                   image_size: int, strict_masks: bool) -> tuple[np.ndarray, np.ndarray]:
  """Resize to resize_size² (bilinear, aspect not kept), centre-crop image_size; the mask likewise, binarised.

  Returns (uint8 (S, S, 3) image, uint8 (S, S) mask in {0, 1}); no mask gives an all-zero one.
  """
  size = (resize_size, resize_size)
  crop = slice(centre_offset(resize_size, image_size), centre_offset(resize_size, image_size) + image_size)
  resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))[crop, crop]
  if mask is None:
    return resized, np.zeros((image_size, image_size), np.uint8)
  # PIL resizes 1-bit and palette images with nearest neighbour whatever filter is asked.
  resample = Image.Resampling.NEAREST if mask_nearest else Image.Resampling.BILINEAR
  mask = np.asarray(Image.fromarray(mask).resize(size, resample))[crop, crop]
  return resized, binarize_mask(mask, strict_masks)
