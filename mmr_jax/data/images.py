"""Decoding with PIL, as the published code's loader does, and the ImageNet statistics; no TensorFlow here.

Images are decoded with PIL on purpose: it is what torchvision's loader uses, so the pixels match the
published code exactly, and a file that PIL cannot read is caught with its path before TF ever sees it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _open(source: str | bytes) -> Image.Image:
  image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
  image.load()  # Decodes now, so that a truncated file fails here and not on first use.
  return image


# Grey images of more than 8 bits. PIL's convert("RGB"), which the published loader calls, clips their values at
# 255, so a 16-bit image comes out almost all white. mmr_jax deliberately scales them to 8 bits instead
# (value / 257, 65535 → 255), and `python -m mmr_jax check_data` names them; floating-point images are refused.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def decode_rgb(source: str | bytes) -> np.ndarray:
  """A file path or encoded bytes -> uint8 (H, W, 3)."""
  with _open(source) as image:
    if image.mode in HIGH_BIT_DEPTH_MODES:
      values = np.asarray(image).astype(np.int64)
      if values.min() < 0 or values.max() > 65535:
        raise ValueError(f"a {image.mode} image with values outside 0-65535; save it as 8- or 16-bit")
      grey = np.round(values / 257.0).astype(np.uint8)
      return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "F":
      raise ValueError("a floating-point image; save it as an 8- or 16-bit image")
    return np.asarray(image.convert("RGB"))


def has_high_bit_depth(source: str | bytes) -> bool:
  """Whether decode_rgb scales this file down from more than 8 bits (reads the header only)."""
  with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
    return image.mode in HIGH_BIT_DEPTH_MODES


def decode_mask(source: str | bytes) -> tuple[np.ndarray, bool]:
  """A mask file or bytes -> (uint8 (H, W), nearest).

  `nearest` is True for 1-bit and palette masks: PIL resizes those with nearest neighbour whatever filter is
  asked, so the published pipeline does too.
  """
  with _open(source) as image:
    nearest = image.mode in ("1", "P")
    return np.asarray(image.convert("L")), nearest


def limit_size(image: np.ndarray, mask: np.ndarray | None, max_side: int) -> tuple[np.ndarray, np.ndarray | None]:
  """Shrinks an image whose longer side exceeds `max_side` (0: never) to that side, keeping its aspect ratio:
  bicubic with PIL's antialiasing for the image, nearest neighbour for its mask (so that a mask stays binary)."""
  height, width = image.shape[:2]
  if not max_side or max(height, width) <= max_side:
    return image, mask
  factor = max_side / max(height, width)
  size = (max(1, round(width * factor)), max(1, round(height * factor)))
  image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
  if mask is not None:
    mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
  return image, mask


def describe_failure(path: str, error: BaseException) -> str:
  """A one-line message naming the file and why it does not decode."""
  reason = str(error) or type(error).__name__
  return f"{path}: does not decode as an image ({type(error).__name__}: {reason}); replace or remove the file"
