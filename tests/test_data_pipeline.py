"""tf.data pipelines: shapes, normalisation, determinism, host sharding, masks, padding, TFDS, PIL agreement."""

import importlib.util
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import data_fixtures as fx
from configs import aebad_s
from mmr_jax.data import benchmark
from mmr_jax.data import pipeline
from mmr_jax.data import preprocess
from mmr_jax.data import sources
from mmr_jax.data.layouts import DatasetError


@pytest.fixture(autouse=True)
def _fresh_caches():
  pipeline.clear_caches()
  yield
  pipeline.clear_caches()


def _tool(name: str):
  """A script of tools/ (not a package) as a module."""
  spec = importlib.util.spec_from_file_location(name, fx.REPO / "tools" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _epoch(config, epoch, seed=0, **kwargs):
  """The epoch's real training images in order (without the rows that pad its last batch)."""
  batches = list(pipeline.train_batches(config, epoch, seed, **kwargs))
  return np.concatenate([b["image"][b["weight"] > 0] for b in batches])


def test_train_batches_shapes_dtype_and_normalisation(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path, train=7))
  batches = list(pipeline.train_batches(config, epoch=0, seed=0))
  assert len(batches) == pipeline.steps_per_epoch(config) == 4  # 7 images, batch 2: the last one padded.
  for batch in batches:
    assert set(batch) == {"image", "weight"}
    assert batch["image"].shape == (2, 32, 32, 3) and batch["image"].dtype == np.float32
    # Values are normalised uint8 levels: de-normalising and normalising again is the identity.
    real = batch["image"][batch["weight"] > 0]
    np.testing.assert_allclose(preprocess.normalize(preprocess.denormalize(real)), real, atol=1e-5)
  assert batches[-1]["weight"].tolist() == [1, 0]


def test_normalisation_constants(tmp_path):
  root = tmp_path / "part"
  for i in range(2):
    (root / "train" / "good").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (50, 30), (255, 0, 128)).save(root / "train" / "good" / f"{i}.png")
  image = next(pipeline.train_batches(fx.config_for("folder", root), 0, 0))["image"]
  expected = (np.array([255, 0, 128]) / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(image, np.broadcast_to(expected, image.shape), atol=1e-5)
  assert (preprocess.denormalize(image) == np.array([255, 0, 128], np.uint8)).all()


def test_same_seed_and_epoch_give_the_same_batches_and_epochs_differ(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path, train=8))
  first = _epoch(config, 3, seed=7)
  pipeline.clear_caches()  # As after a restart: nothing remembered.
  np.testing.assert_array_equal(_epoch(config, 3, seed=7), first)
  assert not np.array_equal(_epoch(config, 4, seed=7), first)
  assert not np.array_equal(_epoch(config, 3, seed=8), first)


def test_hosts_read_disjoint_parts_of_each_global_batch(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path, train=8))
  config.batch_size = 4
  whole = list(pipeline.train_batches(config, 2, 0))
  parts = [list(pipeline.train_batches(config, 2, 0, process_index=h, process_count=2)) for h in range(2)]
  assert len(whole) == len(parts[0]) == len(parts[1]) == 2
  for step, batch in enumerate(whole):
    assert parts[0][step]["image"].shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(np.concatenate([parts[0][step]["image"], parts[1][step]["image"]]), batch["image"])
  with pytest.raises(ValueError, match="divisible"):
    pipeline.train_batches(config, 0, 0, process_index=0, process_count=3)


