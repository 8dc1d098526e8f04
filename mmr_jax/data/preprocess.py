"""The published preprocessing as TensorFlow ops (mmr-behaviour.md §7), matched to what PIL computes.

torchvision applies Resize / RandomResizedCrop to PIL images: PIL widens its filter on downscale (it
antialiases) and returns uint8. `resize_like_pil` does both, which brings the difference to PIL down from a
mean of ~4 and a max of ~15 grey levels (plain bilinear) to a mean of ~0.1 and a max of 1
(`python -m mmr_jax.data.compare_pil` measures it).
"""

from __future__ import annotations

import tensorflow as tf

from mmr_jax.data import images

# The data pipeline runs on the host; a GPU that TF grabbed would be memory JAX cannot use.
tf.config.set_visible_devices([], "GPU")

_MEAN = tf.constant(images.IMAGENET_MEAN)
_STD = tf.constant(images.IMAGENET_STD)


def centre_offset(resized: int, cropped: int) -> int:
  """torchvision CenterCrop's offset: Python's round, so (73 - 64) / 2 = 4.5 gives 4."""
  return int(round((resized - cropped) / 2.0))


def _round_to_uint8(image: tf.Tensor) -> tf.Tensor:
  # Halves round up, as PIL's fixed-point arithmetic does (tf.round would round them to even).
  return tf.cast(tf.clip_by_value(tf.floor(image + 0.5), 0.0, 255.0), tf.uint8)


def resize_like_pil(image: tf.Tensor, size: tuple[int, int], method: str) -> tf.Tensor:
  """PIL's `resize` of a uint8 (H, W, C) image: antialiased filter (on downscale), rounded to uint8.

  PIL resamples the width first, then the height, storing the intermediate as uint8; bicubic overshoot is
  clipped there. Doing the same keeps strong edges within a grey level or two of PIL's result.
  """
  antialias = method != "nearest"

  def one_pass(values: tf.Tensor, height, width) -> tf.Tensor:
    # PIL skips a pass whose size does not change; a resize to the same size is not exactly the identity here.
    same = tf.logical_and(tf.equal(tf.shape(values)[0], height), tf.equal(tf.shape(values)[1], width))
    return tf.cond(same, lambda: values, lambda: _round_to_uint8(
        tf.image.resize(tf.cast(values, tf.float32), (height, width), method=method, antialias=antialias)))

  wide = one_pass(tf.cast(image, tf.uint8), tf.shape(image)[0], size[1])
  return one_pass(wide, size[0], size[1])


def normalize(image: tf.Tensor) -> tf.Tensor:
  """uint8 RGB -> float32 ImageNet-normalised (ToTensor + Normalize)."""
  return (tf.cast(image, tf.float32) / 255.0 - _MEAN) / _STD


def train_transform(crop: tf.Tensor, flip: tf.Tensor, image_size: int) -> tf.Tensor:
  """The rest of RandomResizedCrop (the crop is already cut): bicubic resize, then the flip, then normalise."""
  resized = resize_like_pil(crop, (image_size, image_size), "bicubic")
  resized = tf.cond(flip, lambda: tf.reverse(resized, axis=[1]), lambda: resized)
  return normalize(resized)


def binarize_mask(mask: tf.Tensor, strict: bool) -> tf.Tensor:
  """A resized, cropped uint8 mask -> uint8 {0, 1}.

  Default (the published code): divide by the max and truncate to int, so only pixels equal to the max count.
  strict: threshold mask / max at 0.5. An all-zero mask stays all zero either way.
  """
  values = tf.cast(mask, tf.float32)
  peak = tf.reduce_max(values)
  if strict:
    binary = values >= 0.5 * peak
  else:
    binary = tf.equal(values, peak)
  return tf.cast(tf.logical_and(binary, peak > 0), tf.uint8)


def eval_transform(image: tf.Tensor, mask: tf.Tensor, mask_nearest: tf.Tensor, resize_size: int, image_size: int,
                   strict_masks: bool) -> tuple[tf.Tensor, tf.Tensor]:
  """Resize to resize_size² (bilinear, aspect not kept), centre-crop image_size; the mask likewise, binarised.

  Returns (uint8 (S, S, 3) image, uint8 (S, S) mask in {0, 1}).
  """
  size = (resize_size, resize_size)
  offset = centre_offset(resize_size, image_size)
  crop = slice(offset, offset + image_size)
  image = resize_like_pil(image, size, "bilinear")[crop, crop]
  mask = mask[..., None]
  mask = tf.cond(mask_nearest, lambda: resize_like_pil(mask, size, "nearest"),
                 lambda: resize_like_pil(mask, size, "bilinear"))[crop, crop, 0]
  return image, binarize_mask(mask, strict_masks)
