"""The Flax model: total hiding of masked tokens, masking arithmetic, position tables, other image sizes."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from mmr_jax.models import layers
from mmr_jax.models import mmr
from mmr_jax.models import posembed
from mmr_jax.models import resnet
from mmr_jax.models import teachers
from mmr_jax.models import vit

SIZE = 64
PATCH = 16


@functools.lru_cache(maxsize=None)
def micro_student(pretrain_grid: int = SIZE // PATCH) -> mmr.Student:
  return mmr.Student(
    width=128,
    depth=2,
    num_heads=2,
    out_channels=teachers.TEACHERS["resnet_micro"].out_channels,
    pretrain_grid=pretrain_grid,
  )


@pytest.fixture(scope="module")
def student_and_params():
  student = micro_student()
  params = jax.jit(lambda k: student.init(k, jnp.zeros((1, SIZE, SIZE, 3)))["params"])(jax.random.key(0))
  return student, params


@functools.partial(jax.jit, static_argnums=(0, 1))
def apply(student, ratio, params, images, noise):
  return student.apply({"params": params}, images, ratio, noise)


def masked_patch_pixels(noise: np.ndarray, ratio: float, grid: int) -> np.ndarray:
  """(B, H, W) bool: the pixels of the patches that the masking hides."""
  kept = np.asarray(vit.random_masking(jnp.asarray(noise), ratio).kept)
  hidden = np.ones(noise.shape, bool)
  np.put_along_axis(hidden, kept, False, axis=1)
  return np.repeat(np.repeat(hidden.reshape(-1, grid, grid), PATCH, axis=1), PATCH, axis=2)


def test_masked_pixels_are_fully_hidden(student_and_params):
  student, params = student_and_params
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
  noise = rng.uniform(size=(2, (SIZE // PATCH) ** 2)).astype(np.float32)
  hidden = masked_patch_pixels(noise, 0.4, SIZE // PATCH)
  assert 0 < hidden.mean() < 1
  changed = images.copy()
  changed[hidden] = rng.normal(size=(hidden.sum(), 3)) * 10

  before = apply(student, 0.4, params, images, noise)
  after = apply(student, 0.4, params, changed, noise)
  for b, a in zip(before, after):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))  # Bit for bit.

  # The same change is seen when nothing is masked: the test above is not vacuous.
  visible_before = apply(student, 0.0, params, images, noise)
  visible_after = apply(student, 0.0, params, changed, noise)
  assert all(np.abs(np.asarray(b) - np.asarray(a)).max() > 1e-3 for b, a in zip(visible_before, visible_after))


def test_masking_keeps_lowest_noise_tokens_in_shuffled_order():
  noise = jnp.asarray([[0.9, 0.1, 0.5, 0.3, 0.7]])
  masking = vit.random_masking(noise, 0.4)
  np.testing.assert_array_equal(masking.kept, [[1, 3, 2]])  # int(5 · 0.6) = 3 kept, ascending noise.
  shuffled = jnp.argsort(noise, axis=1)
  np.testing.assert_array_equal(jnp.take_along_axis(shuffled, masking.restore, axis=1), [[0, 1, 2, 3, 4]])


def test_len_keep_uses_double_precision():
  assert vit.num_kept(196, 0.4) == 117
  assert vit.num_kept(400, 0.4) == 240
  assert vit.num_kept(196, 0.0) == 196
  with pytest.raises(ValueError, match="mask ratio"):
    vit.num_kept(196, 1.0)


def test_sincos_table_matches_mae_formula():
  dim, grid = 16, 3
  table = posembed.sincos_2d(dim, grid, grid)
  omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
  for row in range(grid):
    for col in range(grid):
      expected = np.concatenate([np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)])
      np.testing.assert_allclose(table[row * grid + col], expected, atol=1e-7)


def test_bicubic_resize_is_pytorchs_kernel():
  matrix = posembed.torch_bicubic_matrix(4, 6)
  np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)  # Interpolation preserves constants.
  # Output pixel 0 of 4 → 6: source x = 0.5 · 4/6 − 0.5 = −1/6, taps −2..1 clamped to 0..1.
  t = 5 / 6
  a = -0.75
  w = [
    ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
    ((a + 2) * t - (a + 3)) * t * t + 1,
    ((a + 2) * (1 - t) - (a + 3)) * (1 - t) ** 2 + 1,
    ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
  ]
  np.testing.assert_allclose(matrix[0, :2], [w[0] + w[1] + w[2], w[3]], atol=1e-12)
  np.testing.assert_array_equal(posembed.torch_bicubic_matrix(5, 5), np.eye(5))
  # A resized sin-cos table is not a sin-cos table: it overshoots past ±1 (docs/spec.md §1).
  resized = posembed.encoder_table(768, 14, 20, 20)
  assert resized.shape == (400, 768) and np.abs(resized).max() > 1.0


def test_other_image_sizes(student_and_params):
  _, params = student_and_params
  student = micro_student(pretrain_grid=SIZE // PATCH)  # Table made for 4×4, resized to 6×6 at 96 px.
  images = jnp.zeros((1, 96, 96, 3))
  features = apply(student, 0.4, params, images, jnp.linspace(0, 1, 36)[None])
  assert [f.shape for f in features] == [(1, 24, 24, 16), (1, 12, 12, 32), (1, 6, 6, 64)]
  with pytest.raises(ValueError, match="multiple of the patch size"):
    student.apply({"params": params}, jnp.zeros((1, 72, 72, 3)))


def _reference_conv(x, kernel, stride, padding):
  return jax.lax.conv_general_dilated(
    x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
  )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv3x3_forms_agree_with_their_gradients(dtype):
  """im2col's hand-written backward (layers._same_conv_bwd) against lax.conv's gradient on the same rounded
  operands; in bfloat16 within the rounding of its bf16 cotangent."""
  x = jax.random.normal(jax.random.key(1), (2, 7, 5, 6))
  im2col, native = layers.Conv3x3(4, "im2col", dtype), layers.Conv3x3(4, "native", dtype)
  params = im2col.init(jax.random.key(2), x)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(
    *(np.asarray(m.apply(params, x), np.float32) for m in (im2col, native)), rtol=tol, atol=tol
  )

  def objective(module):
    return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x).astype(jnp.float32)))

  rounded = lambda t: t.astype(dtype).astype(jnp.float32)
  got = jax.grad(objective(im2col), (0, 1))(params, x)
  reference = lambda p, x: jnp.sum(jnp.sin(_reference_conv(rounded(x), rounded(p["params"]["kernel"]), 1, "SAME")))
  want = jax.grad(reference, (0, 1))(params, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    scale = float(jnp.max(jnp.abs(w)))
    np.testing.assert_allclose(np.asarray(g, np.float32), w, atol=tol * scale)


@pytest.mark.parametrize("k,stride,padding", [(7, 2, "torch"), (3, 2, "torch"), (1, 2, "torch"), (3, 2, "SAME")])
def test_teacher_conv_im2col_matches_the_native_convolution(k, stride, padding):
  x = jax.random.normal(jax.random.key(3), (2, 11, 10, 5))
  native = layers.Conv(6, k, stride, padding, form="native")
  params = native.init(jax.random.key(4), x)
  im2col = layers.Conv(6, k, stride, padding, form="im2col")
  np.testing.assert_allclose(im2col.apply(params, x), native.apply(params, x), rtol=1e-5, atol=1e-5)


def test_bfloat16_matmul_backward_multiplies_bfloat16():
  """Both backward products of `layers.matmul` take bfloat16 operands (a float32 cotangent would make them
  float32 dots: docs/cpu-performance.md), and the gradients are those of the float32 product to bf16 rounding."""
  x = jax.random.normal(jax.random.key(5), (3, 8, 16))
  kernel = jax.random.normal(jax.random.key(6), (16, 12))
  objective = lambda dtype: lambda x, k: jnp.sum(jnp.sin(layers.matmul(x, k, dtype)))
  jaxpr = jax.make_jaxpr(jax.grad(objective(jnp.bfloat16), (0, 1)))(x, kernel)

  def all_dots(eqns):
    for e in eqns:
      if e.primitive.name == "dot_general":
        yield e
      for sub in jax.extend.core.jaxprs_in_params(e.params):
        yield from all_dots(sub.eqns)

  dots = list(all_dots(jaxpr.jaxpr.eqns))
  assert len(dots) == 3
  assert all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
  got = jax.grad(objective(jnp.bfloat16), (0, 1))(x, kernel)
  want = jax.grad(objective(jnp.float32), (0, 1))(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
  for g, w in zip(got, want):
    w = np.asarray(w, np.float32)
    np.testing.assert_allclose(np.asarray(g, np.float32), w, atol=0.05 * np.abs(w).max())


def test_teacher_feature_shapes_follow_torchvision_strides():
  spec = teachers.TEACHERS["resnet_micro"]
  teacher = resnet.ResNetFeatures(spec)
  shapes = jax.eval_shape(lambda k: teacher.init_with_output(k, jnp.zeros((1, 64, 64, 3)))[0], jax.random.key(0))
  assert [s.shape for s in shapes] == [(1, 16, 16, 16), (1, 8, 8, 32), (1, 4, 4, 64)]
  wide = resnet.ResNetFeatures(teachers.TEACHERS["wide_resnet50_2"])
  shapes = jax.eval_shape(lambda k: wide.init_with_output(k, jnp.zeros((1, 224, 224, 3)))[0], jax.random.key(0))
  assert [s.shape for s in shapes] == [(1, 56, 56, 256), (1, 28, 28, 512), (1, 14, 14, 1024)]


def _torch_fan_in(layer: str, kernel: np.ndarray) -> int:
  """PyTorch's fan_in of the layer the HWIO kernel came from: dim 1 of its weight × kernel area, i.e. the input
  channels of a Conv2d and the *output* channels of a ConvTranspose2d (weight (in, out, k, k))."""
  kh, kw, cin, cout = kernel.shape
  return kh * kw * (cout if layer.startswith("convt") else cin)


def test_fpn_starts_from_pytorchs_default_initialisation(student_and_params):
  """The published code leaves the FPN's convolutions at PyTorch's default, U(±1/√fan_in) for weights and the
  ConvTranspose biases (docs/spec.md §2): every kernel within the bound with a uniform's std (bound/√3)."""
  _, params = student_and_params
  checked = 0
  for branch, branch_params in params["fpn"].items():
    for layer, leaves in branch_params.items():
      if "kernel" not in leaves:
        continue  # LayerNorms.
      kernel = np.asarray(leaves["kernel"])
      bound = 1.0 / np.sqrt(_torch_fan_in(layer, kernel))
      assert np.abs(kernel).max() <= bound, (branch, layer)
      np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.1, err_msg=f"{branch}/{layer}")
      if "bias" in leaves:
        bias = np.asarray(leaves["bias"])
        assert np.abs(bias).max() <= bound and np.abs(bias).max() > bound / 2, (branch, layer)
      checked += 1
  assert checked == 9  # simfp_2: 2 ConvT, 1×1, 3×3; simfp_3: ConvT, 1×1, 3×3; simfp_4: 1×1, 3×3.