def _torchvision_box(height, width, draws, scale, ratio):
  """RandomResizedCrop.get_params written out as torchvision does, one attempt at a time."""
  area = height * width
  for attempt in draws:
    target_area = area * (scale[0] + (scale[1] - scale[0]) * attempt[0])
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * attempt[1])
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(attempt[2] * (height - h + 1)), int(attempt[3] * (width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("scale", [(0.7, 1.0), (0.08, 1.0)])
def test_crop_boxes_follow_torchvision(scale):
  ratio = (3 / 4, 4 / 3)
  # Ordinary images, and extreme aspect ratios where no attempt fits and the centre crop is taken.
  shapes = np.array([[256, 288], [1000, 800], [40, 40], [20, 400], [400, 20], [1, 1]] * 20)
  boxes = pipeline.crop_boxes(shapes, np.random.default_rng(5), scale, ratio)
  draws = np.random.default_rng(5).random((len(shapes), 10, 4))
  expected = [_torchvision_box(h, w, d, scale, ratio) for (h, w), d in zip(shapes, draws)]
  np.testing.assert_array_equal(boxes, np.array(expected))
  assert (boxes[:, 0] + boxes[:, 2] <= shapes[:, 0]).all() and (boxes[:, 1] + boxes[:, 3] <= shapes[:, 1]).all()


def test_buffer_shuffle_is_a_deterministic_permutation():
  order = pipeline.epoch_order(50, seed=1, epoch=2, shuffle_buffer=8)
  assert sorted(order) == list(range(50))
  np.testing.assert_array_equal(order, pipeline.epoch_order(50, seed=1, epoch=2, shuffle_buffer=8))
  assert not np.array_equal(order, pipeline.epoch_order(50, seed=1, epoch=3, shuffle_buffer=8))
  # A buffer of 8 cannot move an element earlier than 8 places before its position.
  assert all(position >= index - 7 for position, index in enumerate(order))


def test_eval_batches_are_padded_with_labels_masks_and_names(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path))
  batches = list(pipeline.eval_batches(config, "same"))
  assert len(batches) == 2
  for batch in batches:
    assert batch["image"].shape == (3, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["mask"].shape == (3, 32, 32) and batch["mask"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["valid"].dtype == bool
    assert set(np.unique(batch["mask"])) <= {0, 1}
  assert batches[0]["label"].tolist() == [0, 0, 1] and batches[1]["label"].tolist() == [1, 0, 0]
  assert batches[1]["valid"].tolist() == [True, False, False]
  assert list(batches[1]["name"]) == ["AeBAD_S/test/groove/same/001.png", "", ""]
  assert batches[0]["mask"][:2].sum() == 0 and batches[0]["mask"][2].sum() > 0


def test_eval_images_and_masks_are_the_torchvision_pil_path(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path))
  batch = next(pipeline.eval_batches(config, "view"))
  for row in range(3):
    source = np.asarray(Image.open(tmp_path / batch["name"][row]).convert("RGB"))
    expected = np.asarray(Image.fromarray(source).resize((36, 36), Image.Resampling.BILINEAR))[2:34, 2:34]
    np.testing.assert_array_equal(preprocess.denormalize(batch["image"][row]), expected)
  mask = np.asarray(Image.open(tmp_path / "AeBAD_S/ground_truth/groove/view/000.png"))
  resized = np.asarray(Image.fromarray(mask).resize((36, 36), Image.Resampling.BILINEAR))[2:34, 2:34] / 1.0
  np.testing.assert_array_equal(batch["mask"][2], (resized / resized.max()).astype(int))  # The published cast.


def test_resize_agrees_with_pil_on_large_photo_like_images():
  """The figures of `python tools/compare_pil.py`, on a 1000-px blade and a 1/f-noise photo."""
  compare_pil = _tool("compare_pil")
  images = compare_pil.sample_images(count=2)["photo-like 1000x1100"]
  for size, bicubic in ((256, False), (224, True)):
    figures = compare_pil.measure(images, size, bicubic)
    assert figures["pipeline"][:2] == (0.0, 0.0)  # PIL itself.
    assert figures["tf antialias"][0] < 0.3 and figures["tf two-pass"][1] <= 1
    assert figures["tf"][0] > 3  # Without antialiasing TF is far off: why the pipeline does not use it.


def test_mask_binarisation_modes():
  mask = np.array([[0, 100, 127, 128], [200, 254, 255, 255]], np.uint8)
  np.testing.assert_array_equal(preprocess.binarize_mask(mask, strict=False), [[0, 0, 0, 0], [0, 0, 1, 1]])
  np.testing.assert_array_equal(preprocess.binarize_mask(mask, strict=True), [[0, 0, 0, 1], [1, 1, 1, 1]])
  np.testing.assert_array_equal(preprocess.binarize_mask(mask // 2, strict=False), [[0, 0, 0, 0], [0, 1, 1, 1]])
  assert preprocess.binarize_mask(np.zeros((2, 2), np.uint8), strict=True).sum() == 0


def test_thin_masks_shrink_by_default_and_masks_outside_the_crop_count_normal(tmp_path):
  root = fx.make_aebad_s(tmp_path)
  fx.write_mask(root / "AeBAD_S/ground_truth/groove/same/000.png", box=(10, 19, 30, 21))  # A 2-px line.
  fx.write_mask(root / "AeBAD_S/ground_truth/groove/same/001.png", box=(0, 0, 2, 40))  # Cropped away.
  published = next(pipeline.eval_batches(fx.config_for("aebad_s", root), "same"))
  strict = next(pipeline.eval_batches(fx.config_for("aebad_s", root, strict_mask_binarization=True), "same"))
  thin = slice(2, 3)
  assert 0 < published["mask"][thin].sum() < strict["mask"][thin].sum()
  assert published["label"].tolist() == strict["label"].tolist() == [0, 0, 1]
  last = list(pipeline.eval_batches(fx.config_for("aebad_s", root), "same"))[1]
  assert last["label"][0] == 0 and last["mask"][0].sum() == 0 and last["valid"][0]


def test_uncached_pipelines_give_the_cached_results(tmp_path):
  root = fx.make_aebad_s(tmp_path)
  cached, uncached = fx.config_for("aebad_s", root), fx.config_for("aebad_s", root, cache=False)
  np.testing.assert_array_equal(_epoch(cached, 1), _epoch(uncached, 1))
  for a, b in zip(pipeline.eval_batches(cached, "view"), pipeline.eval_batches(uncached, "view"), strict=True):
    for key in ("image", "mask", "label", "valid"):
      np.testing.assert_array_equal(a[key], b[key])


def test_bad_training_file_stops_before_the_first_batch(tmp_path):
  root = fx.make_aebad_s(tmp_path)
  bad = fx.truncate(root / "AeBAD_S/train/good/sub1/003.png")
  with pytest.raises(DatasetError, match=f"{bad}: does not decode"):
    pipeline.train_batches(fx.config_for("aebad_s", root), 0, 0)
  assert len(_epoch(fx.config_for("aebad_s", root, skip_bad_files=True), 0)) == 5  # 5 usable, all trained.


def test_too_few_training_images_for_a_batch(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path, train=1))
  assert pipeline.steps_per_epoch(config) == 1  # One image and one padding row.
  config.data.drop_last = True
  with pytest.raises(DatasetError, match="fewer than one batch"):
    pipeline.steps_per_epoch(config)


def test_the_last_partial_batch_is_trained_with_padding_of_weight_zero(tmp_path):
  """As the published DataLoader (drop_last=False): every image once per epoch, the last batch smaller. Here it
  keeps the compiled shape, its missing rows zero images of weight 0; data.drop_last restores dropping."""
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path, train=7))
  config.batch_size = 4
  batches = list(pipeline.train_batches(config, epoch=1, seed=5))
  assert [b["weight"].tolist() for b in batches] == [[1, 1, 1, 1], [1, 1, 1, 0]]
  assert not batches[-1]["image"][3].any()
  plan = pipeline.epoch_plan(sources.train_set(config).shapes, 5, 1, config.data)
  assert sorted(plan["index"].tolist()) == list(range(7))  # Each image once; the 7th is in the last batch.
  hosts = [list(pipeline.train_batches(config, 1, 5, process_index=h, process_count=2)) for h in range(2)]
  assert [b["weight"].tolist() for b in hosts[1]] == [[1, 1], [1, 0]]
  config.data.drop_last = True
  assert pipeline.steps_per_epoch(config) == 1 and len(_epoch(config, 1, seed=5)) == 4


def test_mvtec_trains_on_the_named_class(tmp_path):
  fx.make_mvtec(tmp_path, classes=("bottle", "screw"))
  config = fx.config_for("mvtec", tmp_path, subsets=("bottle", "screw"))
  with pytest.raises(DatasetError, match="one model per class"):
    pipeline.steps_per_epoch(config)
  assert pipeline.steps_per_epoch(config, subset="screw") == 3
  assert _epoch(config, 0, subset="screw").shape == (5, 32, 32, 3)
  # Types in name order: broken, good.
  assert [b["label"].tolist() for b in pipeline.eval_batches(config, "screw")] == [[1, 1, 0], [0, 0, 0]]


def test_aebad_v_frames_are_labelled_by_folder(tmp_path):
  config = fx.config_for("aebad_v", fx.make_aebad_v(tmp_path))
  batches = list(pipeline.eval_batches(config, "video1"))
  assert [b["label"].tolist() for b in batches] == [[1, 1, 0], [0, 0, 0]]
  assert all(b["mask"].sum() == 0 for b in batches) and not pipeline.has_masks(config)
  assert _epoch(config, 0).shape == (5, 32, 32, 3)


def test_tfds_route_gives_the_folder_route_batches(tmp_path):
  root = fx.make_aebad_s(tmp_path)
  folders, tfds_route = fx.config_for("aebad_s", root), fx.config_for("aebad_s", root, use_tfds=True)
  np.testing.assert_array_equal(_epoch(folders, 0), _epoch(tfds_route, 0))
  for a, b in zip(pipeline.eval_batches(folders, "same"), pipeline.eval_batches(tfds_route, "same"), strict=True):
    for key in ("image", "mask", "label", "name"):
      np.testing.assert_array_equal(a[key], b[key])
  assert (root / "tensorflow_datasets" / "aebad_s" / "1.0.0" / "dataset_info.json").is_file()
  from mmr_jax.data import tfds_builders

  assert "github.com/zhangzilongc/MMR" in tfds_builders.AebadS.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert "mvtec.com" in tfds_builders.MvtecAd.MANUAL_DOWNLOAD_INSTRUCTIONS
  with pytest.raises(DatasetError, match="no TFDS builder for the 'folder' layout"):
    pipeline.steps_per_epoch(fx.config_for("folder", fx.make_folder(tmp_path / "part"), use_tfds=True))


def test_the_data_modules_without_pipelines_do_not_import_tensorflow():
  code = (
    "import sys\nimport mmr_jax.data, mmr_jax.data.layouts, mmr_jax.data.decoding, mmr_jax.data.sources, "
    "mmr_jax.data.images, mmr_jax.data.preprocess, mmr_jax.data.synthetic\n"
    "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
  )
  subprocess.run([sys.executable, "-c", code], check=True, cwd=fx.REPO)


def test_min_epoch_images_repeats_a_small_set_with_fresh_augmentation(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path, train=5))
  one_pass = _epoch(config, 2, seed=3)
  assert len(one_pass) == 5  # 5 images, batch 2, one pass (the published epoch).
  config.data.min_epoch_images = 12
  assert pipeline.passes_per_epoch(5, 12) == 3 and pipeline.steps_per_epoch(config) == 8  # 15 crops, batch 2.
  repeated = _epoch(config, 2, seed=3)
  assert len(repeated) == 15
  # The first pass is the published epoch; later passes reuse the images with other orders and crops.
  np.testing.assert_array_equal(repeated[:5], one_pass)
  order = pipeline.epoch_order(5, seed=3, epoch=2, passes=3)
  assert sorted(order.tolist()) == sorted(list(range(5)) * 3)
  assert not np.array_equal(order[:5], order[5:10])
  # A set already larger than min_epoch_images is passed over once.
  assert pipeline.passes_per_epoch(400, 320) == 1


