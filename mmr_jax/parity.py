"""Proof of equality with a PyTorch MMR (docs/parity-format.md).

    python -m mmr_jax parity --weights W.npz --reference R.npz [--json OUT.json] [--num_heads=N]
        [--precision default|high|highest]

Loads a PyTorch model's weights (W.npz, PyTorch names and layouts) and its outputs on one batch (R.npz), runs
this project's code on the same inputs with the same weights, prints one row per quantity (max |error|,
relative error ‖a − b‖/‖b‖, tolerance, pass/fail) and exits non-zero if any fails. The architecture is read
from the weights: ViT width/depth/patch/position grid, ResNet block type, depths and widths. The head count is
not visible in the weights: it defaults to width / 64 (every MAE/ViT size) unless --num_heads says otherwise.
"""

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmr_jax import errors
from mmr_jax import metrics
from mmr_jax import objectives
from mmr_jax.models import mmr
from mmr_jax.models import posembed
from mmr_jax.models import resnet
from mmr_jax.models import vit
from mmr_jax.training import optimizer
from mmr_jax.weights import loading
from mmr_jax.weights import names
from mmr_jax.weights import readers
from mmr_jax.weights import structure


@dataclasses.dataclass(frozen=True)
class Tolerance:
  kind: str  # "rel": ‖a − b‖/‖b‖; "abs": max |a − b|.
  value: float

  def passes(self, max_abs: float, rel: float) -> bool:
    return (rel if self.kind == "rel" else max_abs) <= self.value


# Float32-honest tolerances (docs/parity-format.md); the first matching prefix wins.
TOLERANCES = (
  ("grad/", Tolerance("rel", 1e-3)),
  ("post_step/", Tolerance("rel", 1e-4)),
  ("pre_step/", Tolerance("rel", 1e-6)),
  ("train_loss", Tolerance("abs", 1e-5)),
  ("image_score", Tolerance("abs", 1e-5)),
  ("metric_image_auroc", Tolerance("abs", 1e-6)),
  ("metric_pixel_auroc", Tolerance("abs", 1e-6)),
  ("metric_pro", Tolerance("abs", 1e-4)),
  ("metric_aupro", Tolerance("abs", 1e-4)),
  ("", Tolerance("rel", 1e-4)),
)
# Reference keys that are inputs or settings, not quantities to compare.
INPUT_KEYS = {
  "image",
  "finetune_mask_ratio",
  "mask_noise",
  "train_mask",
  "step_lr",
  "metric_maps",
  "metric_masks",
  "metric_labels",
}


class ParityInputError(errors.UserError, ValueError):
  """A reference or weights file that cannot be used; the message names the file and key (exit code 2)."""


def tolerance(key: str) -> Tolerance:
  return next(tol for prefix, tol in TOLERANCES if key.startswith(prefix))


def compare(ours: np.ndarray, reference: np.ndarray, key: str) -> dict:
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  if ours.shape != reference.shape:
    raise ParityInputError(f"'{key}': this project computes shape {ours.shape}, the reference holds {reference.shape}")
  diff = ours - reference
  max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
  norm = float(np.linalg.norm(reference))
  rel = float(np.linalg.norm(diff) / norm) if norm > 0 else (0.0 if max_abs == 0 else float("inf"))
  tol = tolerance(key)
  return {
    "max_abs": max_abs,
    "rel": rel,
    "tol": tol.value,
    "tol_kind": tol.kind,
    "ok": bool(np.isfinite(max_abs) and tol.passes(max_abs, rel)),
  }


# ---------------------------------------------------------------------------------------------------------------
# The model side.


def nchw_to_nhwc(array: np.ndarray) -> np.ndarray:
  return np.transpose(array, (0, 2, 3, 1))


def nhwc_to_nchw(array: np.ndarray) -> np.ndarray:
  return np.transpose(np.asarray(array), (0, 3, 1, 2))


