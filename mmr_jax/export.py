"""Exports a trained MMR for use without this project (the command: `python -m mmr_jax export --workdir=W`).

The exported function is teacher + student + anomaly map + image score with one seed's weights inside:
uint8 RGB images (B, S, S, 3), already resized and centre-cropped as the test transform does (model.json says
how), in; the smoothed anomaly maps (B, S, S) and the image scores (B,), float32, out. B is symbolic.

- `jax`: DIR/model.jax, a serialised `jax.export.Exported` (StableHLO) lowered for the CPU, CUDA and TPU, which
  plain `jax` loads and runs: `jax.export.deserialize(open("DIR/model.jax", "rb").read()).call(images)`.
- `savedmodel`: DIR/savedmodel, a TF SavedModel through `jax2tf` with the same signature (serving_default:
  images → anomaly_map, score), the weights as variables; for TF Serving, and the input of the TFLite converter.

DIR/model.json holds the preprocessing, the calibrated threshold and normalisation, and the config it came from.
"""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mmr_jax import errors
from mmr_jax import files
from mmr_jax import inference
from mmr_jax import runtime

# Where the StableHLO artefact can run. Lowering for a platform needs no device of it.
PLATFORMS = ("cpu", "cuda", "tpu")


def serving_function(model: inference.TrainedModel) -> tuple[Callable, dict[str, Any]]:
  """(fn, weights): fn(weights, uint8 images (B, S, S, 3)) → (maps (B, S, S), scores (B,)), the scorer's own
  computation (`scoring.Scorer.serving_function`) with this model's seed's weights as NumPy arrays."""
  if model.config.eval.test_mask_ratio > 0:
    raise errors.UserError(
      f"eval.test_mask_ratio={model.config.eval.test_mask_ratio} makes the maps depend on masking "
      f"noise; export supports the published 0 only"
    )
  first_seed = lambda tree: jax.tree_util.tree_map(lambda leaf: leaf[0], tree)
  weights = {"student": first_seed(model.params), "teacher": model.scorer.teacher_params}
  if model.adaptation is not None:  # Baked in: the artefact scores as the adapted model does.
    weights["memories"] = first_seed(model.adaptation.memories)
  return model.scorer.serving_function(), jax.tree_util.tree_map(np.asarray, jax.device_get(weights))


def metadata(model: inference.TrainedModel, export_format: str, platforms: tuple[str, ...] = ()) -> dict:
  """What a user of the artefact needs besides it: input, preprocessing, outputs, threshold, provenance."""
  data = model.config.data
  c = model.calibration
  return {
    "format": export_format,
    "platforms": list(platforms),
    "input": {"dtype": "uint8", "shape": ["B", data.image_size, data.image_size, 3], "channels": "RGB"},
    "preprocessing": (
      f"decode to RGB; if data.max_image_side ({data.max_image_side}) > 0, shrink the longer side "
      f"to it (bicubic); resize to {data.resize_size}×{data.resize_size} (bilinear, PIL, aspect "
      f"not kept); centre-crop {data.image_size}×{data.image_size}. ImageNet normalisation is "
      f"inside the model."
    ),
    "outputs": {"anomaly_map": ["B", data.image_size, data.image_size], "score": ["B"]},
    "threshold": None if c is None else c.threshold,
    "threshold_fpr": None if c is None else c.fpr,
    "normalisation": None
    if c is None
    else {
      "centre": c.centre,
      "threshold": c.threshold,
      "formula": "0.5 * (score - centre) / (threshold - centre); anomalous when score > threshold",
    },
    "calibrated": c is not None,
    "threshold_from": None if c is None else c.source,
    "adaptation": model.adaptation_id,
    "seed": model.seed,
    "epochs_trained": model.epochs_trained,
    "mmr_jax_version": importlib.metadata.version("mmr_jax"),
    "jax_version": importlib.metadata.version("jax"),
    "config": json.loads(model.config.to_json_best_effort()),
  }


def export_jax(
  model: inference.TrainedModel, out: pathlib.Path, platforms: tuple[str, ...] = PLATFORMS
) -> pathlib.Path:
  """Writes OUT/model.jax and OUT/model.json; returns the artefact's path."""
  fn, weights = serving_function(model)
  size = model.image_size
  shape = jax.export.symbolic_shape(f"b, {size}, {size}, 3")
  exported = jax.export.export(jax.jit(lambda images: fn(weights, images)), platforms=platforms)(
    jax.ShapeDtypeStruct(shape, jnp.uint8)
  )
  files.write_json(out / files.EXPORT_METADATA, metadata(model, "jax", platforms))
  return files.write_atomic(out / files.EXPORTED_JAX, exported.serialize())


def export_savedmodel(model: inference.TrainedModel, out: pathlib.Path) -> pathlib.Path:
  """Writes OUT/savedmodel (serving_default: uint8 images → anomaly_map, score) and OUT/model.json."""
  tf = runtime.import_tensorflow()  # Only this format needs TF.
  from jax.experimental import jax2tf

  fn, weights = serving_function(model)
  size = model.image_size
  converted = jax2tf.convert(fn, polymorphic_shapes=[None, f"(b, {size}, {size}, 3)"], with_gradient=False)
  module = tf.Module()
  module.weights = tf.nest.map_structure(lambda leaf: tf.Variable(leaf, trainable=False), weights)

  @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")], autograph=False)
  def serve(images):
    anomaly_map, score = converted(module.weights, images)
    return {"anomaly_map": anomaly_map, "score": score}

  module.serve = serve
  target = out / files.EXPORTED_SAVEDMODEL
  out.mkdir(parents=True, exist_ok=True)
  tf.saved_model.save(module, str(target), signatures={"serving_default": serve})
  files.write_json(out / files.EXPORT_METADATA, metadata(model, "savedmodel"))
  return target
