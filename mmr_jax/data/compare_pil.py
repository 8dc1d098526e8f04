"""How far the TF preprocessing is from the PyTorch/PIL path, in grey levels (0-255).

    python -m mmr_jax.data.compare_pil

torchvision's Resize((256, 256)) on a PIL image is PIL's bilinear resize, which widens its filter when it
downscales (antialiasing) and rounds to uint8; CenterCrop(224) follows. RandomResizedCrop is PIL's crop and
bicubic resize. This prints the mean and max absolute pixel difference between those and
`preprocess.eval_transform` / `preprocess.train_transform`, with and without antialiasing, on generated blade
images (AeBAD-S-like, 256 px) and on large photo-like images (~1000 px, like AeBAD's originals), plus the
number of mask pixels whose binarised value differs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image

from mmr_jax.data import preprocess
from mmr_jax.data import synthetic


def sample_images(count: int = 6, seed: int = 0) -> dict[str, list[np.ndarray]]:
  """Generated test images: blades at 256x288, and ~1000-px photo-like ones (a blade; 1/f noise)."""
  rng = np.random.default_rng(seed)
  blades = [synthetic.render_blade_image(rng, domain, "groove", (256, 288))[0]
            for domain in synthetic.DOMAINS for _ in range(max(1, count // 4))]
  large = [synthetic.render_blade_image(rng, "same", "ablation", (1000, 1100))[0]]
  for _ in range(max(1, count // 3)):
    # 1/f ("pink") noise: the power spectrum of natural photographs.
    fy, fx = np.fft.fftfreq(1000)[:, None], np.fft.fftfreq(1100)[None, :]
    spectrum = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / 1100)
    phases = np.exp(2j * np.pi * rng.random((1000, 1100, 3)))
    field = np.real(np.fft.ifft2(spectrum[..., None] * phases, axes=(0, 1)))
    field = (field - field.mean()) / field.std()
    large.append(np.clip(128 + 40 * field, 0, 255).astype(np.uint8))
  return {"blades 256x288": blades, "photo-like 1000x1100": large}


def pil_eval(image: np.ndarray, resize_size: int, image_size: int) -> np.ndarray:
  """torchvision Resize((R, R)) + CenterCrop(S) on a PIL image."""
  resized = np.asarray(Image.fromarray(image).resize((resize_size, resize_size), Image.Resampling.BILINEAR))
  offset = preprocess.centre_offset(resize_size, image_size)
  return resized[offset:offset + image_size, offset:offset + image_size]


def tf_eval(image: np.ndarray, resize_size: int, image_size: int, antialias: bool = True) -> np.ndarray:
  if antialias:
    zeros = np.zeros(image.shape[:2], np.uint8)
    return preprocess.eval_transform(image, zeros, tf.constant(False), resize_size, image_size, False)[0].numpy()
  resized = tf.image.resize(image.astype(np.float32), (resize_size, resize_size), method="bilinear")
  offset = preprocess.centre_offset(resize_size, image_size)
  resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
  return resized[offset:offset + image_size, offset:offset + image_size]


def pil_train(crop: np.ndarray, image_size: int) -> np.ndarray:
  """RandomResizedCrop's resize: PIL bicubic of the cut box."""
  return np.asarray(Image.fromarray(crop).resize((image_size, image_size), Image.Resampling.BICUBIC))


def tf_train(crop: np.ndarray, image_size: int) -> np.ndarray:
  return preprocess.resize_like_pil(crop, (image_size, image_size), "bicubic").numpy()


def _differences(pairs) -> tuple[float, float]:
  diffs = np.concatenate([np.abs(a.astype(np.int32) - b.astype(np.int32)).ravel() for a, b in pairs])
  return float(diffs.mean()), float(diffs.max())


def measure(images: list[np.ndarray], resize_size: int, image_size: int) -> dict[str, tuple[float, float]]:
  """{"eval": (mean, max), "eval_no_antialias": ..., "train": ...}: absolute differences in grey levels."""
  rng = np.random.default_rng(0)
  crops = []
  for image in images:
    height, width = image.shape[:2]
    h, w = int(height * rng.uniform(0.8, 1.0)), int(width * rng.uniform(0.8, 1.0))
    top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    crops.append(image[top:top + h, left:left + w])
  return {
      "eval": _differences((tf_eval(i, resize_size, image_size), pil_eval(i, resize_size, image_size))
                           for i in images),
      "eval_no_antialias": _differences((tf_eval(i, resize_size, image_size, antialias=False),
                                         pil_eval(i, resize_size, image_size)) for i in images),
      "train": _differences((tf_train(c, image_size), pil_train(c, image_size)) for c in crops),
  }


def mask_disagreement(resize_size: int, image_size: int, count: int = 8, seed: int = 0) -> tuple[int, int]:
  """(pixels whose binarised mask differs from the published PIL path, anomalous pixels) over generated masks."""
  rng = np.random.default_rng(seed)
  differ = total = 0
  for kind in synthetic.DEFECT_TYPES * (count // 4):
    _, truth = synthetic.render_blade_image(rng, "same", kind, (256, 288))
    mask = truth.astype(np.uint8) * 255
    resized = pil_eval(mask, resize_size, image_size).astype(np.float64)
    published = (resized / resized.max()).astype(np.int64) if resized.max() > 0 else np.zeros_like(resized)
    ours = preprocess.eval_transform(np.zeros(mask.shape + (3,), np.uint8), mask, tf.constant(False), resize_size,
                                     image_size, False)[1].numpy()
    differ += int((published != ours).sum())
    total += int(published.sum())
  return differ, total


def main() -> None:
  groups = sample_images()
  print("absolute difference to the PIL path, grey levels 0-255: mean / max")
  for resize_size, image_size in ((256, 224), (73, 64)):
    for name, group in groups.items():
      figures = measure(group, resize_size, image_size)
      cells = "  ".join(f"{key} {mean:.3f} / {peak:.0f}" for key, (mean, peak) in figures.items())
      print(f"  {resize_size}->{image_size}  {name:22s} {cells}")
    differ, total = mask_disagreement(resize_size, image_size)
    print(f"  {resize_size}->{image_size}  masks: {differ} of {total} anomalous pixels binarised differently")


if __name__ == "__main__":
  main()
