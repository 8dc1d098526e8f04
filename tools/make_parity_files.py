"""Writes a parity pair (W.npz weights, R.npz outputs) from the independent PyTorch MMR in torch_mmr.py.

The format is docs/parity-format.md. Weights are random but realistic (activations O(1), no parameter
left at a trivial 0 or 1, BatchNorm statistics calibrated on other images and then perturbed), stored as
float32; every output is computed in float64 from those float32 values, so the reference carries no float32
rounding of its own. The metric keys come from a small synthetic scored set and loop implementations that
follow docs/spec.md §8 literally.

  python tools/make_parity_files.py --preset tiny --image-size 64 --seed 0 --out-dir tests/golden \
      --prefix tiny64_

See tools/README.md for the commands that made the committed golden files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.ndimage
import skimage.measure
import sklearn.metrics
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_mmr

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])

PRESETS = {
  # Student sizes mirror configs/common.py VIT_SIZES ("micro" and "B"); the table grid of "base" is the
  # MAE checkpoint's (224 / 16).
  "tiny": dict(width=128, depth=2, num_heads=2, teacher="resnet_micro", pos_grid=None),
  "base": dict(width=768, depth=12, num_heads=12, teacher="wide_resnet50_2", pos_grid=14),
}


# ----------------------------------------------------------------------------------------------------------
# Random, realistic weights
# ----------------------------------------------------------------------------------------------------------


def _set(param: torch.Tensor, values: np.ndarray) -> None:
  # Round through float32 first: the float32 value is what W.npz stores, so it is the reference's truth.
  param.data.copy_(torch.from_numpy(values.astype(np.float32).astype(np.float64)).reshape(param.shape))


def _unit_affine(rng: np.random.Generator, module: torch.nn.Module) -> None:
  """Norm scales near 1 and shifts near 0, but neither trivially."""
  _set(module.weight, 1.0 + 0.1 * rng.standard_normal(module.weight.shape))
  _set(module.bias, 0.1 * rng.standard_normal(module.bias.shape))


def randomise_student(student: torch_mmr.MMRStudent, rng: np.random.Generator) -> None:
  for module in student.modules():
    if isinstance(module, torch.nn.LayerNorm):  # Also the channel LayerNorms of the FPN.
      _unit_affine(rng, module)
    elif isinstance(module, torch.nn.Linear):
      fan_out, fan_in = module.weight.shape
      bound = np.sqrt(6.0 / (fan_in + fan_out))  # Xavier, as MAE initialises its Linear layers.
      _set(module.weight, rng.uniform(-bound, bound, module.weight.shape))
      _set(module.bias, 0.05 * rng.standard_normal(module.bias.shape))
    elif isinstance(module, torch.nn.ConvTranspose2d):
      in_channels = module.weight.shape[0]  # Each output pixel sums over the input channels only.
      _set(module.weight, rng.standard_normal(module.weight.shape) / np.sqrt(in_channels))
      _set(module.bias, 0.05 * rng.standard_normal(module.bias.shape))
    elif isinstance(module, torch.nn.Conv2d):  # The patch embedding and the FPN's conv wrappers.
      out_channels = module.weight.shape[0]
      fan_in = module.weight[0].numel()
      bound = np.sqrt(6.0 / (fan_in + out_channels))
      _set(module.weight, rng.uniform(-bound, bound, module.weight.shape))
      if module.bias is not None:
        _set(module.bias, 0.05 * rng.standard_normal(module.bias.shape))
  # Larger than MAE's N(0, 0.02) so that the tokens visibly move the outputs and their gradients.
  _set(student.cls_token, 0.2 * rng.standard_normal(student.cls_token.shape))
  _set(student.decoder_FPN_mask_token, 0.5 * rng.standard_normal(student.decoder_FPN_mask_token.shape))
  # The fixed sin-cos tables stay as built, rounded to the float32 that W.npz stores.
  for table in (student.pos_embed, student.decoder_FPN_pos_embed):
    table.data.copy_(table.data.float().double())


def randomise_teacher(
  teacher: torch_mmr.ResNetTeacher, rng: np.random.Generator, calibration_images: torch.Tensor
) -> None:
  """He-normal convs, random BN affine, and running statistics that keep the eval-mode activations O(1)."""
  batch_norms = [m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for module in teacher.modules():
    if isinstance(module, torch.nn.Conv2d):
      fan_in = module.weight[0].numel()
      _set(module.weight, rng.standard_normal(module.weight.shape) * np.sqrt(2.0 / fan_in))
    elif isinstance(module, torch.nn.BatchNorm2d):
      _set(module.weight, rng.uniform(0.6, 1.2, module.weight.shape))
      _set(module.bias, 0.1 * rng.standard_normal(module.bias.shape))
      # Layers the forward pass never reaches (layer4) keep these; the others are calibrated below.
      _set(module.running_mean, 0.2 * rng.standard_normal(module.running_mean.shape))
      _set(module.running_var, rng.uniform(0.5, 2.0, module.running_var.shape))
    elif isinstance(module, torch.nn.Linear):
      _set(module.weight, 0.01 * rng.standard_normal(module.weight.shape))
      _set(module.bias, 0.01 * rng.standard_normal(module.bias.shape))
  # One train-mode pass with momentum 1 sets the running statistics to those of the calibration batch.
  for bn in batch_norms:
    bn.momentum = 1.0
  teacher.train()
  with torch.no_grad():
    teacher(calibration_images)
  teacher.eval()
  for bn in batch_norms:
    bn.momentum = 0.1
    # Perturbed, so that the reference batch is not normalised exactly to zero mean and unit variance.
    std = np.sqrt(bn.running_var.numpy())
    _set(bn.running_mean, bn.running_mean.numpy() + 0.1 * std * rng.standard_normal(std.shape))
    _set(bn.running_var, bn.running_var.numpy() * np.exp(0.2 * rng.standard_normal(std.shape)))
    bn.num_batches_tracked.fill_(int(rng.integers(1, 100_000)))


def check_no_trivial_parameters(model: torch.nn.Module, label: str) -> None:
  for name, value in model.state_dict().items():
    if value.is_floating_point() and (torch.all(value == value.flatten()[0]) and value.numel() > 1):
      raise AssertionError(f"{label}/{name} is constant ({value.flatten()[0].item()}): not randomised")


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


def synthetic_images(rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
  """ImageNet-normalised float32 images (B, 3, S, S) of a smooth scene with some texture."""
  smooth = np.stack(
    [
      np.stack(
        [scipy.ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 10, mode="wrap") for _ in range(3)]
      )
      for _ in range(batch)
    ]
  )
  smooth /= smooth.std(axis=(2, 3), keepdims=True)
  rgb = np.clip(0.5 + 0.2 * smooth + 0.05 * rng.standard_normal(smooth.shape), 0.0, 1.0)
  return ((rgb - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]).astype(np.float32)


def mask_noise(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
  """U[0,1) float32 noise without ties, so that argsort is unambiguous on every platform."""
  while True:
    noise = rng.random((batch, length), dtype=np.float32)
    if all(len(np.unique(row)) == length for row in noise):
      return noise


# ----------------------------------------------------------------------------------------------------------
# Metrics (§8), written as literal loops
# ----------------------------------------------------------------------------------------------------------


def _draw_ellipse(mask: np.ndarray, rng: np.random.Generator, max_radius: int) -> None:
  height, width = mask.shape
  radius_y, radius_x = rng.integers(2, max_radius + 1, size=2)
  centre_y = rng.integers(radius_y + 1, height - radius_y - 1)
  centre_x = rng.integers(radius_x + 1, width - radius_x - 1)
  rows, cols = np.ogrid[:height, :width]
  mask[((rows - centre_y) / radius_y) ** 2 + ((cols - centre_x) / radius_x) ** 2 <= 1.0] = 1


def synthetic_scored_set(rng: np.random.Generator, count: int, size: int):
  """A small test set: anomaly maps correlated with blob-shaped masks, but imperfectly.

  Every third image is normal. Anomalous ones cycle through one blob, two separate blobs, two squares that
  touch only at a corner (one region under 8-connectivity, two under 4), and a tiny blob beside a larger one.
  Returns maps (N, S, S) float64, masks (N, S, S) int64, labels (N,) int64.
  """
  if count < 3 or size < 32:
    raise ValueError("the synthetic scored set needs at least 3 images of at least 32×32")
  labels = np.array([0 if i % 3 == 0 else 1 for i in range(count)], dtype=np.int64)
  masks = np.zeros((count, size, size), dtype=np.int64)
  maps = np.zeros((count, size, size), dtype=np.float64)
  max_radius = max(3, size // 10)
  kind = 0
  for i in range(count):
    background = scipy.ndimage.gaussian_filter(rng.standard_normal((size, size)), 3.0)
    maps[i] = 0.5 + rng.uniform(0.0, 0.2) + 0.15 * background / background.std()
    if labels[i] == 0:
      if i % 2 == 0:  # A false alarm, so that image AUROC is not trivially 1.
        blob = np.zeros((size, size))
        _draw_ellipse(blob, rng, max_radius)
        maps[i] += rng.uniform(0.2, 0.6) * scipy.ndimage.gaussian_filter(blob, 2.0)
      continue
    if kind % 4 == 0:
      _draw_ellipse(masks[i], rng, max_radius)
    elif kind % 4 == 1:
      _draw_ellipse(masks[i, :, : size // 2], rng, max_radius)
      _draw_ellipse(masks[i, :, size // 2 :], rng, max_radius)
    elif kind % 4 == 2:
      side = max(3, size // 12)
      top, left = rng.integers(2, size - 2 * side - 2, size=2)
      masks[i, top : top + side, left : left + side] = 1
      masks[i, top + side : top + 2 * side, left + side : left + 2 * side] = 1
    else:
      _draw_ellipse(masks[i], rng, max_radius)
      spot_y, spot_x = rng.integers(1, size - 3, size=2)
      masks[i, spot_y : spot_y + 2, spot_x : spot_x + 2] = 1
    kind += 1
    # The response is shifted and blurred relative to the truth, with a random strength.
    shift = rng.integers(-2, 3, size=2)
    response = scipy.ndimage.gaussian_filter(np.roll(masks[i].astype(np.float64), shift, axis=(0, 1)), 2.0)
    maps[i] += rng.uniform(0.4, 1.2) * response
  return maps, masks, labels


def published_pro(
  anomaly_map: np.ndarray, mask: np.ndarray, num_thresholds: int = 200, fpr_limit: float = 0.3
) -> float:
  """PRO of one anomalous image as the published code computes it (§8)."""
  regions = skimage.measure.regionprops(skimage.measure.label(mask, connectivity=2))
  normal = mask == 0
  low, high = anomaly_map.min(), anomaly_map.max()
  fprs, pros = [], []
  for threshold in np.arange(low, high, (high - low) / num_thresholds):
    binary = anomaly_map > threshold
    overlaps = [binary[r.coords[:, 0], r.coords[:, 1]].sum() / r.area for r in regions]
    pros.append(np.mean(overlaps))
    fprs.append(np.logical_and(binary, normal).sum() / normal.sum())
  fprs, pros = np.array(fprs), np.array(pros)
  kept = fprs < fpr_limit
  return float(sklearn.metrics.auc(fprs[kept] / fprs[kept].max(), pros[kept]))


def standard_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
  """MVTec AD's AUPRO: one global threshold sweep over every pixel of the set (normal images included).

  At each distinct score t (descending), a pixel is positive when its score ≥ t; PRO = mean overlap over all
  ground-truth regions of the set, FPR = false positives / all normal pixels. The curve starts at (0, 0); its
  area up to FPR = fpr_limit (the last segment cut by linear interpolation) is divided by fpr_limit.
  """
  region_ids = np.zeros(masks.shape, dtype=np.int64)
  next_id = 1
  for i, mask in enumerate(masks):
    labelled = skimage.measure.label(mask, connectivity=2)
    region_ids[i] = np.where(labelled > 0, labelled + next_id - 1, 0)
    next_id += labelled.max()
  num_regions = next_id - 1
  scores, region_ids = maps.ravel(), region_ids.ravel()
  areas = np.bincount(region_ids, minlength=next_id)[1:]
  normal = region_ids == 0
  curve_fpr, curve_pro = [0.0], [0.0]
  for threshold in np.unique(scores)[::-1]:
    positive = scores >= threshold
    covered = np.bincount(region_ids[positive], minlength=next_id)[1:]
    curve_fpr.append(np.logical_and(positive, normal).sum() / normal.sum())
    curve_pro.append(np.sum(covered / areas) / num_regions)
    if curve_fpr[-1] >= fpr_limit:
      break
  area = 0.0
  for i in range(1, len(curve_fpr)):
    x0, x1, y0, y1 = curve_fpr[i - 1], curve_fpr[i], curve_pro[i - 1], curve_pro[i]
    if x1 > fpr_limit:  # The crossing segment: interpolate its end at the limit.
      y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
      x1 = fpr_limit
    area += 0.5 * (y0 + y1) * (x1 - x0)
  return area / fpr_limit


def metric_values(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """The `metric_*` keys of R.npz for a scored set: maps (N, H, W), binary masks, labels (N,)."""
  count = len(maps)
  maps, masks, labels = maps.astype(np.float64), masks.astype(np.int64), labels.astype(np.int64)
  image_scores = maps.reshape(count, -1).max(axis=1)
  pro_per_image = np.array([published_pro(maps[i], masks[i]) for i in range(count) if labels[i] == 1])
  return {
    "metric_maps": maps,
    "metric_masks": masks,
    "metric_labels": labels,
    "metric_image_auroc": np.float64(sklearn.metrics.roc_auc_score(labels, image_scores)),
    "metric_pixel_auroc": np.float64(sklearn.metrics.roc_auc_score(masks.ravel(), maps.ravel())),
    "metric_pro_per_image": pro_per_image,
    "metric_pro_mean": np.float64(pro_per_image.mean()),
    "metric_aupro": np.float64(standard_aupro(maps, masks)),
  }


def metric_references(rng: np.random.Generator, count: int, size: int) -> dict[str, np.ndarray]:
  return metric_values(*synthetic_scored_set(rng, count, size))


# ----------------------------------------------------------------------------------------------------------
# The model reference
# ----------------------------------------------------------------------------------------------------------


def representative_parameters(depth: int) -> list[str]:
  last = depth - 1
  return [
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "cls_token",
    "decoder_FPN_mask_token",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.qkv.bias",
    f"blocks.{last}.norm1.weight",
    f"blocks.{last}.mlp.fc2.bias",
    "norm.weight",
    "norm.bias",
    "simfp_2.0.weight",
    "simfp_2.0.bias",
    "simfp_2.1.weight",
    "simfp_2.1.bias",
    "simfp_2.5.weight",
    "simfp_2.5.norm.weight",
    "simfp_3.0.weight",
    "simfp_3.0.bias",
    "simfp_4.1.norm.bias",
  ]


def _np32(tensor: torch.Tensor) -> np.ndarray:
  return tensor.detach().cpu().numpy().astype(np.float32)


def self_check(condition: bool, message: str) -> None:
  if not condition:
    raise AssertionError(f"self-check failed: {message}")
  print(f"  ok: {message}")


def _max_abs_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
  return max((x - y).abs().max().item() for x, y in zip(a, b))


def model_references(args: argparse.Namespace, rng: np.random.Generator):
  """Builds random weights, runs the reference in float64 and checks it; returns (weights, references)."""
  preset = PRESETS[args.preset]
  size = args.image_size
  grid = size // 16
  pos_grid = args.pos_grid or preset["pos_grid"] or grid
  arch = preset["teacher"]
  student = torch_mmr.MMRStudent(
    width=preset["width"],
    depth=preset["depth"],
    num_heads=preset["num_heads"],
    image_size=size,
    fpn_channels=torch_mmr.TEACHERS[arch].channels,
    pos_grid=pos_grid,
  ).double()
  teacher = torch_mmr.ResNetTeacher(arch, with_layer4_and_fc=args.teacher_extra_keys).double()
  teacher.requires_grad_(False)

  randomise_student(student, rng)
  randomise_teacher(teacher, rng, torch.from_numpy(synthetic_images(rng, 4, size)).double())
  check_no_trivial_parameters(student, "student")
  check_no_trivial_parameters(teacher, "teacher")
  weights = {f"student/{k}": _np32(v) for k, v in student.state_dict().items()}
  for k, v in teacher.state_dict().items():
    weights[f"teacher/{k}"] = v.numpy().astype(np.int64) if k.endswith("num_batches_tracked") else _np32(v)

  image_np = synthetic_images(rng, args.batch, size)
  noise_np = mask_noise(rng, args.batch, grid * grid)
  image, noise, ratio = torch.from_numpy(image_np).double(), torch.from_numpy(noise_np), args.mask_ratio
  # float64 by default; --ratio-dtype float32 writes it as some tools do, which a reader must read as the decimal
  # it was (a float32 0.4 taken literally makes int(400 · (1 − ratio)) 239 instead of 240).
  refs: dict[str, np.ndarray] = {
    "image": image_np,
    "finetune_mask_ratio": np.dtype(args.ratio_dtype).type(ratio),
    "mask_noise": noise_np,
  }
  # MAE's mask (1 = hidden), from the same argsort as the model's masking.
  hidden = np.argsort(np.argsort(noise_np, axis=1, kind="stable"), axis=1) >= int(grid * grid * (1 - ratio))
  refs["train_mask"] = hidden.astype(np.float32)
  if pos_grid != grid:
    refs["encoder_pos_embed_resized"] = _np32(student.encoder_pos_embed(grid))

  started = time.perf_counter()
  with torch.no_grad():
    teacher_features = teacher(image)
  for k, feature in enumerate(teacher_features, start=1):
    refs[f"teacher_layer{k}"] = _np32(feature)

  student.zero_grad()
  train_features = student(image, ratio, noise)
  loss, loss_per_scale = torch_mmr.mmr_loss(teacher_features, train_features)
  loss.backward()
  for k, feature in enumerate(train_features, start=1):
    refs[f"train_student_layer{k}"] = _np32(feature)
  refs["train_loss"] = _np32(loss)
  refs["train_loss_per_scale"] = _np32(loss_per_scale)

  # The published code draws fresh noise at test time too; with ratio 0 it only permutes the tokens.
  with torch.no_grad():
    test_features = student(image, 0.0, noise)
  per_scale, raw, smoothed, scores = torch_mmr.anomaly_maps(teacher_features, test_features, size)
  for k, feature in enumerate(test_features, start=1):
    refs[f"test_student_layer{k}"] = _np32(feature)
  refs.update(
    anomaly_map_per_scale=per_scale.astype(np.float32),
    anomaly_map_raw=raw.astype(np.float32),
    anomaly_map=smoothed.astype(np.float32),
    image_score=scores.astype(np.float32),
  )
  print(
    f"  reference forward/backward in {time.perf_counter() - started:.1f} s; loss {loss.item():.6f}, "
    f"per scale {np.round(loss_per_scale.detach().numpy(), 4).tolist()}"
  )

  print("  self-checks:")
  length = grid * grid
  len_keep = int(length * (1 - ratio))
  if length == 400 and ratio == 0.4:
    self_check(len_keep == 240, "len_keep is 240 at L = 400, ratio 0.4 (Python float arithmetic)")
  self_check(2.5 < loss.item() < 3.5, f"loss at random init is ≈ 3 ({loss.item():.4f})")
  table = student.pos_embed[0, 1:].reshape(pos_grid, pos_grid, -1)
  half = table.shape[-1] // 2
  self_check(
    torch.equal(table[0, :, :half], table[-1, :, :half]) and torch.equal(table[:, 0, half:], table[:, -1, half:]),
    "sin-cos table: the first half encodes the column, the second half the row",
  )
  with torch.no_grad():
    ids_shuffle = torch.argsort(noise, dim=1)
    hidden_changed, visible_changed = image.clone(), image.clone()
    for b in range(args.batch):
      for token in ids_shuffle[b, len_keep:].tolist():
        row, col = divmod(token, grid)
        hidden_changed[b, :, 16 * row : 16 * (row + 1), 16 * col : 16 * (col + 1)] += 1.0
      row, col = divmod(ids_shuffle[b, 0].item(), grid)
      visible_changed[b, :, 16 * row : 16 * (row + 1), 16 * col : 16 * (col + 1)] += 1.0
    hidden_effect = _max_abs_difference(student(hidden_changed, ratio, noise), train_features)
    visible_effect = _max_abs_difference(student(visible_changed, ratio, noise), train_features)
    self_check(
      hidden_effect <= 1e-12 < 1e-3 < visible_effect,
      f"hidden patches do not reach the training features (max change {hidden_effect:.1e}; a "
      f"visible patch changes them by {visible_effect:.2f})",
    )
    raster = torch.arange(length, dtype=torch.float32).expand(args.batch, -1)
    order_effect = _max_abs_difference(student(image, 0.0, raster), test_features)
    self_check(order_effect < 1e-9, f"test features do not depend on the noise ({order_effect:.1e})")

  params = dict(student.named_parameters())
  names = {"all": list(params), "representative": representative_parameters(preset["depth"]), "none": []}[args.grads]
  before = {name: param.detach().clone() for name, param in params.items()}
  torch_mmr.adamw(student, args.lr).step()
  for name in names:
    refs[f"grad/{name}"] = _np32(params[name].grad)
    refs[f"pre_step/{name}"] = _np32(before[name])
    refs[f"post_step/{name}"] = _np32(params[name])
  if names:
    refs["step_lr"] = np.float64(args.lr)
  # After one step Adam's bias-corrected update is g / (|g| + eps); decay only on ≥ 2-D parameters (§6).
  step_error = 0.0
  for name, param in params.items():
    grad, decay = param.grad, 0.05 if param.ndim >= 2 else 0.0
    expected = before[name] * (1 - args.lr * decay) - args.lr * grad / (grad.abs() + 1e-8)
    step_error = max(step_error, (param.detach() - expected).abs().max().item())
  self_check(step_error < 1e-12, f"the AdamW step matches the closed form with the published groups ({step_error:.1e})")
  return weights, refs


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  np.savez_compressed(path, **arrays)
  print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, {len(arrays)} arrays)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
  parser.add_argument("--image-size", type=int, default=64, help="a multiple of 16")
  parser.add_argument(
    "--pos-grid",
    type=int,
    default=None,
    help="grid of the encoder's sin-cos table (default: tiny = image grid, base = 14)",
  )
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--mask-ratio", type=float, default=0.4)
  parser.add_argument(
    "--ratio-dtype",
    choices=("float64", "float32"),
    default="float64",
    help="how finetune_mask_ratio is stored in R.npz",
  )
  # 1e-2 rather than the schedule's 1e-3: the decay term lr · 0.05 · w is then 5e-4 of a parameter, above the
  # 1e-4 relative tolerance, so a wrong weight-decay group shows in post_step/ instead of hiding under it.
  parser.add_argument("--lr", type=float, default=1e-2, help="learning rate of the AdamW step")
  parser.add_argument(
    "--grads",
    choices=("representative", "all", "none"),
    default="representative",
    help="which student parameters get grad/, pre_step/ and post_step/ keys",
  )
  parser.add_argument(
    "--teacher-extra-keys",
    action="store_true",
    help="also write the teacher's layer4 and fc (unused keys a reader must tolerate)",
  )
  parser.add_argument("--metric-images", type=int, default=8, help="size of the scored set; 0: no metrics")
  parser.add_argument("--metric-size", type=int, default=64, help="side of the scored set's maps")
  parser.add_argument("--metrics-only", action="store_true", help="write only R.npz with the metric keys")
  parser.add_argument("--out-dir", required=True)
  parser.add_argument("--prefix", default="", help="file name prefix: <prefix>W.npz, <prefix>R.npz")
  parser.add_argument(
    "--drop",
    type=lambda text: tuple(filter(None, text.split(","))),
    default=(),
    help="comma-separated key prefixes to leave out of R.npz (to keep a golden file small)",
  )
  args = parser.parse_args(argv)
  if args.image_size <= 0 or args.image_size % 16:
    parser.error(f"--image-size must be a positive multiple of 16, got {args.image_size}")
  if args.batch < 1:
    parser.error("--batch must be at least 1")
  if not 0.0 <= args.mask_ratio < 1.0:
    parser.error("--mask-ratio must be in [0, 1)")
  if args.metrics_only and args.metric_images == 0:
    parser.error("--metrics-only needs --metric-images > 0")
  if args.metric_images and (args.metric_images < 3 or args.metric_size < 32):
    parser.error("the scored set needs --metric-images >= 3 and --metric-size >= 32")
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  started = time.perf_counter()
  os.makedirs(args.out_dir, exist_ok=True)
  references: dict[str, np.ndarray] = {}
  if not args.metrics_only:
    print(f"model reference: preset {args.preset}, {args.image_size} px, batch {args.batch}, seed {args.seed}")
    weights, references = model_references(args, np.random.default_rng([args.seed, 0]))
    save_npz(os.path.join(args.out_dir, f"{args.prefix}W.npz"), weights)
  if args.metric_images:
    metrics = metric_references(np.random.default_rng([args.seed, 1]), args.metric_images, args.metric_size)
    references.update(metrics)
    print(
      f"metrics on {args.metric_images} synthetic maps of {args.metric_size}²: image AUROC "
      f"{metrics['metric_image_auroc']:.4f}, pixel AUROC {metrics['metric_pixel_auroc']:.4f}, PRO "
      f"{metrics['metric_pro_mean']:.4f} (per image {np.round(metrics['metric_pro_per_image'], 4).tolist()}), "
      f"AUPRO {metrics['metric_aupro']:.4f}"
    )
  dropped = [key for key in references if any(key.startswith(prefix) for prefix in args.drop)]
  if dropped:
    print(f"  leaving out {len(dropped)} keys that start with {', '.join(args.drop)}")
  save_npz(os.path.join(args.out_dir, f"{args.prefix}R.npz"), {k: v for k, v in references.items() if k not in dropped})
  print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
  main()
