"""How far resize implementations are from the PyTorch/PIL path, in grey levels (0-255), and how fast they are.

    python tools/compare_pil.py

A one-off study behind the choice of PIL in mmr_jax/data/preprocess.py; tests/test_data_pipeline.py checks its
figures.

torchvision's Resize((256, 256)) on a PIL image is PIL's bilinear resize, which widens its filter when it
downscales (antialiasing), resamples the width then the height and rounds to uint8 after each pass;
CenterCrop(224) follows. RandomResizedCrop is PIL's crop and bicubic resize. This prints the mean and max
absolute pixel difference to those references (written here independently of the pipeline) of:
  pipeline         mmr_jax.data.preprocess, which the tf.data pipelines run (PIL itself: expected 0);
  tf               tf.image.resize, no antialiasing;
  tf antialias     tf.image.resize(antialias=True), one pass;
  tf two-pass      antialiased width then height with uint8 rounding between, as PIL does;
on generated blade images (AeBAD-S-like, 256x288) and on ~1000-px photo-like images (AeBAD's originals are
about that size), with each variant's time per image, plus the number of binarised mask pixels that differ.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from mmr_jax import runtime
from mmr_jax.data import preprocess
from mmr_jax.data import synthetic

tf = runtime.import_tensorflow()  # Resizes compared on the CPU.


def sample_images(count: int = 4, seed: int = 0) -> dict[str, list[np.ndarray]]:
  """Generated test images: blades at 256x288, and ~1000-px photo-like ones (a blade; 1/f noise)."""
  rng = np.random.default_rng(seed)
  blades = [
    synthetic.render_blade_image(rng, domain, "groove", (256, 288))[0]
    for domain in synthetic.DOMAINS
    for _ in range(max(1, count // 4))
  ]
  large = [synthetic.render_blade_image(rng, "same", "ablation", (1000, 1100))[0]]
  for _ in range(max(1, count // 2)):
    # 1/f ("pink") noise: the power spectrum of natural photographs.
    fy, fx = np.fft.fftfreq(1000)[:, None], np.fft.fftfreq(1100)[None, :]
    spectrum = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / 1100)
    phases = np.exp(2j * np.pi * rng.random((1000, 1100, 3)))
    field = np.real(np.fft.ifft2(spectrum[..., None] * phases, axes=(0, 1)))
    field = (field - field.mean()) / field.std()
    large.append(np.clip(128 + 40 * field, 0, 255).astype(np.uint8))
  return {"blades 256x288": blades, "photo-like 1000x1100": large}


def pil_resize(image: np.ndarray, size: int, bicubic: bool) -> np.ndarray:
  """The reference: what torchvision does to a PIL image."""
  resample = Image.Resampling.BICUBIC if bicubic else Image.Resampling.BILINEAR
  return np.asarray(Image.fromarray(image).resize((size, size), resample))


def _to_uint8(values: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.floor(values + 0.5), 0.0, 255.0), tf.uint8)


def tf_resize(image: np.ndarray, size: int, bicubic: bool, antialias: bool, two_pass: bool) -> np.ndarray:
  method = "bicubic" if bicubic else "bilinear"
  values = tf.cast(tf.constant(image), tf.float32)
  if two_pass:
    if image.shape[1] != size:
      values = tf.cast(
        _to_uint8(tf.image.resize(values, (image.shape[0], size), method, antialias=antialias)), tf.float32
      )
    if image.shape[0] != size:
      values = tf.image.resize(values, (size, size), method, antialias=antialias)
    return _to_uint8(values).numpy()
  return _to_uint8(tf.image.resize(values, (size, size), method, antialias=antialias)).numpy()


def pipeline_resize(image: np.ndarray, size: int, bicubic: bool) -> np.ndarray:
  """The project's preprocessing, resize part (cropping is separate and exact integer slicing)."""
  if bicubic:
    box = (0, 0) + image.shape[:2]
    return preprocess.denormalize(preprocess.train_transform(image, box, False, size))
  return preprocess.eval_transform(image, None, False, size, size, False)[0]


VARIANTS = {
  "pipeline": pipeline_resize,
  "tf": lambda image, size, bicubic: tf_resize(image, size, bicubic, antialias=False, two_pass=False),
  "tf antialias": lambda image, size, bicubic: tf_resize(image, size, bicubic, antialias=True, two_pass=False),
  "tf two-pass": lambda image, size, bicubic: tf_resize(image, size, bicubic, antialias=True, two_pass=True),
}


def measure(images: list[np.ndarray], size: int, bicubic: bool) -> dict[str, tuple[float, float, float]]:
  """{variant: (mean abs difference, max abs difference, milliseconds per image)} against PIL."""
  references = [pil_resize(image, size, bicubic) for image in images]
  start = time.perf_counter()
  for image in images:
    pil_resize(image, size, bicubic)
  pil_ms = (time.perf_counter() - start) / len(images) * 1e3
  figures = {"PIL": (0.0, 0.0, pil_ms)}
  for name, resize in VARIANTS.items():
    resize(images[0], size, bicubic)  # Warm-up (TF builds its kernels).
    start = time.perf_counter()
    outputs = [resize(image, size, bicubic) for image in images]
    milliseconds = (time.perf_counter() - start) / len(images) * 1e3
    diffs = np.concatenate(
      [np.abs(o.astype(np.int32) - r.astype(np.int32)).ravel() for o, r in zip(outputs, references)]
    )
    figures[name] = (float(diffs.mean()), float(diffs.max()), milliseconds)
  return figures


def mask_disagreement(resize_size: int, image_size: int, count: int = 8, seed: int = 0) -> tuple[int, int]:
  """(pixels whose binarised mask differs from the published PIL path, anomalous pixels) on generated masks."""
  rng = np.random.default_rng(seed)
  differ = total = 0
  offset = preprocess.centre_offset(resize_size, image_size)
  crop = slice(offset, offset + image_size)
  for kind in synthetic.DEFECT_TYPES * max(1, count // 4):
    image, truth = synthetic.render_blade_image(rng, "same", kind, (256, 288))
    mask = truth.astype(np.uint8) * 255
    resized = pil_resize(mask, resize_size, False)[crop, crop].astype(np.float64)
    # The published metrics: mask / max, truncated to int.
    published = (resized / resized.max()).astype(np.int64) if resized.max() > 0 else np.zeros_like(resized)
    ours = preprocess.eval_transform(image, mask, False, resize_size, image_size, False)[1]
    differ += int((published != ours).sum())
    total += int(published.sum())
  return differ, total


def main() -> None:
  groups = sample_images()
  print("absolute difference to PIL (torchvision's path), grey levels 0-255: mean / max, and ms per image")
  for what, size, bicubic in (
    ("eval: Resize bilinear", 256, False),
    ("eval: Resize bilinear", 73, False),
    ("train: RandomResizedCrop bicubic", 224, True),
  ):
    for name, group in groups.items():
      figures = measure(group, size, bicubic)
      cells = "  ".join(
        f"{key}: {mean:.3f} / {peak:.0f} ({ms:.1f} ms)" for key, (mean, peak, ms) in figures.items() if key != "PIL"
      )
      print(f"  {what} to {size}, {name}: PIL {figures['PIL'][2]:.1f} ms;  {cells}")
  for resize_size, image_size in ((256, 224), (73, 64)):
    differ, total = mask_disagreement(resize_size, image_size)
    print(f"  masks {resize_size}->{image_size}: {differ} of {total} anomalous pixels binarised differently")


if __name__ == "__main__":
  main()
