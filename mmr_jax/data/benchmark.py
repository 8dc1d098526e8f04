"""Throughput of the training and evaluation pipelines, in images per second, on this machine's CPUs.

    python -m mmr_jax benchmark_data --config=configs/synthetic.py
    python -m mmr_jax benchmark_data --config=configs/aebad_s.py --config.data.root=data/synthetic
    python -m mmr_jax benchmark_data --config=configs/aebad_s.py --transforms   # per core, 1 / 4 / 9 MP originals

With --transforms: the per-image work alone, on one core (one thread), from generated photo-like originals of
about 1, 4 and 9 megapixels (PNG): the training transform (RandomResizedCrop, flip, normalisation) and the
evaluation transform (resize, centre crop), each with the decoded image given and with the PNG decoded first.
Then the same from originals shrunk once to data.max_image_side (--max_side, antialiased; the route for large
photographs), with the cost of that shrink and the pixel difference its outputs have from the published
transform's on the same (scaled) crop boxes, in grey levels.

Measures, in order: building the decoded training set (the first call, which checks every file); training
epochs with the decoded images cached (the steady state) and, for comparison, decoding every epoch
(data.cache=False); the first evaluation pass over every subset (decode + resize + crop, which fills the
evaluation cache) and a cached pass. With config.data.synthetic (configs/synthetic.py) the generated dataset
is written to data.root first if it is not there yet.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image


from mmr_jax.data import images
from mmr_jax.data import layouts
from mmr_jax.data import pipeline
from mmr_jax.data import preprocess
from mmr_jax.data import synthetic
from mmr_jax.data.synthetic import scene


def _timed(batches: Callable[[], Iterable[dict]]) -> tuple[int, float]:
  start = time.perf_counter()
  count = sum(len(batch["image"]) if "valid" not in batch else int(batch["valid"].sum()) for batch in batches())
  return count, time.perf_counter() - start


def _rate(count: int, seconds: float) -> str:
  return f"{count / seconds:8.1f} images/s  ({count} images in {seconds:.2f} s)"


def run(config, epochs: int) -> dict[str, float]:
  """Prints and returns the figures (images/s)."""
  if config.data.synthetic:
    synthetic.ensure_synthetic(config.data.root, seed=config.data.synthetic_seed)
  data = config.data
  print(
    f"{data.name} at {data.root}: image_size {data.image_size}, resize_size {data.resize_size}, "
    f"batch {config.batch_size}, eval batch {config.eval_batch_size}, {os.cpu_count()} CPU cores"
  )
  figures = {}

  start = time.perf_counter()
  steps = pipeline.steps_per_epoch(config)
  built = time.perf_counter() - start
  print(f"training set decoded and checked in {built:.2f} s ({steps} steps of {config.batch_size})")

  count, seconds = _timed(lambda: pipeline.train_batches(config, 0, config.seed))
  print(f"train, first epoch (tf.data warm-up)  {_rate(count, seconds)}")
  count, seconds = _timed(
    lambda: (b for e in range(1, epochs + 1) for b in pipeline.train_batches(config, e, config.seed))
  )
  figures["train"] = count / seconds
  print(f"train, cached images                 {_rate(count, seconds)}")

  uncached = config.copy_and_resolve_references()
  uncached.data.cache = False
  pipeline.steps_per_epoch(uncached)  # Its own (pixel-free) check of the files, not timed.
  count, seconds = _timed(lambda: pipeline.train_batches(uncached, 1, config.seed))
  figures["train_uncached"] = count / seconds
  print(f"train, decoding every epoch          {_rate(count, seconds)}")

  subsets = layouts.subset_names(config)
  count, seconds = _timed(lambda: (b for s in subsets for b in pipeline.eval_batches(config, s)))
  figures["eval_first"] = count / seconds
  print(f"eval, first pass (decode + preprocess) {_rate(count, seconds)}")
  count, seconds = _timed(lambda: (b for s in subsets for b in pipeline.eval_batches(config, s)))
  figures["eval_cached"] = count / seconds
  print(f"eval, cached                         {_rate(count, seconds)}")
  return figures


def photo_like(megapixels: float, seed: int) -> np.ndarray:
  """A uint8 RGB image of about `megapixels` (4:3): smooth colour fields, edges and sensor-like noise, so that PNG
  compresses it about as poorly as a photograph."""
  rng = np.random.default_rng(seed)
  height = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
  width = int(round(height * 4 / 3))
  fields = [scene.smooth_noise(rng, (height, width), (6, 8)) for _ in range(3)]
  edges = (scene.smooth_noise(rng, (height, width), (24, 32)) > 0.4) * 60.0
  image = 128 + 40 * np.stack(fields, axis=-1) + edges[..., None] + rng.normal(0, 6, (height, width, 3))
  return np.clip(image, 0, 255).astype(np.uint8)


def _per_second(work: Callable[[int], object], count: int) -> float:
  work(0)  # Warm-up.
  start = time.perf_counter()
  for i in range(count):
    work(i)
  return count / (time.perf_counter() - start)


def transform_rates(config, megapixels: Iterable[float], count: int, max_side: int) -> list[dict]:
  """Per-core rates (images/s) of the training and evaluation transforms from originals of each size, as given and
  shrunk to `max_side`; the shrink's cost; the shrunk route's grey-level difference from the published one."""
  data, size = config.data, config.data.image_size
  rows = []
  for mp in megapixels:
    originals = [photo_like(mp, seed) for seed in range(count)]
    encoded = []
    for image in originals:
      buffer = io.BytesIO()
      Image.fromarray(image).save(buffer, format="PNG", compress_level=6)
      encoded.append(buffer.getvalue())
    shapes = np.array([image.shape[:2] for image in originals])
    boxes = pipeline.crop_boxes(shapes, np.random.default_rng(0), tuple(data.crop_scale), tuple(data.crop_ratio))
    train = lambda image, box: preprocess.train_transform(image, tuple(box), False, size)
    evaluate = lambda image: preprocess.eval_transform(image, None, False, data.resize_size, size, False)[0]
    row = {
      "megapixels": mp,
      "shape": tuple(int(v) for v in shapes[0]),
      "train": _per_second(lambda i: train(originals[i], boxes[i]), count),
      "train_decode": _per_second(lambda i: train(images.decode_rgb(encoded[i]), boxes[i]), count),
      "eval": _per_second(lambda i: evaluate(originals[i]), count),
      "eval_decode": _per_second(lambda i: evaluate(images.decode_rgb(encoded[i])), count),
    }
    shrunk = [images.limit_size(image, None, max_side)[0] for image in originals]
    row["shrink"] = _per_second(lambda i: images.limit_size(originals[i], None, max_side), count)
    factor = shrunk[0].shape[0] / originals[0].shape[0]
    small_boxes = [np.maximum(1, np.round(np.asarray(box) * factor)).astype(int) for box in boxes]
    row["train_shrunk"] = _per_second(lambda i: train(shrunk[i], small_boxes[i]), count)
    row["eval_shrunk"] = _per_second(lambda i: evaluate(shrunk[i]), count)
    train_diff = [
      np.abs(preprocess.denormalize(train(o, b)).astype(int) - preprocess.denormalize(train(s, sb)))
      for o, b, s, sb in zip(originals, boxes, shrunk, small_boxes)
    ]
    eval_diff = [np.abs(evaluate(o).astype(int) - evaluate(s)) for o, s in zip(originals, shrunk)]
    row.update(
      train_diff_mean=float(np.mean(train_diff)),
      train_diff_max=int(np.max(train_diff)),
      eval_diff_mean=float(np.mean(eval_diff)),
      eval_diff_max=int(np.max(eval_diff)),
    )
    rows.append(row)
  print(
    f"per core (one thread), {count} PNG originals per size, to {size}² (eval: resize {data.resize_size}, crop "
    f"{size}); images/s"
  )
  print(
    f"{'MP':>4} {'shape':>11} | {'train':>7} {'+decode':>7} | {'eval':>7} {'+decode':>7} | shrunk to {max_side}: "
    f"{'shrink':>6} {'train':>7} {'eval':>7}  grey-level diff train mean/max, eval mean/max"
  )
  for r in rows:
    print(
      f"{r['megapixels']:4.0f} {r['shape'][0]:>5}×{r['shape'][1]:<5} | {r['train']:7.1f} "
      f"{r['train_decode']:7.1f} | {r['eval']:7.1f} {r['eval_decode']:7.1f} |             "
      f"{r['shrink']:6.1f} {r['train_shrunk']:7.1f} {r['eval_shrunk']:7.1f}  "
      f"{r['train_diff_mean']:.2f}/{r['train_diff_max']}, {r['eval_diff_mean']:.2f}/{r['eval_diff_max']}"
    )
  return rows