def test_max_image_side_shrinks_large_images_and_their_masks_once(tmp_path):
  root = fx.make_folder(tmp_path / "part")
  Image.new("RGB", (300, 120), (10, 200, 30)).save(root / "test" / "scratch" / "s0.png")
  mask = np.zeros((120, 300), np.uint8)
  mask[30:60, 100:160] = 255
  Image.fromarray(mask).save(root / "ground_truth" / "scratch" / "s0_mask.png")
  config = fx.config_for("folder", root, max_image_side=100)
  split = pipeline.sources.test_set(config, root.name, keep_pixels=True)
  index = [e.name for e in split.examples].index("test/scratch/s0.png")
  image, shrunk_mask, _ = split.load(index)
  assert image.shape == (40, 100, 3) and shrunk_mask.shape == (40, 100)
  assert set(np.unique(shrunk_mask)) == {0, 255}  # Nearest neighbour: still binary.
  assert shrunk_mask[10:20, 34:53].all() and not shrunk_mask[:9].any()
  # Images already within the limit are left as decoded.
  small = pipeline.sources.train_set(config)
  assert all(max(shape) <= 100 for shape in small.shapes)


def test_folder_without_ground_truth_has_image_labels_only(tmp_path):
  root = fx.make_folder(tmp_path / "part")
  shutil.rmtree(root / "ground_truth")
  config = fx.config_for("folder", root)
  assert not pipeline.has_masks(config)
  batches = list(pipeline.eval_batches(config, root.name))
  labels = np.concatenate([b["label"][b["valid"]] for b in batches])
  assert sorted(labels.tolist()) == [0, 0, 1, 1]  # By folder: no mask can empty a label.


def test_the_transform_benchmark_measures_the_shrunk_route_and_its_difference(capsys):
  rows = benchmark.transform_rates(aebad_s.get_config(), [0.3], count=2, max_side=256)
  row = rows[0]
  assert row["shape"] == (474, 632)
  assert all(row[key] > 0 for key in ("train", "train_decode", "eval", "eval_decode", "shrink", "train_shrunk"))
  # The shrunk route is a close, not an exact, copy of the published transform: a few grey levels on average.
  assert 0 < row["train_diff_mean"] < 4 and 0 < row["eval_diff_mean"] < 4
  assert "grey-level diff" in capsys.readouterr().out
