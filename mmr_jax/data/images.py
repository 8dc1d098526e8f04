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


def decode_rgb(source: str | bytes) -> np.ndarray:
  """A file path or encoded bytes -> uint8 (H, W, 3)."""
  with _open(source) as image:
    return np.asarray(image.convert("RGB"))


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