@dataclasses.dataclass
class Models:
  student: mmr.Student
  teacher: resnet.ResNetFeatures
  student_params: Any
  teacher_params: Any
  tables: Mapping[str, np.ndarray]


def build_models(weights_path: str, image_size: tuple[int, int], num_heads: int | None) -> Models:
  """The student and teacher that the weights file describes, with those weights loaded."""
  student_state = readers.read_state_dict(weights_path, prefix="student/")
  teacher_state = readers.read_state_dict(weights_path, prefix="teacher/")
  vit = structure.infer_vit(student_state)
  teacher_arch = structure.infer_teacher(teacher_state)
  spec = resnet.ResNetSpec(
    block=teacher_arch["block"],
    stage_sizes=tuple(teacher_arch["stage_sizes"]),
    stem_width=teacher_arch["stem_width"],
    planes=tuple(teacher_arch["planes"]),
    mid_multiplier=teacher_arch["mid_multiplier"],
  )
  heads = num_heads or max(vit["width"] // 64, 1)
  if vit["width"] % heads:
    raise ParityInputError(f"--num_heads={heads} does not divide the ViT width {vit['width']}")
  if vit["fpn_widths"] is not None and tuple(vit["fpn_widths"]) != spec.out_channels:
    raise ParityInputError(
      f"the student's FPN widths {vit['fpn_widths']} do not match the teacher's layer widths {spec.out_channels}"
    )
  student = mmr.Student(
    width=vit["width"],
    depth=vit["depth"],
    num_heads=heads,
    out_channels=spec.out_channels,
    patch_size=vit["patch_size"],
    mlp_ratio=vit["mlp_ratio"],
    pretrain_grid=vit["pretrain_grid"] or image_size[0] // vit["patch_size"],
  )
  teacher = resnet.ResNetFeatures(spec)
  dummy = jnp.zeros((1, *image_size, 3), jnp.float32)
  student_shapes = jax.eval_shape(lambda k: student.init(k, dummy)["params"], jax.random.key(0))
  teacher_shapes = jax.eval_shape(lambda k: teacher.init(k, dummy)["params"], jax.random.key(0))
  loaded = loading.load_student(student_state, student_shapes, source="mmr")
  teacher_params = loading.load_teacher(teacher_state, teacher_shapes).params
  return Models(student, teacher, loaded.params, teacher_params, loaded.tables)


# Compiled once per architecture (modules are static, hashable arguments), so checking several reference files
# of one model, as the tests do, compiles once.
@functools.partial(jax.jit, static_argnums=0)
def _teacher_features(teacher, params, images):
  return teacher.apply({"params": params}, images)


@functools.partial(jax.jit, static_argnums=0)
def _test_features(student, params, images):
  return student.apply({"params": params}, images, 0.0)


_anomaly_maps = jax.jit(objectives.anomaly_maps, static_argnums=2)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _loss_and_grads(student, ratio, params, images, noise, teacher_features):
  def loss_fn(params):
    features = student.apply({"params": params}, images, ratio, noise)
    total, per_scale = objectives.reconstruction_loss(teacher_features, features)
    return total, (per_scale, features)

  return jax.value_and_grad(loss_fn, has_aux=True)(params)


def model_quantities(models: Models, reference: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Everything the reference may hold about the model, computed here, under the reference's keys/layouts."""
  images = jnp.asarray(nchw_to_nhwc(reference["image"]), jnp.float32)
  image_size = images.shape[1:3]
  student, teacher = models.student, models.teacher
  ratio = mask_ratio(reference, (image_size[0] // student.patch_size) * (image_size[1] // student.patch_size))
  noise = jnp.asarray(reference["mask_noise"], jnp.float32) if "mask_noise" in reference else None
  out: dict[str, np.ndarray] = {}

  grid = (image_size[0] // student.patch_size, image_size[1] // student.patch_size)
  table = posembed.encoder_table(student.width, student.pretrain_grid, *grid)
  out["encoder_pos_embed_resized"] = table[None]
  loading.check_fixed_tables(
    {k: v for k, v in models.tables.items() if k == "pos_embed"},
    {"pos_embed": posembed.sincos_2d(student.width, student.pretrain_grid, student.pretrain_grid)},
  )

  teacher_features = _teacher_features(teacher, models.teacher_params, images)
  for i, f in enumerate(teacher_features, start=1):
    out[f"teacher_layer{i}"] = nhwc_to_nchw(f)

  test_features = _test_features(student, models.student_params, images)
  for i, f in enumerate(test_features, start=1):
    out[f"test_student_layer{i}"] = nhwc_to_nchw(f)
  maps = _anomaly_maps(teacher_features, test_features, tuple(image_size))
  out["anomaly_map_per_scale"] = np.asarray(maps.per_scale)
  out["anomaly_map_raw"] = np.asarray(maps.raw)
  out["anomaly_map"] = np.asarray(maps.smoothed)
  out["image_score"] = np.asarray(maps.score)

  if noise is None:
    return out

  (loss, (per_scale, train_features)), grads = _loss_and_grads(
    student, ratio, models.student_params, images, noise, teacher_features
  )
  out["train_loss"], out["train_loss_per_scale"] = np.asarray(loss), np.asarray(per_scale)
  for i, f in enumerate(train_features, start=1):
    out[f"train_student_layer{i}"] = nhwc_to_nchw(f)
  for name, value in loading.student_to_torch(jax.device_get(grads)).items():
    out[f"grad/{name}"] = value

  if "step_lr" in reference:
    # The step is checked on the reference's gradients where it has them: AdamW's first update,
    # lr·g/(|g| + eps), turns float32 noise on gradients that are zero in exact arithmetic (the key bias's, for
    # one) into differences of up to lr. Our gradients are checked on their own above.
    step_grads = with_reference_grads(jax.device_get(grads), reference)
    post = adamw_step(models.student_params, step_grads, float(reference["step_lr"]))
    for name, value in loading.student_to_torch(jax.device_get(models.student_params)).items():
      out[f"pre_step/{name}"] = value
    for name, value in loading.student_to_torch(jax.device_get(post)).items():
      out[f"post_step/{name}"] = value
  return out


def mask_ratio(reference: Mapping[str, np.ndarray], length: int) -> float:
  """The reference's training mask ratio as the decimal its maker meant (0.4 when absent).

  A ratio stored as float32 reads back as 0.4000000059604645, and int(400 · (1 − that)) keeps 239 tokens where
  the published code (a Python 0.4) keeps 240: the shortest decimal that rounds to the stored value is the one
  that was written. A `train_mask` (B, L) in the file (1 = hidden, MAE's output) must agree with it.
  """
  if "finetune_mask_ratio" not in reference:
    return 0.4
  stored = np.asarray(reference["finetune_mask_ratio"])
  if stored.shape != () or not np.issubdtype(stored.dtype, np.floating):
    raise ParityInputError(f"'finetune_mask_ratio' must be a float scalar, got {stored.dtype} {stored.shape}")
  ratio = float(np.format_float_positional(stored[()], unique=True, trim="0"))
  if "train_mask" in reference:
    hidden = np.asarray(reference["train_mask"]).sum(axis=-1).astype(np.int64)
    expected = length - vit.num_kept(length, ratio)
    if not np.all(hidden == expected):
      raise ParityInputError(
        f"'train_mask' hides {sorted(set(hidden.tolist()))} of {length} tokens per image, but "
        f"finetune_mask_ratio {ratio} hides {expected}"
      )
  return ratio


def with_reference_grads(grads: Any, reference: Mapping[str, np.ndarray]) -> Any:
  """`grads` with every leaf that the reference holds a `grad/<name>` for replaced by that gradient."""
  depth = len([k for k in grads["encoder"] if k.startswith("blocks_")])
  flat = structure.flatten(grads)
  for name, entry in names.student_name_map(depth).items():
    if f"grad/{name}" in reference:
      flat[entry.flax_path] = names.to_flax(entry.layout, np.asarray(reference[f"grad/{name}"], np.float32))
  return structure.unflatten(flat)


def adamw_step(params: Any, grads: Any, lr: float) -> Any:
  """One step of the training optimizer (published groups and hyperparameters) from a fresh state."""
  tx = optimizer.make_optimizer(optimizer.published_settings())
  state = tx.init(params)
  state = state._replace(hyperparams={**state.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)})
  updates, _ = jax.jit(tx.update)(grads, state, params)
  return optax.apply_updates(params, updates)


# ---------------------------------------------------------------------------------------------------------------
# The metrics side.


def metric_quantities(reference: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  maps, masks, labels = reference["metric_maps"], reference["metric_masks"], reference["metric_labels"]
  scores = maps.reshape(len(maps), -1).max(axis=1)
  per_image, mean = metrics.pro_published(maps, masks, labels)
  return {
    "metric_image_auroc": np.asarray(metrics.image_auroc(scores, labels)),
    "metric_pixel_auroc": np.asarray(metrics.pixel_auroc(maps, masks)),
    "metric_pro_per_image": per_image,
    "metric_pro_mean": np.asarray(mean),
    "metric_aupro": np.asarray(metrics.aupro(maps, masks, 0.3)),
  }


# ---------------------------------------------------------------------------------------------------------------


def run(
  weights_path: str, reference_path: str, num_heads: int | None = None, precision: str = "highest"
) -> tuple[dict, list[str]]:
  """Returns ({key: comparison}, [skipped keys with the reason]). `precision` is model.precision's setting for
  every dot and convolution of the model (the tolerances are float32's: "highest" is the proof)."""
  try:
    with np.load(reference_path) as data:
      reference = {key: data[key] for key in data.files}
  except (OSError, ValueError) as error:
    raise ParityInputError(f"cannot read the reference file {reference_path}: {error}") from None
  ours: dict[str, np.ndarray] = {}
  skipped = []
  if "image" in reference:
    image = reference["image"]
    if image.ndim != 4 or image.shape[1] != 3:
      raise ParityInputError(f"'image' in {reference_path} must be (B, 3, H, W), got {image.shape}")
    with jax.default_matmul_precision(precision):
      ours.update(model_quantities(build_models(weights_path, image.shape[2:], num_heads), reference))
  else:
    skipped.append("model quantities (the reference has no 'image')")
  if {"metric_maps", "metric_masks", "metric_labels"} <= set(reference):
    ours.update(metric_quantities(reference))
  else:
    skipped.append("metrics (the reference has no metric_maps/metric_masks/metric_labels)")
  results = {}
  for key in sorted(reference):
    if key in INPUT_KEYS:
      continue
    if key not in ours:
      skipped.append(f"{key} (not a quantity this command computes)")
      continue
    results[key] = compare(ours[key], reference[key], key)
  return results, skipped


def print_table(results: Mapping[str, dict], skipped: list[str], out: Callable[[str], None] = print) -> None:
  width = max([len(k) for k in results] + [8])
  out(f"{'quantity':<{width}}  {'max |err|':>10}  {'rel err':>10}  {'tolerance':>14}  result")
  for key, r in results.items():
    tol = f"{r['tol_kind']} {r['tol']:.0e}"
    out(f"{key:<{width}}  {r['max_abs']:>10.3e}  {r['rel']:>10.3e}  {tol:>14}  {'pass' if r['ok'] else 'FAIL'}")
  for reason in skipped:
    out(f"skipped: {reason}")
  failed = [k for k, r in results.items() if not r["ok"]]
  out(f"{len(results) - len(failed)} passed, {len(failed)} failed")
