"""One scorer for every use of a trained MMR: images → anomaly maps → image scores (Eq. 2), K students at once, on
the mesh. Evaluation, calibration, predict.py and the export all go through it, and so does the adaptation to a new
domain (mmr_jax/adaptation.py): `adapt` turns a few normal images of the domain into an `Adaptation`, which every
scoring call then takes.

Two compiled programs score: the teacher's (the one training uses, `steps.make_teacher_fn`), whose features the K
students share, and the students' maps and scores, vmapped over the seed axis. `maps_and_scores` is the body of
the second; `Scorer.serving_function` joins the two into the one pure function that the export lowers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmr_jax import adaptation as adaptation_lib
from mmr_jax import config as config_lib
from mmr_jax import objectives
from mmr_jax import runtime
from mmr_jax.data import preprocess
from mmr_jax.models import mmr
from mmr_jax.training import init
from mmr_jax.training import sharding
from mmr_jax.training import steps


@dataclasses.dataclass
class Predictions:
  """Anomaly maps of a set of images for K seeds, with their ground truth (all zero and normal where none)."""

  maps: np.ndarray  # (K, N, H, W) float32, smoothed.
  scores: np.ndarray  # (K, N)
  masks: np.ndarray  # (N, H, W) uint8
  labels: np.ndarray  # (N,)
  names: np.ndarray  # (N,) relative paths
  kinds: np.ndarray  # (N,) defect types, "good" for normal images
  positions: np.ndarray | None = None  # (N,) each image's index in the batches scored; None: 0 … N − 1.

  def take(self, indices: np.ndarray) -> Predictions:
    """The predictions of the images at `indices` only (their positions remembered)."""
    fields = (getattr(self, name)[indices] for name in ("masks", "labels", "names", "kinds"))
    return Predictions(self.maps[:, indices], self.scores[:, indices], *fields, self.position(indices))

  def position(self, index):
    """The index (or indices) in the batches scored of the image(s) at `index`."""
    return np.asarray(index) if self.positions is None else self.positions[index]


class Adaptation(NamedTuple):
  """What K normal images ("shots") of a domain teach the students (mmr_jax/adaptation.py); every leaf has a leading
  seed axis. A pytree: it is passed to the compiled programs, saved and exported as arrays."""

  memories: tuple[adaptation_lib.Memory, ...]  # Per scale: entries (seeds, M, C), owners (seeds, M).
  shot_scores: jax.Array  # (seeds, K): each shot scored with the memory of the other K − 1 (leave one out).


def maps_and_scores(
  student: Any,
  params: Any,
  images: jax.Array,
  teacher_features: mmr.Features,
  rng: jax.Array | None,
  memories: tuple[adaptation_lib.Memory, ...] | None = None,
  exclude: jax.Array | None = None,
  *,
  mask_ratio: float,
  sigma: float,
  truncate: float,
) -> tuple[jax.Array, jax.Array]:
  """One student's smoothed anomaly maps (B, H, W) and image scores (B,) of normalised images (B, H, W, 3), given
  the teacher's features of those images (Eq. 2). The student hides `mask_ratio` of the tokens (eval.test_mask_ratio;
  the published 0 hides none and ignores `rng`, raw PRNG key data). With an adaptation's `memories`, its distances
  replace 1 − cos (`exclude`: per image, a shot whose entries are left out)."""
  rngs = {"masking": jax.random.wrap_key_data(rng)} if mask_ratio > 0 else None
  features = student.apply({"params": params}, images, mask_ratio, rngs=rngs)
  if memories is None:
    maps = objectives.anomaly_maps(teacher_features, features, images.shape[1:3], sigma, truncate)
  else:
    distances = adaptation_lib.adapted_distances(teacher_features, features, memories, exclude)
    maps = objectives.maps_from_distances(distances, images.shape[1:3], sigma, truncate)
  return maps.smoothed, maps.score


class Scorer:
  """The teacher (its weights loaded on first use), the student architecture and the compiled programs that score
  (as trained, and adapted) and adapt, for a config on a mesh. Parameters are passed with a leading seed axis K."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh | None = None,
    platform: runtime.Platform | None = None,
  ):
    self.config = config
    self.mesh = mesh or sharding.make_mesh()
    sharding.check_batch_divisible(config.eval_batch_size, self.mesh, "eval_batch_size")
    self.platform = platform or runtime.Platform.of(self.mesh.devices.flat[0])
    model = config.model
    form = self.platform.conv3x3_form(model.conv3x3, model.compute_dtype)
    self.student = mmr.build_student(model, form)
    self.teacher = mmr.build_teacher(model, form)
    self.compiler_options = self.platform.compiler_options(model.compute_dtype)
    self.teacher_fn = steps.make_teacher_fn(self.teacher, self.mesh, model.precision, self.compiler_options)
    self._maps = functools.partial(
      maps_and_scores,
      self.student,
      mask_ratio=config.eval.test_mask_ratio,
      sigma=config.eval.gaussian_sigma,
      truncate=config.eval.gaussian_truncate,
    )
    batch = sharding.batch_sharding(self.mesh)
    replicated = sharding.replicated(self.mesh)
    # The test images and their teacher features are shared by the K students (so `seeds_share_inputs`); with a
    # test mask ratio > 0 every seed masks the batch with the same noise.
    per_seed_batch = sharding.batch_sharding(self.mesh, extra_leading_axes=1)
    self.scoring_options = self.platform.compiler_options(model.compute_dtype, seeds_share_inputs=True)
    self.anomaly_fn = jax.jit(
      steps.at_precision(jax.vmap(self._maps, in_axes=(0, None, None, None)), model.precision),
      in_shardings=(replicated, batch, batch, replicated),
      out_shardings=per_seed_batch,
      compiler_options=self.scoring_options,
    )
    # The same with an adaptation's memories (one per seed, replicated: they are small beside the batch).
    self.adapted_fn = jax.jit(
      steps.at_precision(jax.vmap(self._maps, in_axes=(0, None, None, None, 0)), model.precision),
      in_shardings=(replicated, batch, batch, replicated, replicated),
      out_shardings=per_seed_batch,
      compiler_options=self.scoring_options,
    )
    self._adapt_fn = jax.jit(
      steps.at_precision(jax.vmap(self._shots, in_axes=(0, None, None)), model.precision),
      out_shardings=replicated,
      compiler_options=self.scoring_options,
    )

  @functools.cached_property
  def teacher_params(self) -> Any:
    """The frozen teacher's weights (config.init.teacher), replicated on the mesh; read on first use, so that a
    scorer used only for its shapes (lowering, `abstract_params`) needs none."""
    return jax.device_put(init.teacher_params(self.config, self.teacher), sharding.replicated(self.mesh))

  def abstract_teacher_params(self) -> Any:
    """The teacher's parameter shapes and dtypes, computed by nothing: what lowering needs instead of weights."""
    return init.teacher_shapes(self.config, self.teacher)

  def seed_keys(self) -> tuple[jax.Array, jax.Array]:
    """Seed s: key(s) → (student init key, training key), stacked over the config's seeds; the same in a K-seed
    run and a one-seed run."""
    init_keys, train_keys = zip(*(jax.random.split(jax.random.key(s)) for s in config_lib.seeds_of(self.config)))
    return jnp.stack(init_keys), jnp.stack(train_keys)

  def initial_params(self) -> Any:
    """The K students' initial parameters (config.init.student, or random), replicated on the mesh."""
    params = init.student_params(self.config, self.student, self.seed_keys()[0])
    return jax.device_put(params, sharding.replicated(self.mesh))

  def abstract_params(self) -> Any:
    """The K students' parameter shapes, dtypes and shardings, computed by nothing (jax.eval_shape): what a
    restore fills."""
    shapes = init.student_shapes(self.config, self.student, self.seed_keys()[0])
    return sharding.abstract_replicated(shapes, self.mesh)

  def _shots(self, params: Any, teacher_params: Any, images: jax.Array) -> Adaptation:
    """One student's adaptation to the shots (K, H, W, 3), normalised: the memory of the shots at the four phases of
    the coarsest grid's half cell, each shot thinned to its coreset, and each shot's score with the memory of the
    others (what a new normal image of the domain scores, K − 1 shots standing for K)."""
    teacher_features = mmr.teacher_features(self.teacher, teacher_params, images)
    features = self.student.apply({"params": params}, images, 0.0)
    shifted = adaptation_lib.shifted_phases(images, teacher_features[-1].shape[1])
    shifted_teacher = mmr.teacher_features(self.teacher, teacher_params, shifted)
    shifted_student = self.student.apply({"params": params}, shifted, 0.0)
    memories = adaptation_lib.build_memory(
      [jnp.concatenate(pair) for pair in zip(teacher_features, shifted_teacher)],
      [jnp.concatenate(pair) for pair in zip(features, shifted_student)],
      phases=1 + len(adaptation_lib.SHIFTS),
    )
    own = jnp.arange(images.shape[0], dtype=jnp.int32)
    # Eq. 2 as every score computes it; the student's pass over the shots that `_maps` repeats is merged with the
    # one above by XLA (the compiled program has the same operations either way).
    _, scores = self._maps(params, images, teacher_features, None, memories, own)
    return Adaptation(memories, scores)

  def adapt(self, params: Any, shots: np.ndarray) -> Adaptation:
    """The K students' adaptation to a domain from its normal images `shots`, preprocessed uint8 (n, S, S, 3): one
    compiled program per n, replicated on the mesh (the shots are few). Deterministic: nothing is drawn."""
    if self.config.eval.test_mask_ratio > 0:
      raise ValueError("adaptation scores with the whole image seen (eval.test_mask_ratio=0, the published setting)")
    if len(shots) < 1:
      raise ValueError("adaptation needs at least one normal image of the domain")
    images = jax.device_put(preprocess.normalize(np.asarray(shots, np.uint8)), sharding.replicated(self.mesh))
    return self._adapt_fn(params, self.teacher_params, images)

  def score(
    self, params: Any, images: jax.Array, rng: jax.Array, adaptation: Adaptation | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """Normalised images (B, H, W, 3) on the mesh → maps (K, B, H, W) and scores (K, B), global arrays. `rng`: raw
    key data, used at eval.test_mask_ratio > 0 only. With an `adaptation`, its scores."""
    teacher_features = tuple(f[0] for f in self.teacher_fn(self.teacher_params, images[None]))
    if adaptation is None:
      return self.anomaly_fn(params, images, teacher_features, rng)
    return self.adapted_fn(params, images, teacher_features, rng, adaptation.memories)

  def score_batches(
    self, params: Any, batches: Iterable[dict], key: jax.Array, adaptation: Adaptation | None = None
  ) -> Predictions:
    """Scores evaluation batches (pipeline.eval_batches' form: padded, with masks, labels, names and kinds); batch
    i masks with fold_in(key, i) when eval.test_mask_ratio > 0. Every host reads each whole batch (test sets are
    small) and places the rows its own devices hold; the maps come back whole on every host."""
    maps, scores, masks, labels, names, kinds = [], [], [], [], [], []
    batch_sharding = sharding.batch_sharding(self.mesh)
    for index, batch in enumerate(batches):
      valid = batch["valid"]
      rng = jax.random.key_data(jax.random.fold_in(key, index))
      batch_maps, batch_scores = sharding.to_host(
        self.score(params, jax.device_put(batch["image"], batch_sharding), rng, adaptation)
      )
      maps.append(batch_maps[:, valid])
      scores.append(batch_scores[:, valid])
      masks.append(batch["mask"][valid])
      labels.append(batch["label"][valid])
      names.append(batch["name"][valid])
      kinds.append(batch["kind"][valid])
    return Predictions(
      maps=np.concatenate(maps, axis=1),
      scores=np.concatenate(scores, axis=1),
      masks=np.concatenate(masks),
      labels=np.concatenate(labels),
      names=np.concatenate(names),
      kinds=np.concatenate(kinds),
    )

  def score_images(
    self, params: Any, images: np.ndarray, key: jax.Array, adaptation: Adaptation | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed uint8 images (n, S, S, 3) → maps (K, n, S, S) and scores (K, n) on the host. The images are
    padded to eval_batch_size, so that every call runs the one compiled program."""
    batch = self.config.eval_batch_size
    batches = []
    for start in range(0, len(images), batch):
      chunk = images[start : start + batch]
      padded = np.zeros((batch,) + images.shape[1:], np.uint8)
      padded[: len(chunk)] = chunk
      batches.append(
        {
          "image": preprocess.normalize(padded),
          "valid": np.arange(batch) < len(chunk),
          "mask": np.zeros((batch,) + images.shape[1:3], np.uint8),
          "label": np.zeros(batch, np.int32),
          "name": np.full(batch, "", object),
          "kind": np.full(batch, "", object),
        }
      )
    predictions = self.score_batches(params, batches, key, adaptation)
    return predictions.maps, predictions.scores

  def serving_function(self) -> Callable:
    """fn({"student": one seed's parameters, "teacher": the teacher's[, "memories": one seed's adaptation
    memories]}, uint8 images (B, S, S, 3)) → (maps (B, S, S), scores (B,)): what `score` computes, as one pure
    function of its weights, normalisation included (the export lowers it). The published test mask ratio only:
    with one > 0 the maps depend on masking noise."""
    if self.config.eval.test_mask_ratio > 0:
      raise ValueError(f"eval.test_mask_ratio={self.config.eval.test_mask_ratio}: the maps depend on masking noise")
    scale, offset = preprocess.normalization_constants()

    def fn(weights, images):
      x = images.astype(jnp.float32) * scale + offset
      teacher_features = mmr.teacher_features(self.teacher, weights["teacher"], x)
      return self._maps(weights["student"], x, teacher_features, None, weights.get("memories"))

    return steps.at_precision(fn, self.config.model.precision)
