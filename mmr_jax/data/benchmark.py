"""Throughput of the training and evaluation pipelines, in images per second, on this machine's CPUs.

    python -m mmr_jax.data.benchmark --config=configs/synthetic.py
    python -m mmr_jax.data.benchmark --config=configs/aebad_s.py --config.data.root=data/synthetic

Measures, in order: building the decoded training set (the first call, which checks every file); training
epochs with the decoded images cached (the steady state) and, for comparison, decoding every epoch
(data.cache=False); the first evaluation pass over every subset (decode + resize + crop, which fills the
evaluation cache) and a cached pass. With config.data.synthetic (configs/synthetic.py) the generated dataset
is written to data.root first if it is not there yet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from absl import app
from absl import flags
from ml_collections import config_flags

from mmr_jax.data import layouts
from mmr_jax.data import pipeline
from mmr_jax.data import synthetic



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
  print(f"{data.name} at {data.root}: image_size {data.image_size}, resize_size {data.resize_size}, "
        f"batch {config.batch_size}, eval batch {config.eval_batch_size}, {os.cpu_count()} CPU cores")
  figures = {}

  start = time.perf_counter()
  steps = pipeline.steps_per_epoch(config)
  built = time.perf_counter() - start
  print(f"training set decoded and checked in {built:.2f} s ({steps} steps of {config.batch_size})")

  count, seconds = _timed(lambda: pipeline.train_batches(config, 0, config.seed))
  print(f"train, first epoch (tf.data warm-up)  {_rate(count, seconds)}")
  count, seconds = _timed(lambda: (b for e in range(1, epochs + 1) for b in pipeline.train_batches(config, e,
                                                                                                     config.seed)))
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


def main(argv) -> None:
  del argv
  run(flags.FLAGS.config, flags.FLAGS.epochs)


if __name__ == "__main__":
  # Defined here, not at import: a module that defines flags cannot be imported beside another that does.
  config_flags.DEFINE_config_file("config", None, "A run config, e.g. configs/synthetic.py.", lock_config=False)
  flags.DEFINE_integer("epochs", 3, "Training epochs timed (after a first, warm-up epoch).")
  app.run(main)
