"""Weight import: name maps, layouts, checked loading, readers, catalog and fetch (all offline, tiny shapes)."""

import hashlib
import json
import re
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from mmr_jax import cli
from mmr_jax.models import layers
from mmr_jax.models import mmr
from mmr_jax.models import posembed
from mmr_jax.models import resnet
from mmr_jax.weights import catalog
from mmr_jax.weights import fetch
from mmr_jax.weights import loading
from mmr_jax.weights import names
from mmr_jax.weights import readers
from mmr_jax.weights import structure
from mmr_jax.weights.errors import ChecksumMismatch, DownloadFailed, FixedTableMismatch, WeightsError

# A ViT-B-like student in miniature: depth 2, width 64, patch 16, 2×2 pretraining grid, FPN like ResNet-micro.
DEPTH, WIDTH, PATCH, GRID, FPN = 2, 64, 16, 2, (16, 32, 64)
# Teachers in miniature with the real structures.
WIDE_LIKE = dict(block="bottleneck", stage_sizes=(3, 4, 6), stem=8, planes=(8, 16, 32), mid_multiplier=2)
RESNET18_LIKE = dict(block="basic", stage_sizes=(2, 2, 2), stem=8, planes=(8, 16, 32), mid_multiplier=1)


# ---------------------------------------------------------------------------------------------------------------
# PyTorch-named state dicts in the real names and layouts, and Flax shape trees written from the spec.


def _sincos_table(width: int, grid: int) -> np.ndarray:
  return np.concatenate([np.zeros((1, width), np.float32), posembed.sincos_2d(width, grid, grid)])[None]


