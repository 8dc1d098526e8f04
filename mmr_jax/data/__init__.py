"""Datasets for MMR: folder layouts, TFDS builders, tf.data pipelines, the generated dataset and its checks.

Importing this package imports neither TensorFlow nor the generator: the pipeline functions load TF on first
use, so code that only needs `DatasetError`, `has_masks` or `denormalize` runs where TF is not installed.
"""

import importlib

from mmr_jax.data.preprocess import denormalize
from mmr_jax.data.layouts import DatasetError
from mmr_jax.data.layouts import has_masks
from mmr_jax.data.layouts import subset_names

_LAZY = {
    "train_batches": "mmr_jax.data.pipeline",
    "eval_batches": "mmr_jax.data.pipeline",
    "steps_per_epoch": "mmr_jax.data.pipeline",
    "ensure_synthetic": "mmr_jax.data.synthetic",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
