"""Decoding with PIL, as the published code's loader does, and the ImageNet statistics; no TensorFlow here.

Images are decoded with PIL on purpose: it is what torchvision's loader uses, so the pixels match the
published code exactly, and a file that PIL cannot read is caught with its path before TF ever sees it.

One deliberate difference: an EXIF orientation tag (cameras and phones store a portrait photo as landscape pixels
plus "turn by 90°") is applied, as every image viewer does, to images and masks alike, each by its own tag. The
published loader ignores it, so its model sees such a photo on its side, and a mask drawn on the image as a viewer
shows it lies 90° off its pixels. AeBAD and MVTec AD carry no such tag: nothing changes for them.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image
from PIL import ImageOps

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


EXIF_ORIENTATION = 0x0112  # 1: as stored; 2-8: mirrored and/or turned.


def _open(source: str | bytes) -> Image.Image:
  image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
  image.load()  # Decodes now, so that a truncated file fails here and not on first use.
  if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
    turned = ImageOps.exif_transpose(image)  # As a viewer shows it (module docstring).
    image.close()
    return turned
  return image


@dataclasses.dataclass(frozen=True)
class Facts:
  """What `data.check` says of an image beyond whether it decodes."""

  high_bit_depth: bool  # More than 8 bits per pixel: scaled to 8 here (see HIGH_BIT_DEPTH_MODES).
  orientation: int  # Its EXIF orientation tag (1 when it has none).
  transparent: bool  # An alpha channel with transparent pixels, which RGB decoding drops (they show their colour).
  size: tuple[int, int]  # (width, height) as stored.


def facts(source: str | bytes) -> Facts:
  """The Facts of an image file (its alpha channel decoded only where it has one)."""
  with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
    transparent = False
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
      alpha = np.asarray(image.convert("RGBA").getchannel("A"))
      transparent = bool(alpha.min() < 255)
    return Facts(
      image.mode in HIGH_BIT_DEPTH_MODES, int(image.getexif().get(EXIF_ORIENTATION, 1)), transparent, image.size
    )


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