def vit_state(rng: np.random.Generator, mae_extras: bool = False, fpn: bool = True) -> dict[str, np.ndarray]:
  """MAE/MMR names: Linear (out, in), Conv (out, in, kh, kw), ConvTranspose (in, out, kh, kw)."""
  r = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  d, h = WIDTH, 4 * WIDTH
  state = {
    "cls_token": r(1, 1, d),
    "pos_embed": _sincos_table(d, GRID),
    "patch_embed.proj.weight": r(d, 3, PATCH, PATCH),
    "patch_embed.proj.bias": r(d),
    "norm.weight": r(d),
    "norm.bias": r(d),
  }
  for i in range(DEPTH):
    for name, shape in (
      ("norm1.weight", (d,)),
      ("norm1.bias", (d,)),
      ("attn.qkv.weight", (3 * d, d)),
      ("attn.qkv.bias", (3 * d,)),
      ("attn.proj.weight", (d, d)),
      ("attn.proj.bias", (d,)),
      ("norm2.weight", (d,)),
      ("norm2.bias", (d,)),
      ("mlp.fc1.weight", (h, d)),
      ("mlp.fc1.bias", (h,)),
      ("mlp.fc2.weight", (d, h)),
      ("mlp.fc2.bias", (d,)),
    ):
      state[f"blocks.{i}.{name}"] = r(*shape)
  if fpn:
    c1, c2, c3 = FPN
    state.update(
      {
        "decoder_FPN_mask_token": r(1, 1, d),
        "decoder_FPN_pos_embed": _sincos_table(d, GRID),
        "simfp_2.0.weight": r(d, d // 2, 2, 2),
        "simfp_2.0.bias": r(d // 2),
        "simfp_2.1.weight": r(d // 2),
        "simfp_2.1.bias": r(d // 2),
        "simfp_2.3.weight": r(d // 2, d // 4, 2, 2),
        "simfp_2.3.bias": r(d // 4),
        "simfp_2.4.weight": r(c1, d // 4, 1, 1),
        "simfp_2.4.norm.weight": r(c1),
        "simfp_2.4.norm.bias": r(c1),
        "simfp_2.5.weight": r(c1, c1, 3, 3),
        "simfp_2.5.norm.weight": r(c1),
        "simfp_2.5.norm.bias": r(c1),
        "simfp_3.0.weight": r(d, d // 2, 2, 2),
        "simfp_3.0.bias": r(d // 2),
        "simfp_3.1.weight": r(c2, d // 2, 1, 1),
        "simfp_3.1.norm.weight": r(c2),
        "simfp_3.1.norm.bias": r(c2),
        "simfp_3.2.weight": r(c2, c2, 3, 3),
        "simfp_3.2.norm.weight": r(c2),
        "simfp_3.2.norm.bias": r(c2),
        "simfp_4.0.weight": r(c3, d, 1, 1),
        "simfp_4.0.norm.weight": r(c3),
        "simfp_4.0.norm.bias": r(c3),
        "simfp_4.1.weight": r(c3, c3, 3, 3),
        "simfp_4.1.norm.weight": r(c3),
        "simfp_4.1.norm.bias": r(c3),
      }
    )
  if mae_extras:  # What mae_visualize_vit_base.pth carries besides the encoder (decoder width 32 here).
    state.update(
      {
        "mask_token": r(1, 1, 32),
        "decoder_pos_embed": _sincos_table(32, GRID),
        "decoder_embed.weight": r(32, d),
        "decoder_embed.bias": r(32),
        "decoder_blocks.0.attn.qkv.weight": r(96, 32),
        "decoder_norm.weight": r(32),
        "decoder_pred.weight": r(PATCH * PATCH * 3, 32),
      }
    )
  return state


def student_shapes(fpn: bool = True) -> dict:
  """The Flax student tree of the spec, as shapes."""
  s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  d, h = WIDTH, 4 * WIDTH
  norm = lambda c: {"scale": s(c), "bias": s(c)}
  dense = lambda i, o: {"kernel": s(i, o), "bias": s(o)}
  encoder = {"patch_embed": {"kernel": s(PATCH, PATCH, 3, d), "bias": s(d)}, "cls_token": s(1, 1, d), "norm": norm(d)}
  for i in range(DEPTH):
    encoder[f"blocks_{i}"] = {
      "norm1": norm(d),
      "attn": {"qkv": dense(d, 3 * d), "proj": dense(d, d)},
      "norm2": norm(d),
      "mlp": {"fc1": dense(d, h), "fc2": dense(h, d)},
    }
  if not fpn:
    return {"encoder": encoder}
  c1, c2, c3 = FPN
  convt = lambda i, o: {"kernel": s(2, 2, i, o), "bias": s(o)}
  conv = lambda k, i, o: {"kernel": s(k, k, i, o)}
  return {
    "encoder": encoder,
    "mask_token": s(1, 1, d),
    "fpn": {
      "simfp_2": {
        "convt_0": convt(d, d // 2),
        "norm_1": norm(d // 2),
        "convt_3": convt(d // 2, d // 4),
        "conv1x1_4": conv(1, d // 4, c1),
        "norm_4": norm(c1),
        "conv3x3_5": conv(3, c1, c1),
        "norm_5": norm(c1),
      },
      "simfp_3": {
        "convt_0": convt(d, d // 2),
        "conv1x1_1": conv(1, d // 2, c2),
        "norm_1": norm(c2),
        "conv3x3_2": conv(3, c2, c2),
        "norm_2": norm(c2),
      },
      "simfp_4": {"conv1x1_0": conv(1, d, c3), "norm_0": norm(c3), "conv3x3_1": conv(3, c3, c3), "norm_1": norm(c3)},
    },
  }


def _fresh(shapes: dict, seed: int = 7) -> dict:
  """Random arrays in place of shapes: stands for freshly initialised params."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: jnp.asarray(rng.standard_normal(leaf.shape), jnp.float32), shapes)


def _widths(block, planes, mid_multiplier):
  expansion = 4 if block == "bottleneck" else 1
  return [p * expansion for p in planes], [p * mid_multiplier for p in planes]


def resnet_state(rng, block, stage_sizes, stem, planes, mid_multiplier, extras=True) -> dict[str, np.ndarray]:
  """torchvision names, with layer4, fc and num_batches_tracked as in the published files."""
  state = {}

  def conv(name, out, inp, k):
    state[f"{name}.weight"] = rng.standard_normal((out, inp, k, k)).astype(np.float32)

  def bn(name, c):
    state[f"{name}.weight"] = rng.standard_normal(c).astype(np.float32)
    state[f"{name}.bias"] = rng.standard_normal(c).astype(np.float32)
    state[f"{name}.running_mean"] = rng.standard_normal(c).astype(np.float32)
    state[f"{name}.running_var"] = rng.uniform(0.5, 2, c).astype(np.float32)
    state[f"{name}.num_batches_tracked"] = np.array(1000, np.int64)

  conv("conv1", stem, 3, 7)
  bn("bn1", stem)
  outs, mids = _widths(block, planes, mid_multiplier)
  layer_specs = list(zip(stage_sizes, outs, mids)) + ([(1, outs[-1] * 2, mids[-1] * 2)] if extras else [])
  channels = stem
  for k, (n, out, mid) in enumerate(layer_specs, start=1):
    for j in range(n):
      prefix = f"layer{k}.{j}"
      if block == "bottleneck":
        conv(f"{prefix}.conv1", mid, channels, 1), bn(f"{prefix}.bn1", mid)
        conv(f"{prefix}.conv2", mid, mid, 3), bn(f"{prefix}.bn2", mid)
        conv(f"{prefix}.conv3", out, mid, 1), bn(f"{prefix}.bn3", out)
      else:
        conv(f"{prefix}.conv1", out, channels, 3), bn(f"{prefix}.bn1", out)
        conv(f"{prefix}.conv2", out, out, 3), bn(f"{prefix}.bn2", out)
      if j == 0 and (k > 1 or channels != out):
        conv(f"{prefix}.downsample.0", out, channels, 1), bn(f"{prefix}.downsample.1", out)
      channels = out
  if extras:
    state["fc.weight"] = rng.standard_normal((10, channels)).astype(np.float32)
    state["fc.bias"] = rng.standard_normal(10).astype(np.float32)
  return state


def teacher_shapes(block, stage_sizes, stem, planes, mid_multiplier) -> dict:
  s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  bn = lambda c: {"scale": s(c), "bias": s(c), "mean": s(c), "var": s(c)}
  conv = lambda k, i, o: {"kernel": s(k, k, i, o)}
  tree = {"conv1": conv(7, 3, stem), "bn1": bn(stem)}
  outs, mids = _widths(block, planes, mid_multiplier)
  channels = stem
  for k, (n, out, mid) in enumerate(zip(stage_sizes, outs, mids), start=1):
    for j in range(n):
      if block == "bottleneck":
        node = {
          "conv1": conv(1, channels, mid),
          "bn1": bn(mid),
          "conv2": conv(3, mid, mid),
          "bn2": bn(mid),
          "conv3": conv(1, mid, out),
          "bn3": bn(out),
        }
      else:
        node = {"conv1": conv(3, channels, out), "bn1": bn(out), "conv2": conv(3, out, out), "bn2": bn(out)}
      if j == 0 and (k > 1 or channels != out):
        node.update(downsample_conv=conv(1, channels, out), downsample_bn=bn(out))
      tree[f"layer{k}_{j}"] = node
      channels = out
  return tree


def _assert_states_equal(got: dict, want: dict) -> None:
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name].shape == want[name].shape, name
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# ---------------------------------------------------------------------------------------------------------------
# Name maps against the real models.


def test_name_maps_cover_the_models_trees_exactly():
  student = mmr.Student(width=WIDTH, depth=DEPTH, num_heads=2, out_channels=FPN, patch_size=PATCH, pretrain_grid=GRID)
  tree = jax.eval_shape(lambda: student.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]
  got = {path: leaf.shape for path, leaf in structure.flatten(tree).items()}
  assert got == {path: leaf.shape for path, leaf in structure.flatten(student_shapes()).items()}
  assert set(got) == {entry.flax_path for entry in names.student_name_map(DEPTH).values()}

  for spec_args in (WIDE_LIKE, RESNET18_LIKE):
    spec = resnet.ResNetSpec(
      spec_args["block"], spec_args["stage_sizes"], spec_args["stem"], spec_args["planes"], spec_args["mid_multiplier"]
    )
    teacher = resnet.ResNetFeatures(spec)
    tree = jax.eval_shape(lambda: teacher.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]
    got = {path: leaf.shape for path, leaf in structure.flatten(tree).items()}
    assert got == {path: leaf.shape for path, leaf in structure.flatten(teacher_shapes(**spec_args)).items()}
    block, sizes, downsample = structure.teacher_structure(tree)
    assert set(got) == {e.flax_path for e in names.teacher_name_map(block, sizes, downsample).values()}


def test_name_map_spot_checks():
  student = names.student_name_map(12)
  assert student["blocks.11.attn.qkv.weight"] == names.Entry(
    "blocks.11.attn.qkv.weight", ("encoder", "blocks_11", "attn", "qkv", "kernel"), "linear"
  )
  assert student["simfp_2.4.norm.weight"].flax_path == ("fpn", "simfp_2", "norm_4", "scale")
  assert student["simfp_2.1.bias"].flax_path == ("fpn", "simfp_2", "norm_1", "bias")
  assert student["simfp_3.0.weight"].layout == "conv_transpose"
  assert "simfp_4.0.bias" not in student  # The FPN's convolutions have no bias.
  assert len(names.student_name_map(12, with_fpn=False)) == 5 + 12 * 12  # cls, patch embed, final norm.
  teacher = names.teacher_name_map("bottleneck", (3, 4, 6))
  assert teacher["layer3.0.downsample.1.running_var"].flax_path == ("layer3_0", "downsample_bn", "var")
  assert teacher["layer1.2.conv3.weight"].layout == "conv"
  assert "layer1.0.downsample.0.weight" not in names.teacher_name_map("basic", (2, 2, 2))


# ---------------------------------------------------------------------------------------------------------------
# Layout changes compute what PyTorch computes (NumPy references of the PyTorch ops vs the model's layers).


def _torch_conv2d(x_nchw, weight, stride, pad):
  """PyTorch Conv2d (cross-correlation, OIHW, zero padding), written out in NumPy."""
  x = np.pad(x_nchw, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  k = weight.shape[-1]
  h_out = (x.shape[2] - k) // stride + 1
  w_out = (x.shape[3] - k) // stride + 1
  out = np.zeros((x.shape[0], weight.shape[0], h_out, w_out))
  for i in range(h_out):
    for j in range(w_out):
      window = x[:, :, i * stride : i * stride + k, j * stride : j * stride + k]
      out[:, :, i, j] = np.einsum("bchw,ochw->bo", window, weight)
  return out


def test_layouts_reproduce_pytorch_layers():
  rng = np.random.default_rng(0)
  nchw_to_nhwc = lambda a: np.transpose(a, (0, 2, 3, 1))

  # Linear: y = x W^T + b.
  w, b, x = rng.standard_normal((6, 4)), rng.standard_normal(6), rng.standard_normal((3, 4))
  np.testing.assert_allclose(x @ names.to_flax("linear", w) + b, x @ w.T + b, rtol=1e-12)

  # Patch embedding: Conv k=p s=p on images, as the model computes it on patchified pixels.
  images = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
  weight = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
  bias = rng.standard_normal(5).astype(np.float32)
  expected = _torch_conv2d(images, weight, 4, 0) + bias[None, :, None, None]
  got = layers.PatchEmbed(5, 4).apply(
    {"params": {"kernel": names.to_flax("conv", weight), "bias": bias}},
    layers.patchify(jnp.asarray(nchw_to_nhwc(images)), 4),
  )
  np.testing.assert_allclose(np.asarray(got).reshape(2, 2, 2, 5), nchw_to_nhwc(expected), rtol=1e-4, atol=1e-4)

  # 3×3 convolution, padding 1 (both forms of the model's layer).
  features = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
  weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
  expected = nchw_to_nhwc(_torch_conv2d(features, weight, 1, 1))
  for form in ("im2col", "native"):
    got = layers.Conv3x3(6, form).apply(
      {"params": {"kernel": names.to_flax("conv", weight)}}, jnp.asarray(nchw_to_nhwc(features))
    )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)

  # ConvTranspose k=2 s=2: out[o, 2i+a, 2j+b] = Σ_c in[c, i, j]·W[c, o, a, b] + bias[o] (PyTorch's definition).
  weight = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
  bias = rng.standard_normal(3).astype(np.float32)
  expected = np.zeros((1, 3, 10, 10))
  for a in range(2):
    for b_ in range(2):
      expected[:, :, a::2, b_::2] = np.einsum("bcij,co->boij", features, weight[:, :, a, b_])
  expected += bias[None, :, None, None]
  got = layers.ConvTranspose2x2(3).apply(
    {"params": {"kernel": names.to_flax("conv_transpose", weight), "bias": bias}}, jnp.asarray(nchw_to_nhwc(features))
  )
  np.testing.assert_allclose(np.asarray(got), nchw_to_nhwc(expected), rtol=1e-4, atol=1e-4)

  for layout in ("linear", "conv", "conv_transpose", "copy"):  # The inverse really inverts.
    array = rng.standard_normal((2, 3, 4, 5)[: 2 if layout == "linear" else 4])
    np.testing.assert_array_equal(names.to_torch(layout, names.to_flax(layout, array)), array)
    assert names.flax_shape(layout, array.shape) == names.to_flax(layout, array).shape


# ---------------------------------------------------------------------------------------------------------------
# Round trips and the every-leaf checks.


def test_student_round_trip_mmr():
  state = vit_state(np.random.default_rng(1))
  result = loading.load_student(state, student_shapes(), source="mmr")
  assert sorted(result.tables) == ["decoder_FPN_pos_embed", "pos_embed"]
  assert result.kept == () and result.ignored == ()
  leaves = structure.flatten(result.params)
  assert all(leaf.dtype == np.float32 and isinstance(leaf, np.ndarray) for leaf in leaves.values())
  np.testing.assert_array_equal(
    leaves[("encoder", "blocks_1", "attn", "qkv", "kernel")], state["blocks.1.attn.qkv.weight"].T
  )
  np.testing.assert_array_equal(
    leaves[("fpn", "simfp_2", "conv1x1_4", "kernel")], state["simfp_2.4.weight"].transpose(2, 3, 1, 0)
  )
  _assert_states_equal(loading.student_to_torch(result.params, result.tables), state)
  # Flax's {'params': ...} wrapper is accepted and given back.
  wrapped = loading.load_student(state, {"params": student_shapes()}, source="auto")
  assert set(wrapped.params) == {"params"}


@pytest.mark.parametrize("architecture", [WIDE_LIKE, RESNET18_LIKE], ids=["wide_resnet50_2-like", "resnet18-like"])
def test_teacher_round_trip(architecture):
  state = resnet_state(np.random.default_rng(2), **architecture)
  result = loading.load_teacher(state, teacher_shapes(**architecture))
  extras = [n for n in state if n.startswith(("layer4.", "fc.")) or n.endswith("num_batches_tracked")]
  assert sorted(result.ignored) == sorted(extras) and len(result.ignored) > 0
  leaves = structure.flatten(result.params)
  np.testing.assert_array_equal(
    leaves[("layer2_0", "downsample_bn", "var")], state["layer2.0.downsample.1.running_var"]
  )
  exported = loading.teacher_to_torch(result.params, num_batches_tracked=False)
  _assert_states_equal(exported, {n: v for n, v in state.items() if n not in extras})
  with_counters = loading.teacher_to_torch(result.params)
  assert with_counters["layer1.0.bn1.num_batches_tracked"].dtype == np.int64


def test_float16_checkpoints_load_as_float32():  # wide_resnet50_2-95faca4d.pth stores float16 tensors.
  state = {
    n: v.astype(np.float16) if v.dtype == np.float32 else v
    for n, v in resnet_state(np.random.default_rng(3), **RESNET18_LIKE).items()
  }
  result = loading.load_teacher(state, teacher_shapes(**RESNET18_LIKE))
  kernel = structure.flatten(result.params)[("conv1", "kernel")]
  assert kernel.dtype == np.float32
  np.testing.assert_array_equal(kernel, state["conv1.weight"].astype(np.float32).transpose(2, 3, 1, 0))


def test_missing_keys_are_all_named():
  state = vit_state(np.random.default_rng(4))
  del state["blocks.1.mlp.fc2.bias"], state["simfp_3.2.norm.weight"]
  with pytest.raises(WeightsError) as error:
    loading.load_student(state, student_shapes(), source="mmr")
  message = str(error.value)
  assert "lacks 2 parameters" in message
  assert "blocks.1.mlp.fc2.bias (→ encoder/blocks_1/mlp/fc2/bias)" in message
  assert "simfp_3.2.norm.weight (→ fpn/simfp_3/norm_2/scale)" in message


def test_unknown_keys_are_an_error_unless_ignorable():
  state = vit_state(np.random.default_rng(5))
  state["blocks.0.attn.q_norm.weight"] = np.ones(WIDTH, np.float32)
  with pytest.raises(WeightsError, match=r"match no parameter.*blocks\.0\.attn\.q_norm\.weight"):
    loading.load_student(state, student_shapes(), source="mmr")
  teacher = resnet_state(np.random.default_rng(5), **RESNET18_LIKE)
  teacher["layer3.9.conv1.weight"] = np.ones((1, 1, 1, 1), np.float32)
  with pytest.raises(WeightsError, match=r"layer3\.9\.conv1\.weight"):
    loading.load_teacher(teacher, teacher_shapes(**RESNET18_LIKE))


def test_wrong_shape_names_both_keys_and_shapes():
  state = vit_state(np.random.default_rng(6))
  state["blocks.0.attn.qkv.weight"] = np.zeros((3 * WIDTH, WIDTH + 1), np.float32)
  with pytest.raises(WeightsError) as error:
    loading.load_student(state, student_shapes(), source="mmr")
  message = str(error.value)
  assert "'blocks.0.attn.qkv.weight' has shape (192, 65)" in message
  assert "'encoder/blocks_0/attn/qkv/kernel' (64, 192) needs (192, 64)" in message


def test_a_wide_checkpoint_does_not_fit_a_narrow_teacher():
  state = resnet_state(np.random.default_rng(7), **WIDE_LIKE)
  narrow = dict(WIDE_LIKE, mid_multiplier=1)
  with pytest.raises(WeightsError, match=r"layer1\.0\.conv1\.weight' has shape \(16, 8, 1, 1\)"):
    loading.load_teacher(state, teacher_shapes(**narrow))


def test_non_finite_weights_are_rejected():
  state = vit_state(np.random.default_rng(8))
  state["norm.bias"][3] = np.nan
  with pytest.raises(WeightsError, match="'norm.bias' contains NaN"):
    loading.load_student(state, student_shapes(), source="mmr")


def test_tree_out_of_step_with_the_map_is_reported():
  shapes = student_shapes()
  shapes["encoder"]["blocks_0"]["attn"]["qkv"]["extra"] = jax.ShapeDtypeStruct((1,), jnp.float32)
  with pytest.raises(WeightsError, match="in the tree, not in the map: encoder/blocks_0/attn/qkv/extra"):
    loading.load_student(vit_state(np.random.default_rng(9)), shapes, source="mmr")


# ---------------------------------------------------------------------------------------------------------------
# MAE mode.


def _check_mae_load(state: dict) -> None:
  fresh = _fresh(student_shapes())
  result = loading.load_student(state, fresh, source="mae")
  leaves, fresh_leaves = structure.flatten(result.params), structure.flatten(fresh)
  # The encoder comes from the checkpoint ...
  np.testing.assert_array_equal(
    leaves[("encoder", "patch_embed", "kernel")], state["patch_embed.proj.weight"].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(leaves[("encoder", "cls_token")], state["cls_token"])
  # ... the mask token and the FPN keep their fresh initialisation.
  assert set(result.kept) == {"/".join(p) for p in fresh_leaves if p[0] != "encoder"}
  for path in fresh_leaves:
    if path[0] != "encoder":
      np.testing.assert_array_equal(np.asarray(leaves[path]), np.asarray(fresh_leaves[path]))
  assert set(result.ignored) == {n for n in state if "decoder" in n or n == "mask_token"}
  assert sorted(result.tables) == ["pos_embed"]


def test_mae_mode_drops_decoder_keeps_fresh_fpn_from_a_real_pth(tmp_path):
  torch = pytest.importorskip("torch")
  state = vit_state(np.random.default_rng(10), mae_extras=True, fpn=False)
  path = tmp_path / "mae_visualize_vit_base.pth"
  # The layout of MAE's released files: {"model": state_dict}.
  torch.save({"model": {n: torch.from_numpy(v) for n, v in state.items()}}, path)
  read = readers.read_state_dict(path)
  _assert_states_equal(read, state)
  _check_mae_load(read)


def test_mae_mode_without_torch():
  _check_mae_load(vit_state(np.random.default_rng(11), mae_extras=True, fpn=False))


def test_mae_mode_needs_fresh_arrays_and_refuses_an_mmr_checkpoint():
  state = vit_state(np.random.default_rng(12), mae_extras=True, fpn=False)
  with pytest.raises(WeightsError, match=r"mask_token.*pass the freshly initialised params"):
    loading.load_student(state, student_shapes(), source="mae")
  with pytest.raises(WeightsError, match=r"simfp_2\.0\.weight.*source='mmr'"):
    loading.load_student(vit_state(np.random.default_rng(12)), _fresh(student_shapes()), source="mae")
  assert structure.guess_student_source(vit_state(np.random.default_rng(12))) == "mmr"
  assert structure.guess_student_source(state) == "mae"


# ---------------------------------------------------------------------------------------------------------------
# Fixed position tables.


def test_fixed_tables_are_checked_against_the_models():
  state = vit_state(np.random.default_rng(13))
  tables = loading.load_student(state, student_shapes(), source="mmr").tables
  expected = {
    "pos_embed": posembed.sincos_2d(WIDTH, GRID, GRID),  # Without the cls row,
    "decoder_FPN_pos_embed": _sincos_table(WIDTH, GRID),
  }  # or with it.
  assert loading.check_fixed_tables(tables, expected) == {"pos_embed": 0.0, "decoder_FPN_pos_embed": 0.0}
  learned = dict(tables, pos_embed=tables["pos_embed"] + 1e-3)
  with pytest.raises(FixedTableMismatch, match=r"'pos_embed' differs from the fixed sin-cos table by up to 0\.001"):
    loading.check_fixed_tables(learned, expected)
  with pytest.raises(FixedTableMismatch, match=r"\(1, 5, 64\).*different token grid"):
    loading.check_fixed_tables(tables, {"pos_embed": posembed.sincos_2d(WIDTH, 3, 3)})


# ---------------------------------------------------------------------------------------------------------------
# Architecture inference.


def test_infer_vit():
  arch = structure.infer_vit(vit_state(np.random.default_rng(14)))
  assert arch == dict(width=WIDTH, depth=DEPTH, patch_size=PATCH, pretrain_grid=GRID, mlp_ratio=4.0, fpn_widths=FPN)
  encoder_only = structure.infer_vit(vit_state(np.random.default_rng(14), mae_extras=True, fpn=False))
  assert encoder_only["fpn_widths"] is None and encoder_only["depth"] == DEPTH
  with pytest.raises(WeightsError, match="not a ViT state dict"):
    structure.infer_vit(resnet_state(np.random.default_rng(14), **RESNET18_LIKE))


def test_infer_teacher():
  wide = structure.infer_teacher(resnet_state(np.random.default_rng(15), **WIDE_LIKE))
  assert wide == dict(
    block="bottleneck",
    stage_sizes=(3, 4, 6),
    stem_width=8,
    widths=(32, 64, 128),
    mid_widths=(16, 32, 64),
    planes=(8, 16, 32),
    mid_multiplier=2,
    downsample=(True, True, True),
  )
  small = structure.infer_teacher(resnet_state(np.random.default_rng(15), **RESNET18_LIKE))
  assert small == dict(
    block="basic",
    stage_sizes=(2, 2, 2),
    stem_width=8,
    widths=(8, 16, 32),
    mid_widths=(8, 16, 32),
    planes=(8, 16, 32),
    mid_multiplier=1,
    downsample=(False, True, True),
  )
  with pytest.raises(WeightsError, match="not a torchvision ResNet"):
    structure.infer_teacher(vit_state(np.random.default_rng(15)))


# ---------------------------------------------------------------------------------------------------------------
# Readers.


def test_npz_and_safetensors_readers(tmp_path):
  state = vit_state(np.random.default_rng(16))
  safetensors_numpy.save_file(state, str(tmp_path / "student.safetensors"))
  _assert_states_equal(readers.read_state_dict(tmp_path / "student.safetensors"), state)

  teacher = resnet_state(np.random.default_rng(16), **RESNET18_LIKE)
  readers.write_npz(
    tmp_path / "W.npz",
    {**{f"student/{n}": v for n, v in state.items()}, **{f"teacher/{n}": v for n, v in teacher.items()}},
  )
  _assert_states_equal(readers.read_state_dict(tmp_path / "W.npz", prefix="student/"), state)
  _assert_states_equal(readers.read_state_dict(tmp_path / "W.npz", prefix="teacher/"), teacher)
  with pytest.raises(WeightsError, match="no entries under 'ema/'.*student/, teacher/"):
    readers.read_state_dict(tmp_path / "W.npz", prefix="ema/")
  # DataParallel's "module." prefix is removed.
  readers.write_npz(tmp_path / "ddp.npz", {f"module.{n}": v for n, v in state.items()})
  _assert_states_equal(readers.read_state_dict(tmp_path / "ddp.npz"), state)


def test_bfloat16_safetensors_are_widened(tmp_path):
  values = np.array([[1.0, -2.5], [3.140625, 0.0]], np.float32)  # Exactly representable in bfloat16.
  raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
  header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(raw)]}}).encode()
  path = tmp_path / "bf16.safetensors"
  path.write_bytes(struct.pack("<Q", len(header)) + header + raw)
  # Through the library (NumPy knows bfloat16 here, jax imported ml_dtypes) and through the direct reader that
  # serves processes where it does not.
  for got in (readers.read_state_dict(path)["w"], readers._read_safetensors_widening(path)["w"]):
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


def test_bad_files_give_clear_errors(tmp_path):
  with pytest.raises(WeightsError, match="weights file not found: .*nothing.npz"):
    readers.read_state_dict(tmp_path / "nothing.npz")
  (tmp_path / "weights.h5").write_bytes(b"x")
  with pytest.raises(WeightsError, match="unsupported weights format '.h5'"):
    readers.read_state_dict(tmp_path / "weights.h5")
  readers.write_npz(tmp_path / "good.npz", {"a": np.ones(1000)})
  (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:300])
  for name in ("cut.npz", "junk.safetensors", "junk.pth"):
    if not (tmp_path / name).exists():
      (tmp_path / name).write_bytes(b"\x00not a weights file" * 10)
    with pytest.raises(WeightsError, match=re.escape(str(tmp_path / name))):
      readers.read_state_dict(tmp_path / name)


# ---------------------------------------------------------------------------------------------------------------
# Catalog and fetch (no network: file:// URLs).


def test_catalog_entries_are_consistent():
  assert {"mae_visualize_vit_base", "mae_pretrain_vit_base", "wide_resnet50_2", "resnet18"} <= set(catalog.CATALOG)
  for entry in catalog.CATALOG.values():
    assert entry.url.endswith("/" + entry.filename) or entry.package
    assert entry.source in ("mae", "torchvision", "efficientnet_lite") and entry.role in ("student", "teacher")
    assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    if entry.source != "mae":  # torchvision's and the packages' file names carry the start of the SHA-256.
      assert entry.sha256.startswith(entry.filename.rsplit("-", 1)[1].split(".")[0])
    if entry.package:
      assert entry.package.split("==")[0].replace("-", "_") == entry.package_module
  assert catalog.get("mae_visualize_vit_base").sha256 is None
  with pytest.raises(WeightsError, match="unknown pretrained weights 'vit_giant'"):
    catalog.get("vit_giant")


def _tiny_entry(url: str, data: bytes | None, filename: str = "tiny_resnet.safetensors", **overrides):
  fields = dict(
    name="tiny_resnet",
    url=url,
    filename=filename,
    sha256=hashlib.sha256(data).hexdigest() if data is not None else None,
    md5_prefix=None,
    size_bytes=len(data) if data is not None else None,
    source="torchvision",
    role="teacher",
    model="test ResNet",
  )
  fields.update(overrides)
  return catalog.CatalogEntry(**fields)


def test_unreachable_url_explains_the_manual_route(tmp_path, monkeypatch, capsys):
  entry = _tiny_entry((tmp_path / "nowhere" / "resnet-0000.pth").as_uri(), None, filename="resnet-0000.pth")
  monkeypatch.setitem(catalog.CATALOG, entry.name, entry)
  cache = tmp_path / "cache"
  with pytest.raises(DownloadFailed) as error:
    fetch.fetch(entry.name, cache, log=lambda message: None)
  message = str(error.value)
  assert entry.url in message
  assert f"exactly this name: {cache / 'resnet-0000.pth'}" in message
  assert f"python -m mmr_jax fetch_weights tiny_resnet --cache_dir={cache}" in message
  assert "init.teacher=" in message
  assert not list(cache.glob("*"))  # No partial file left behind.
  # The command line prints the same and fails.
  assert cli.run(["fetch_weights", entry.name, f"--cache_dir={cache}"]) == DownloadFailed.exit_code == 4
  assert f"exactly this name: {cache / 'resnet-0000.pth'}" in capsys.readouterr().err


def test_fetch_downloads_verifies_converts_and_then_reads_offline(tmp_path, monkeypatch):
  state = resnet_state(np.random.default_rng(17), **RESNET18_LIKE)
  served = tmp_path / "server" / "tiny_resnet.safetensors"
  served.parent.mkdir()
  safetensors_numpy.save_file(
    {n: v.astype(np.float16) if v.dtype == np.float32 else v for n, v in state.items()}, str(served)
  )
  entry = _tiny_entry(served.as_uri(), served.read_bytes())
  monkeypatch.setitem(catalog.CATALOG, entry.name, entry)
  cache = tmp_path / "cache"
  monkeypatch.setenv(fetch.CACHE_ENV, str(cache))

  converted = fetch.fetch(entry.name, log=lambda message: None)
  assert converted == cache / "tiny_resnet.npz"
  assert (cache / "tiny_resnet.safetensors").is_file()
  assert json.loads((cache / "tiny_resnet.json").read_text())["check"].endswith("size, SHA-256 verified")
  served.unlink()  # From here on nothing is downloaded.
  resolved = fetch.resolve(entry.name)
  want = {n: v.astype(np.float16).astype(np.float32) for n, v in state.items() if not names.is_torchvision_extra(n)}
  _assert_states_equal(resolved, want)
  assert all(v.dtype == np.float32 for v in resolved.values())
  # The cache is in the parity weights format, so a path to it resolves too.
  _assert_states_equal(fetch.resolve(converted, role="teacher"), want)


def test_checksum_mismatch_of_a_hand_placed_file(tmp_path, monkeypatch):
  published = b"the published bytes"
  entry = _tiny_entry((tmp_path / "unreachable.pth").as_uri(), published, filename="tiny-0000.pth")
  monkeypatch.setitem(catalog.CATALOG, entry.name, entry)
  cache = tmp_path / "cache"
  cache.mkdir()
  (cache / "tiny-0000.pth").write_bytes(b"something else entirely")
  with pytest.raises(ChecksumMismatch) as error:
    fetch.fetch(entry.name, cache, log=lambda message: None)
  message = str(error.value)
  assert str(cache / "tiny-0000.pth") in message and entry.sha256 in message and "delete it" in message
  assert not (cache / "tiny_resnet.npz").exists()


def test_a_download_that_fails_its_check_is_deleted(tmp_path, monkeypatch):
  served = tmp_path / "tiny.safetensors"
  served.write_bytes(b"tampered")
  entry = _tiny_entry(served.as_uri(), b"original")
  monkeypatch.setitem(catalog.CATALOG, entry.name, entry)
  cache = tmp_path / "cache"
  with pytest.raises(ChecksumMismatch, match="failed its check and was deleted"):
    fetch.fetch(entry.name, cache, log=lambda message: None)
  assert not list(cache.glob("*"))


def test_unpublished_checksum_is_skipped_and_said(tmp_path):
  path = tmp_path / "file.pth"
  path.write_bytes(b"anything")
  assert "integrity check skipped" in fetch.verify_file(path, catalog.get("mae_visualize_vit_base"))


def test_resolve_paths_and_names(tmp_path, monkeypatch):
  monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
  state = vit_state(np.random.default_rng(18))
  readers.write_npz(tmp_path / "student.npz", state)
  _assert_states_equal(fetch.resolve(tmp_path / "student.npz"), state)
  readers.write_npz(tmp_path / "W.npz", {f"student/{n}": v for n, v in state.items()})
  with pytest.raises(WeightsError, match=r"groups its arrays \(student\); say which"):
    fetch.resolve(tmp_path / "W.npz")
  with pytest.raises(WeightsError, match="neither a catalog name .*mae_visualize_vit_base.* nor an existing"):
    fetch.resolve("mae_visualise_vit_base")
  assert fetch.cache_dir() == tmp_path / "cache"
  assert fetch.cache_dir(tmp_path / "other") == tmp_path / "other"
