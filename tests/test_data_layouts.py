"""Folder readers of every published layout, and the up-front decode check with its messages."""

import pytest

import data_fixtures as fx
from mmr_jax.data import layouts
from mmr_jax.data import decoding
from mmr_jax.data.layouts import DatasetError


def test_aebad_s_reader(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path))
  train = layouts.list_train(config)
  assert [e.name for e in train.examples] == [
    f"AeBAD_S/train/good/sub{1 if i % 2 else 2}/{i:03d}.png" for i in (1, 3, 5, 0, 2, 4)
  ]
  assert all(e.label == 0 and e.mask_file is None for e in train.examples)
  assert sorted(train.skipped) == [
    "AeBAD_S/train/good/sub1/.DS_Store",
    "AeBAD_S/train/good/sub1/._000.png",
    "AeBAD_S/train/good/sub1/notes.txt",
  ]
  view = layouts.list_test(config, "view")
  assert [(e.name, e.label, e.defect_type) for e in view.examples] == [
    ("AeBAD_S/test/good/view/000.png", 0, "good"),
    ("AeBAD_S/test/good/view/001.png", 0, "good"),
    ("AeBAD_S/test/groove/view/000.png", 1, "groove"),
    ("AeBAD_S/test/groove/view/001.png", 1, "groove"),
  ]
  # The mask has the image's own name, under ground_truth/<type>/<domain>/.
  assert view.examples[2].mask_file == str(tmp_path / "AeBAD_S/ground_truth/groove/view/000.png")
  assert len(view.skipped) == 3
  assert layouts.has_masks(config)


def test_aebad_s_unknown_domain_names_the_folder(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path))
  with pytest.raises(
    DatasetError,
    match=r"AeBAD_S/test/<type>/illumination: no test images .*types found: good, "
    r"groove.*github.com/zhangzilongc/MMR",
  ):
    layouts.list_test(config, "illumination")


def test_aebad_v_reader(tmp_path):
  config = fx.config_for("aebad_v", fx.make_aebad_v(tmp_path))
  assert len(layouts.list_train(config).examples) == 5
  video = layouts.list_test(config, "video2")
  assert [(e.name, e.label) for e in video.examples] == [
    ("AeBAD_V/test/video2/anomaly/002.jpg", 1),
    ("AeBAD_V/test/video2/anomaly/003.jpg", 1),
    ("AeBAD_V/test/video2/good/000.jpg", 0),
    ("AeBAD_V/test/video2/good/001.jpg", 0),
  ]
  assert not any(e.has_mask for e in video.examples)
  assert not layouts.has_masks(config)


def test_mvtec_reader_and_training_class(tmp_path):
  fx.make_mvtec(tmp_path, classes=("bottle", "screw"))
  config = fx.config_for("mvtec", tmp_path, subsets=("bottle", "screw"))
  test = layouts.list_test(config, "screw")
  broken = [e for e in test.examples if e.label]
  assert [e.mask_file for e in broken] == [
    str(tmp_path / f"screw/ground_truth/broken/00{i}_mask.png") for i in range(2)
  ]
  # Two classes: the class to train must be named.
  with pytest.raises(DatasetError, match="one model per class"):
    layouts.list_train(config)
  assert layouts.list_train(config, "screw").examples[0].name == "screw/train/good/000.png"
  single = fx.config_for("mvtec", tmp_path, subsets=("screw",))
  assert layouts.list_train(single).subset == "screw"


def test_folder_reader(tmp_path):
  root = fx.make_folder(tmp_path / "my_part")
  config = fx.config_for("folder", root)
  assert layouts.subset_names(config) == ("my_part",)
  test = layouts.list_test(config, "my_part")
  assert [(e.name, e.label) for e in test.examples] == [
    ("test/good/g0.png", 0),
    ("test/good/g1.png", 0),
    ("test/scratch/s0.png", 1),
    ("test/scratch/s1.png", 1),
  ]
  assert test.examples[3].mask_file == str(root / "ground_truth/scratch/s1_mask.png")
  with pytest.raises(DatasetError, match="one test subset, 'my_part'"):
    layouts.list_test(config, "same")


def test_missing_root_and_folders_say_what_to_do(tmp_path):
  with pytest.raises(DatasetError, match=r"nowhere: the data root .* does not exist.*github.com/zhangzilongc/MMR"):
    layouts.list_train(fx.config_for("aebad_s", tmp_path / "nowhere"))
  with pytest.raises(DatasetError, match=r"AeBAD_V/train/good: missing folder.*AeBAD_V/train/good/<sequence>"):
    layouts.list_train(fx.config_for("aebad_v", tmp_path))
  with pytest.raises(DatasetError, match=r"bottle/test: missing folder.*mvtec.com"):
    layouts.list_test(fx.config_for("mvtec", tmp_path), "bottle")
  unknown = fx.config_for("aebad_s", tmp_path)
  unknown.data.name = "imagenet"
  with pytest.raises(DatasetError, match="data.name must be one of"):
    layouts.list_train(unknown)


def test_empty_split_is_an_error(tmp_path):
  (tmp_path / "AeBAD_S" / "train" / "good").mkdir(parents=True)
  fx.write_junk(tmp_path / "AeBAD_S" / "train" / "good")
  files = layouts.list_train(fx.config_for("aebad_s", tmp_path))
  with pytest.raises(DatasetError, match=r"AeBAD_S/train/good: no images for the train split"):
    decoding.validate(files, skip_bad_files=False, keep_pixels=False)


def test_truncated_image_is_named_and_can_be_skipped(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path))
  bad = fx.truncate(tmp_path / "AeBAD_S/train/good/sub2/002.png")
  files = layouts.list_train(config)
  with pytest.raises(DatasetError) as error:
    decoding.validate(files, skip_bad_files=False, keep_pixels=True)
  message = str(error.value)
  assert f"{bad}: does not decode" in message and "skip_bad_files=True" in message
  assert "1 of 6 files" in message
  kept = decoding.validate(files, skip_bad_files=True, keep_pixels=True)
  assert len(kept) == 5 and "sub2/002.png" not in " ".join(e.name for e in kept.examples)
  assert kept.dropped and str(bad) in kept.dropped[0]
  assert kept.shapes.tolist() == [[fx.SIZE, fx.SIZE]] * 5


def test_missing_and_mismatched_masks_are_named(tmp_path):
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path))
  missing = tmp_path / "AeBAD_S/ground_truth/groove/same/001.png"
  missing.unlink()
  fx.write_mask(tmp_path / "AeBAD_S/ground_truth/groove/same/000.png", size=(30, 40))
  with pytest.raises(DatasetError) as error:
    decoding.validate(layouts.list_test(config, "same"), skip_bad_files=False, keep_pixels=False)
  message = str(error.value)
  assert f"{missing}: missing mask for the anomalous test image" in message
  assert "groove/same/000.png: mask is 40x30 but its image" in message
  # The other domain is intact.
  assert len(decoding.validate(layouts.list_test(config, "view"), False, False)) == 4
