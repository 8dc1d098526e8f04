"""The test transform when resize_size < image_size: torchvision's CenterCrop pads a zero border first."""

import numpy as np
import pytest
from PIL import Image

import data_fixtures as fx
from mmr_jax import config as config_lib
from mmr_jax.data import pipeline
from mmr_jax.data import preprocess


def _torchvision_padding(side, crop):
  """F.center_crop's padding_ltrb for a square image smaller than the crop, written out: (left, top, right, bottom)."""
  return (crop - side) // 2, (crop - side) // 2, (crop - side + 1) // 2, (crop - side + 1) // 2


@pytest.mark.parametrize("resize,crop", [(50, 64), (51, 64), (63, 64)])
def test_a_smaller_resize_is_padded_at_torchvision_offsets(resize, crop):
  rng = np.random.default_rng(resize)
  image = rng.integers(1, 256, (70, 90, 3), dtype=np.uint8)  # No zero pixel: the border is told apart.
  mask = np.full((70, 90), 255, np.uint8)  # Anomalous everywhere: only the padding can be normal.
  out, out_mask = preprocess.eval_transform(image, mask, False, resize, crop, False)
  assert out.shape == (crop, crop, 3) and out.dtype == np.uint8 and out_mask.shape == (crop, crop)
  left, top, right, bottom = _torchvision_padding(resize, crop)
  assert left + right == crop - resize and (right - left) == (crop - resize) % 2  # The odd pixel right, bottom.
  interior = (slice(top, crop - bottom), slice(left, crop - right))
  expected = np.asarray(Image.fromarray(image).resize((resize, resize), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(out[interior], expected)
  border = np.ones((crop, crop), bool)
  border[interior] = False
  assert not out[border].any() and border.sum() == crop * crop - resize * resize
  assert out_mask[interior].all() and not out_mask[border].any()
  # Normalised, the border (bottom right always has some) is what torchvision's black padding becomes.
  np.testing.assert_allclose(
    preprocess.normalize(out)[-1, -1], -np.array([0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225]), rtol=1e-6
  )


def test_padding_and_crop_offsets():
  assert preprocess.centre_padding(50, 64) == (7, 7) and preprocess.centre_padding(51, 64) == (6, 7)
  assert preprocess.centre_padding(73, 64) == (0, 0) and preprocess.centre_offset(73, 64) == 4
  # A larger resize still crops, at torchvision's rounded offset.
  array = np.arange(73 * 73).reshape(73, 73)
  np.testing.assert_array_equal(preprocess.centre_crop(array, 64), array[4:68, 4:68])
  np.testing.assert_array_equal(preprocess.centre_crop(array, 73), array)


def test_nearest_masks_are_padded_too():
  mask = np.zeros((40, 40), np.uint8)
  mask[:, 20:] = 255
  image = np.full((40, 40, 3), 200, np.uint8)
  _, out_mask = preprocess.eval_transform(image, mask, True, 27, 32, False)
  left, top, right, bottom = _torchvision_padding(27, 32)
  assert (left, right) == (2, 3)
  assert not out_mask[:top].any() and not out_mask[32 - bottom :].any() and not out_mask[:, 32 - right :].any()
  assert out_mask[top : 32 - bottom, 32 - right - 1].all()


def test_config_and_pipeline_accept_a_resize_below_the_crop(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path), resize_size=27)
  config_lib.validate(config)  # image_size 32 > resize_size 27.
  pipeline.clear_caches()
  try:
    batch = next(pipeline.eval_batches(config, "same"))
  finally:
    pipeline.clear_caches()
  black = preprocess.normalize(np.zeros(3, np.uint8))
  image = batch["image"]
  assert image.shape == (3, 32, 32, 3)
  np.testing.assert_allclose(image[:, :2], np.broadcast_to(black, image[:, :2].shape), atol=1e-6)
  np.testing.assert_allclose(image[:, :, 32 - 3 :], np.broadcast_to(black, image[:, :, 32 - 3 :].shape), atol=1e-6)
  assert not np.allclose(image[:, 2:29, 2:29], black)
  assert not batch["mask"][:, :2].any() and not batch["mask"][:, :, 29:].any()
