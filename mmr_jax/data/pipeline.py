"""tf.data pipelines with the published preprocessing: training batches per epoch, padded evaluation batches.

Training randomness (order, crop boxes, flips) is drawn in numpy from (seed, epoch) alone, per position in the
epoch, before tf.data starts; the per-image work (PIL crop and resize, in tf.data's threads) is a pure function
of those draws. So the batches of (seed, epoch)
are the same every time they are generated (a resumed run sees what the killed one would have), and a
position's augmentation does not depend on which host reads it: host h of n reads rows
[h·B/n, (h+1)·B/n) of every global batch, and the hosts' rows together are the single-host batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np
from absl import logging

from mmr_jax import runtime

from mmr_jax.data import decoding
from mmr_jax.data import layouts
from mmr_jax.data import preprocess
from mmr_jax.data import sources
from mmr_jax.data.layouts import DatasetError

has_masks = layouts.has_masks
denormalize = preprocess.denormalize

_CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params.
_PREFETCH_BATCHES = 2
# Streams of the per-epoch generator, so that adding a draw to one never shifts another.
_ORDER_STREAM, _CROP_STREAM, _FLIP_STREAM = 0, 1, 2


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
  return np.random.default_rng([seed % 2**63, epoch, stream])


def passes_per_epoch(num_examples: int, min_epoch_images: int) -> int:
  """Passes over the training set in one epoch: one (the published epoch), or as many as reach
  `min_epoch_images` (data.min_epoch_images: small sets of one's own then still take enough steps per epoch)."""
  return max(1, -(-min_epoch_images // num_examples))


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle_buffer: int = 0, passes: int = 1) -> np.ndarray:
  """Example indices in the order of the epoch: a full permutation, or tf.data's buffer shuffle when > 0; then,
  for `passes` > 1, further permutations (the first pass is the same whatever `passes` is)."""
  rng = _rng(seed, epoch, _ORDER_STREAM)
  if shuffle_buffer <= 0 or shuffle_buffer >= num_examples:
    return np.concatenate([rng.permutation(num_examples) for _ in range(passes)])
  buffer = list(range(shuffle_buffer))
  order = []
  for incoming in range(shuffle_buffer, num_examples):
    slot = int(rng.integers(len(buffer)))
    order.append(buffer[slot])
    buffer[slot] = incoming
  rng.shuffle(buffer)
  return np.concatenate([np.array(order + buffer)] + [rng.permutation(num_examples) for _ in range(passes - 1)])


def crop_boxes(
  shapes: np.ndarray, rng: np.random.Generator, scale: tuple[float, float], ratio: tuple[float, float]
) -> np.ndarray:
  """torchvision's RandomResizedCrop boxes for images of `shapes` (N, 2): (N, 4) int top, left, height, width.

  Per image: up to 10 draws of an area fraction in `scale` and a log-uniform aspect ratio in `ratio`; the first
  box that fits is placed uniformly; if none fits, the centre crop clamped to `ratio`.
  """
  n = len(shapes)
  height, width = shapes[:, 0:1].astype(np.float64), shapes[:, 1:2].astype(np.float64)
  draws = rng.random((n, _CROP_ATTEMPTS, 4))
  target_area = height * width * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])
  log_low, log_high = np.log(ratio[0]), np.log(ratio[1])
  aspect = np.exp(log_low + (log_high - log_low) * draws[..., 1])
  box_w = np.round(np.sqrt(target_area * aspect))
  box_h = np.round(np.sqrt(target_area / aspect))
  fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
  first = np.argmax(fits, axis=1)
  rows = np.arange(n)
  h, w = box_h[rows, first], box_w[rows, first]
  top = np.floor(draws[rows, first, 2] * (height[:, 0] - h + 1))
  left = np.floor(draws[rows, first, 3] * (width[:, 0] - w + 1))

  # Centre-crop fallback for images no draw fitted.
  fallback = ~fits.any(axis=1)
  full_h, full_w = height[:, 0], width[:, 0]
  in_ratio = full_w / full_h
  fb_w = np.where(in_ratio < ratio[0], full_w, np.where(in_ratio > ratio[1], np.round(full_h * ratio[1]), full_w))
  fb_h = np.where(in_ratio < ratio[0], np.round(full_w / ratio[0]), full_h)
  h = np.where(fallback, fb_h, h)
  w = np.where(fallback, fb_w, w)
  top = np.where(fallback, (full_h - fb_h) // 2, top)
  left = np.where(fallback, (full_w - fb_w) // 2, left)
  return np.stack([top, left, h, w], axis=1).astype(np.int64)


def epoch_plan(shapes: np.ndarray, seed: int, epoch: int, data: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """Everything random about one epoch, per position: example index, crop box and flip."""
  order = epoch_order(
    len(shapes), seed, epoch, data.shuffle_buffer, passes_per_epoch(len(shapes), data.min_epoch_images)
  )
  boxes = crop_boxes(shapes[order], _rng(seed, epoch, _CROP_STREAM), tuple(data.crop_scale), tuple(data.crop_ratio))
  flips = _rng(seed, epoch, _FLIP_STREAM).random(len(order)) < data.hflip_prob
  return dict(index=order, top=boxes[:, 0], left=boxes[:, 1], height=boxes[:, 2], width=boxes[:, 3], flip=flips)


def _local_batch(global_batch: int, process_index: int, process_count: int, what: str) -> int:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not one of {process_count} processes")
  if global_batch % process_count:
    raise ValueError(f"{what} ({global_batch}) must be divisible by the number of processes ({process_count})")
  return global_batch // process_count


def steps_per_epoch(config: ml_collections.ConfigDict, subset: str | None = None) -> int:
  """Global batches per epoch: the last, smaller one included, as the published DataLoader (drop_last=False)
  trains it; only full batches with data.drop_last."""
  num_examples = len(sources.train_set(config, subset))
  epoch_images = num_examples * passes_per_epoch(num_examples, config.data.min_epoch_images)
  if config.data.drop_last:
    steps = epoch_images // config.batch_size
  else:
    steps = -(-epoch_images // config.batch_size)
  if steps == 0:
    raise DatasetError(
      f"the training set has {num_examples} images, fewer than one batch "
      f"(batch_size={config.batch_size}, data.drop_last=True); lower --config.batch_size, add "
      f"images or keep the last batch"
    )
  return steps


def _parallel_map(
  columns: tuple[np.ndarray, ...], function, output_types, output_shapes, batch: int, drop_remainder: bool
):
  """tf.data over rows of `columns`: function(*row) in parallel threads (in order), batched, prefetched.
  `output_types` are dtype names ("float32"). TensorFlow is imported here, when a pipeline is first built, so that
  importing this module (as evaluation and training do) costs nothing on a machine that only scores.

  The per-row work is numpy and PIL, which release the GIL while resampling, so the threads overlap.
  """
  tf = runtime.import_tensorflow()
  output_types = tuple(tf.as_dtype(name) for name in output_types)

  @tf.autograph.experimental.do_not_convert
  def apply(*row):
    outputs = tf.numpy_function(function, list(row), output_types, stateful=False)
    for output, shape in zip(outputs, output_shapes):
      output.set_shape(shape)
    return outputs

  dataset = tf.data.Dataset.from_tensor_slices(columns)
  dataset = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.batch(batch, drop_remainder=drop_remainder).prefetch(_PREFETCH_BATCHES)


def train_batches(
  config: ml_collections.ConfigDict,
  epoch: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  *,
  subset: str | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """One epoch of this host's training batches: {"image": float32 (B_local, S, S, 3), ImageNet-normalised,
  "weight": float32 (B_local,)}. Every batch has the full shape, so the step compiles once: the rows past the
  epoch's last image (in its last batch, unless data.drop_last) are zero images with weight 0.

  A pure function of (seed, epoch). For mvtec, `subset` names the class (see layouts.train_subset).
  """
  local = _local_batch(config.batch_size, process_index, process_count, "batch_size")
  split = sources.train_set(config, subset)
  steps = steps_per_epoch(config, subset)
  plan = epoch_plan(split.shapes, seed, epoch, config.data)
  positions = (np.arange(steps)[:, None] * config.batch_size + process_index * local + np.arange(local)).ravel()
  real = positions < len(plan["index"])
  columns = tuple(
    np.where(real, plan[key][np.minimum(positions, len(plan["index"]) - 1)], -1)
    for key in ("index", "top", "left", "height", "width", "flip")
  )
  size = config.data.image_size

  def prepare(index, top, left, height, width, flip):
    if index < 0:  # Padding.
      return (np.zeros((size, size, 3), np.float32),)
    image = split.load(int(index))[0]
    return (preprocess.train_transform(image, (top, left, height, width), bool(flip), size),)

  dataset = _parallel_map(columns, prepare, ("float32",), ([size, size, 3],), local, drop_remainder=True)
  weights = real.astype(np.float32).reshape(steps, local)
  return ({"image": image, "weight": weight} for (image,), weight in zip(dataset.as_numpy_iterator(), weights))


@dataclasses.dataclass
class _EvalChunk:
  image: np.ndarray  # uint8 (n, S, S, 3)
  mask: np.ndarray  # uint8 (n, S, S) in {0, 1}
  label: np.ndarray  # int32 (n,)
  name: np.ndarray  # object (n,)
  kind: np.ndarray  # object (n,): the <type> folder, "good" for normal images.


def _eval_chunks(config: ml_collections.ConfigDict, split: decoding.DecodedSplit, batch: int) -> Iterator[_EvalChunk]:
  """Preprocessed test images in runs of `batch`, with the labels the metrics use."""
  data = config.data
  size = data.image_size
  with_masks = layouts.has_masks(config)

  def prepare(index):
    image, mask, nearest = split.load(int(index))
    return preprocess.eval_transform(image, mask, nearest, data.resize_size, size, bool(data.strict_mask_binarization))

  dataset = _parallel_map(
    (np.arange(len(split)),),
    prepare,
    ("uint8", "uint8"),
    ([size, size, 3], [size, size]),
    batch,
    drop_remainder=False,
  )
  folder_labels = np.array([example.label for example in split.examples], np.int32)
  names = np.array([example.name for example in split.examples], dtype=object)
  kinds = np.array([example.defect_type for example in split.examples], dtype=object)
  start = 0
  for image, mask in dataset.as_numpy_iterator():
    stop = start + len(image)
    label = folder_labels[start:stop]
    if with_masks:
      # The published metrics count an anomalous image whose mask is empty after cropping as normal.
      label = label * mask.any(axis=(1, 2)).astype(np.int32)
    yield _EvalChunk(image, mask, label, names[start:stop], kinds[start:stop])
    start = stop


_EVAL_SETS: dict[tuple, _EvalChunk] = {}


def _cached_eval_set(config: ml_collections.ConfigDict, subset: str) -> _EvalChunk:
  data = config.data
  key = sources.split_key(config, "test", subset) + (
    data.image_size,
    data.resize_size,
    bool(data.strict_mask_binarization),
  )
  if key not in _EVAL_SETS:
    split = sources.test_set(config, subset, keep_pixels=True)
    chunks = list(_eval_chunks(config, split, config.eval_batch_size))
    whole = _EvalChunk(*(np.concatenate([getattr(c, f.name) for c in chunks]) for f in dataclasses.fields(_EvalChunk)))
    emptied = int(sum(e.label for e in split.examples) - whole.label.sum())
    if emptied:
      logging.warning(
        "%s %s: %d anomalous images have no mask pixel left after the centre crop; they count as "
        "normal, as in the published evaluation",
        data.name,
        subset,
        emptied,
      )
    _EVAL_SETS[key] = whole
  return _EVAL_SETS[key]


def eval_batches(
  config: ml_collections.ConfigDict, subset: str, *, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  """The test images of one subset in batches padded to config.eval_batch_size (so the model compiles once).

  Yields {"image": float32 (b, S, S, 3), "mask": uint8 (b, S, S) in {0, 1}, "label": int32 (b,),
  "valid": bool (b,), "name": object (b,) relative paths, "kind": object (b,) defect types}; padding rows have
  valid False. With several processes, each yields its b = eval_batch_size / process_count rows of every global
  batch.
  """
  batch = config.eval_batch_size
  local = _local_batch(batch, process_index, process_count, "eval_batch_size")
  if config.data.cache:
    whole = _cached_eval_set(config, subset)
    chunks = (
      _EvalChunk(*(getattr(whole, f.name)[start : start + batch] for f in dataclasses.fields(_EvalChunk)))
      for start in range(0, len(whole.label), batch)
    )
  else:
    chunks = _eval_chunks(config, sources.test_set(config, subset, keep_pixels=False), batch)
  rows = slice(process_index * local, (process_index + 1) * local)
  return (_pad(chunk, batch, rows) for chunk in chunks)


def _pad(chunk: _EvalChunk, batch: int, rows: slice) -> dict[str, np.ndarray]:
  n = len(chunk.label)
  pad = batch - n

  def padded(values: np.ndarray, fill) -> np.ndarray:
    if pad:
      values = np.concatenate([values, np.full((pad,) + values.shape[1:], fill, values.dtype)])
    return values[rows]

  return {
    "image": preprocess.normalize(padded(chunk.image, 0)),
    "mask": padded(chunk.mask, 0),
    "label": padded(chunk.label, 0),
    "valid": padded(np.ones(n, bool), False),
    "name": padded(chunk.name, ""),
    "kind": padded(chunk.kind, ""),
  }


def calibration_batches(
  config: ml_collections.ConfigDict, subset: str | None = None
) -> Iterator[dict[str, np.ndarray]] | None:
  """The held-out normal training images (sources.calibration_set) as evaluation batches: the test transform,
  padded to config.eval_batch_size, the same keys as `eval_batches` (masks all zero, labels 0). None when
  data.calibration_fraction is 0."""
  split = sources.calibration_set(config, subset)
  if split is None:
    return None
  batch = config.eval_batch_size
  return (_pad(chunk, batch, slice(0, batch)) for chunk in _eval_chunks(config, split, batch))


def test_images(config: ml_collections.ConfigDict, subset: str, indices: Sequence[int]) -> np.ndarray:
  """The preprocessed test images of a subset at `indices` (in eval order) as uint8 (n, H, W, 3): the report's
  overlays read them again rather than keep every image of the scoring pass."""
  wanted = {int(i): None for i in indices}
  start = 0
  for batch in eval_batches(config, subset):
    rows = np.flatnonzero(batch["valid"])
    for row, index in zip(rows, range(start, start + len(rows))):
      if index in wanted:
        wanted[index] = denormalize(batch["image"][row])
    start += len(rows)
  return np.stack([wanted[int(i)] for i in indices])


def check_data(config: ml_collections.ConfigDict, subset: str | None = None) -> None:
  """Decodes every split a run reads — the training set and each test subset, images and masks — so that any
  data problem stops the run before its first step instead of after its last epoch. With data.cache the test
  sets stay decoded for the evaluation; without, only the list of checked files is kept."""
  sources.train_set(config, subset)
  for test_subset in layouts.subset_names(config):
    if config.data.cache:
      _cached_eval_set(config, test_subset)
    else:
      sources.test_set(config, test_subset, keep_pixels=False)
  check_adaptation_shots(config)


def check_adaptation_shots(config: ml_collections.ConfigDict) -> None:
  """With eval.adapt_shots = K, every test subset needs K normal images to adapt from and one more to score."""
  shots = config.eval.adapt_shots
  for test_subset in layouts.subset_names(config) if shots else ():
    normals = sum(
      e.defect_type == layouts.GOOD for e in sources.test_set(config, test_subset, keep_pixels=False).examples
    )
    if normals <= shots:
      raise DatasetError(
        f"the test subset {test_subset!r} has {normals} normal images: eval.adapt_shots={shots} needs at least "
        f"{shots + 1} (the shots, and one to score); lower --config.eval.adapt_shots"
      )


def clear_caches() -> None:
  """Forgets the memoised training and evaluation sets."""
  sources.clear_caches()
  _EVAL_SETS.clear()
