"""Checks a run's config before anything is computed, so that a bad value fails with a message, not mid-run.

Unknown keys are already rejected by `ml_collections` (a locked ConfigDict) when given on the command line as
`--config.some.key=value`; this module checks values and their combinations.
"""

import math

import ml_collections

from mmr_jax import errors
from mmr_jax import runtime
from mmr_jax.data import layouts
from mmr_jax.models import layers
from mmr_jax.models import mmr
from mmr_jax.models import teachers


class ConfigError(errors.UserError, ValueError):
  """A config value that cannot work; the message names the key and what to set instead."""

  exit_code = 2


def seeds_of(config: ml_collections.ConfigDict) -> list[int]:
  """The seeds a config trains side by side: seed, seed + 1, … (num_seeds of them)."""
  return [config.seed + k for k in range(config.num_seeds)]


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf key of a config, dotted: "eval.threshold_fpr", ..."""
  keys = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys += flat_keys(value, f"{prefix}{key}.")
    else:
      keys.append(f"{prefix}{key}")
  return keys


def _non_finite(config: ml_collections.ConfigDict) -> list[str]:
  return [key for key in flat_keys(config) if isinstance(v := config[key], float) and not math.isfinite(v)]


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def _split_comma_lists(config: ml_collections.ConfigDict, prefix: str = "") -> None:
  """`--config.data.subsets=same,view` arrives as the one-string tuple ("same,view",): split such strings, so
  that the comma form means what it says (numbers in tuples are already parsed so by ml_collections)."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      _split_comma_lists(value, f"{prefix}{key}.")
    elif isinstance(value, tuple) and value and all(isinstance(item, str) for item in value):
      parts = tuple(part.strip() for item in value for part in item.split(","))
      if parts != value:
        _require(all(parts), f"{prefix}{key} has an empty entry in {','.join(value)!r}; list names as a,b,c")
        config[key] = parts


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the first bad key; returns the config (locked) otherwise."""
  _split_comma_lists(config)
  bad = _non_finite(config)
  _require(not bad, f"{', '.join(f'{k}={config[k]}' for k in bad)}: every number of a config must be finite")
  _require(isinstance(config.seed, int) and config.seed >= 0, f"seed must be a non-negative int, got {config.seed!r}")
  _require(config.num_seeds >= 1, f"num_seeds must be ≥ 1, got {config.num_seeds}")
  _require(config.num_epochs >= 0, f"num_epochs must be ≥ 0, got {config.num_epochs}")
  _require(config.batch_size >= 1, f"batch_size must be ≥ 1, got {config.batch_size}")
  _require(config.eval_batch_size >= 1, f"eval_batch_size must be ≥ 1, got {config.eval_batch_size}")
  _require(
    config.checkpoint_every_epochs >= 1, f"checkpoint_every_epochs must be ≥ 1, got {config.checkpoint_every_epochs}"
  )
  _require(config.eval_every_epochs >= 0, f"eval_every_epochs must be ≥ 0, got {config.eval_every_epochs}")

  data = config.data
  _require(data.name in layouts.DATASET_NAMES, f"data.name must be one of {layouts.DATASET_NAMES}, got {data.name!r}")
  if data.name == "mvtec":
    if tuple(data.subsets) == ("all",):
      data.subsets = layouts.MVTEC_CLASSES
    unknown = [s for s in data.subsets if s not in layouts.MVTEC_CLASSES]
    _require(
      not unknown,
      f"unknown MVTec AD class(es) {', '.join(unknown)}; data.subsets names classes of "
      f"{', '.join(layouts.MVTEC_CLASSES)}, or 'all' (configs/mvtec.py:CLASS trains one)",
    )
  _require(bool(data.root), "data.root is empty: pass --config.data.root=DIR, the folder that holds the dataset")
  _require(len(data.subsets) >= 1, "data.subsets must name at least one test subset")
  size, patch = data.image_size, config.model.vit.patch_size
  _require(
    size > 0 and size % patch == 0, f"data.image_size must be a positive multiple of the patch size {patch}, got {size}"
  )
  # resize_size < image_size is allowed: the centre crop then pads a black border, as torchvision's does.
  _require(data.resize_size > 0, f"data.resize_size must be > 0, got {data.resize_size}")
  low, high = data.crop_scale
  _require(0 < low <= high <= 1, f"data.crop_scale must satisfy 0 < low ≤ high ≤ 1, got {tuple(data.crop_scale)}")
  _require(0 < data.crop_ratio[0] <= data.crop_ratio[1], "data.crop_ratio must be increasing and positive")
  _require(0 <= data.hflip_prob <= 1, f"data.hflip_prob must lie in [0, 1], got {data.hflip_prob}")
  _require(data.min_epoch_images >= 0, f"data.min_epoch_images must be ≥ 0, got {data.min_epoch_images}")
  _require(
    data.max_image_side == 0 or data.max_image_side >= max(data.resize_size, size),
    f"data.max_image_side ({data.max_image_side}) must be 0 (keep the originals) or ≥ data.resize_size "
    f"({data.resize_size}) and ≥ data.image_size ({size}), so that no image is shrunk below what the test "
    f"resize or the training crop needs",
  )
  _require(
    0 <= data.calibration_fraction < 1,
    f"data.calibration_fraction must lie in [0, 1) (0: no held-out normals, the published protocol), got "
    f"{data.calibration_fraction}",
  )

  model = config.model
  vit = model.vit
  _require(
    vit.width % vit.num_heads == 0,
    f"model.vit.width ({vit.width}) must be divisible by model.vit.num_heads ({vit.num_heads})",
  )
  _require(vit.width % 4 == 0, f"model.vit.width must be a multiple of 4 (2-D sin-cos table), got {vit.width}")
  _require(
    model.teacher in teachers.TEACHERS,
    f"model.teacher must be one of {tuple(teachers.TEACHERS)}, got {model.teacher!r}",
  )
  _require(0 <= model.mask_ratio < 1, f"model.mask_ratio must lie in [0, 1), got {model.mask_ratio}")
  _require(
    model.compute_dtype in mmr.COMPUTE_DTYPES,
    f"model.compute_dtype must be one of {tuple(mmr.COMPUTE_DTYPES)}, got {model.compute_dtype!r}",
  )
  _require(
    model.conv3x3 in runtime.CONV3X3_CHOICES,
    f"model.conv3x3 must be one of {runtime.CONV3X3_CHOICES}, got {model.conv3x3!r}",
  )
  _require(
    model.precision in layers.PRECISIONS, f"model.precision must be one of {layers.PRECISIONS}, got {model.precision!r}"
  )
  _require(
    0 <= config.eval.test_mask_ratio < 1, f"eval.test_mask_ratio must lie in [0, 1), got {config.eval.test_mask_ratio}"
  )
  shots = config.eval.adapt_shots
  _require(
    isinstance(shots, int) and shots >= 0, f"eval.adapt_shots must be an int ≥ 0 (0: no adaptation), got {shots!r}"
  )
  _require(
    shots == 0 or config.eval.test_mask_ratio == 0,
    "eval.adapt_shots > 0 scores with the whole image seen: it needs eval.test_mask_ratio=0 (the published setting)",
  )
  _require(
    0 < config.eval.threshold_fpr < 1,
    f"eval.threshold_fpr must lie in (0, 1), e.g. 0.01 for a 1 % false-positive rate, got {config.eval.threshold_fpr}",
  )

  optim = config.optim
  _require(optim.lr > 0, f"optim.lr must be > 0, got {optim.lr}")
  _require(optim.warmup_epochs >= 0, f"optim.warmup_epochs must be ≥ 0, got {optim.warmup_epochs}")
  _require(list(optim.decay_epochs) == sorted(optim.decay_epochs), "optim.decay_epochs must be increasing")
  _require(0 <= optim.b1 < 1 and 0 <= optim.b2 < 1, "optim.b1 and optim.b2 must lie in [0, 1)")
  _require(optim.weight_decay >= 0, f"optim.weight_decay must be ≥ 0, got {optim.weight_decay}")
  config.lock()
  return config
