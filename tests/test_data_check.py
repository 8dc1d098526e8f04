"""`python -m mmr_jax check_data`: counts, problems named with their paths, exit codes."""

import subprocess
import sys

import numpy as np
from PIL import Image

import data_fixtures as fx
from mmr_jax.data import check
from mmr_jax.data import images


def _run(config):
  lines = []
  usable = check.run_check(config, emit=lines.append)
  return usable, "\n".join(lines)


def test_a_good_tree_is_usable_and_counted(tmp_path):
  usable, report = _run(fx.config_for("aebad_s", fx.make_aebad_s(tmp_path)))
  assert usable, report
  assert "train                         6 images (normal 6, anomalous 0)" in report
  assert "test same                     4 images (normal 2, anomalous 2): groove 2" in report
  assert "skipped 3 non-image files" in report and "._000.png" in report
  assert report.endswith("USABLE: no problems found")


def test_aebad_v_and_mvtec_and_folder_trees(tmp_path):
  usable, report = _run(fx.config_for("aebad_v", fx.make_aebad_v(tmp_path / "v")))
  assert usable and "test video2                   4 images (normal 2, anomalous 2): anomaly 2" in report
  usable, report = _run(fx.config_for("mvtec", fx.make_mvtec(tmp_path / "m")))
  assert usable and "train bottle" in report and "test bottle" in report
  usable, report = _run(fx.config_for("folder", fx.make_folder(tmp_path / "f" / "part")))
  assert usable and "test part" in report


def test_bad_files_are_named_and_make_it_unusable(tmp_path):
  root = fx.make_aebad_s(tmp_path)
  bad = fx.truncate(root / "AeBAD_S/test/good/view/001.png")
  missing = root / "AeBAD_S/ground_truth/groove/same/000.png"
  missing.unlink()
  usable, report = _run(fx.config_for("aebad_s", root))
  assert not usable
  assert f"PROBLEM: {bad}: does not decode" in report
  assert f"PROBLEM: {missing}: missing mask for the anomalous test image" in report
  assert "NOT USABLE: 2 problems" in report and "skip_bad_files=True" in report
  usable, report = _run(fx.config_for("aebad_s", root, skip_bad_files=True))
  assert usable and "USABLE with --config.data.skip_bad_files=True: 2 problems" in report


def test_missing_dataset_and_too_small_training_set(tmp_path):
  usable, report = _run(fx.config_for("aebad_s", tmp_path / "absent"))
  assert not usable and "absent: the data root (config.data.root) does not exist" in report
  assert "github.com/zhangzilongc/MMR" in report
  usable, report = _run(fx.config_for("aebad_s", tmp_path))  # The root exists; AeBAD_S does not.
  assert not usable and f"{tmp_path}/AeBAD_S/train/good: missing folder" in report
  config = fx.config_for("aebad_s", fx.make_aebad_s(tmp_path / "small", train=1))
  usable, report = _run(config)
  assert usable, report  # One image and a padding row: the published DataLoader trains such a batch too.
  config.data.drop_last = True
  usable, report = _run(config)
  assert not usable and "fewer than one batch" in report
  assert "NOT USABLE: 1 problems above" in report  # The count includes it.


def test_16_bit_images_are_scaled_to_8_bits_and_reported(tmp_path):
  """PIL's convert("RGB") (the published loader) clips a 16-bit grey PNG at 255: almost white. mmr_jax scales
  it (value / 257) and the check says so."""
  root = fx.make_aebad_s(tmp_path)
  path = root / "AeBAD_S/train/good/sub1/001.png"
  ramp = (np.arange(32 * 40).reshape(32, 40) * 50).astype(np.uint16)  # 0 … 63950.
  Image.fromarray(ramp).save(path)
  assert Image.open(path).mode == "I;16"
  decoded = images.decode_rgb(str(path))
  assert decoded.shape == (32, 40, 3) and decoded.dtype == np.uint8
  np.testing.assert_array_equal(decoded[..., 1], np.round(ramp / 257).astype(np.uint8))
  assert (np.asarray(Image.open(path).convert("RGB")) == 255).mean() > 0.99  # What PIL alone gives.
  usable, report = _run(fx.config_for("aebad_s", root))
  assert usable
  assert "note: 1 images have more than 8 bits per pixel (e.g. AeBAD_S/train/good/sub1/001.png)" in report


def test_command_line_exit_codes(tmp_path):
  root = fx.make_aebad_s(tmp_path)
  command = [
    sys.executable,
    "-m",
    "mmr_jax",
    "check_data",
    "--config=configs/aebad_s.py",
    f"--config.data.root={root}",
    "--config.data.subsets=('same','view')",
    "--config.batch_size=2",
  ]
  good = subprocess.run(command, cwd=fx.REPO, capture_output=True, text=True)
  assert good.returncode == 0, good.stdout + good.stderr
  assert "USABLE: no problems found" in good.stdout
  fx.truncate(root / "AeBAD_S/train/good/sub2/000.png")
  bad = subprocess.run(command, cwd=fx.REPO, capture_output=True, text=True)
  assert bad.returncode == 1 and "sub2/000.png: does not decode" in bad.stdout
  assert "Traceback" not in bad.stdout + bad.stderr


def test_a_clean_tree_matches_the_published_globs(tmp_path):
  usable, report = _run(fx.config_for("aebad_s", fx.make_aebad_s(tmp_path)))
  assert usable and "not comparable" not in report
  # The `._*` forks and other junk beside the images are not matched by the published `*.png` glob either.
  assert "  the files match the published code's (AeBAD_S/train/good/<subfolder>/*.png)" in report
  assert "  the files match the published code's (AeBAD_S/test/<type>/view/*.png)" in report
  usable, report = _run(fx.config_for("aebad_v", fx.make_aebad_v(tmp_path / "v")))
  assert usable and report.count("the files match the published code's") == 3


def test_files_the_published_globs_do_not_read_are_named(tmp_path):
  root = fx.make_aebad_s(tmp_path)
  nested = fx.write_image(root / "AeBAD_S/train/good/sub1/deeper/100.png", seed=1)
  jpeg = fx.write_image(root / "AeBAD_S/train/good/sub2/101.jpg", seed=2)
  loose = fx.write_image(root / "AeBAD_S/train/good/102.png", seed=3)
  upper = fx.write_image(root / "AeBAD_S/test/good/same/103.PNG", seed=4)  # Its glob is case-sensitive.
  usable, report = _run(fx.config_for("aebad_s", root))
  assert usable, report  # Informational: the run can use them.
  assert "train                         9 images" in report
  assert (
    f"note: 1 files are in nested folders the published code does not read (e.g. {nested.relative_to(root)})"
  ) in report
  assert (
    "note: 1 files have extensions other than .png that the published code does not read "
    f"(e.g. {jpeg.relative_to(root)})"
  ) in report
  assert f"note: 1 files are outside the folders the published code reads (e.g. {loose.relative_to(root)})" in report
  assert f"(e.g. {upper.relative_to(root)})" in report
  assert report.count("not comparable file for file with the paper's") == 2  # train and test same.
  assert "the files match the published code's (AeBAD_S/test/<type>/view/*.png)" in report
  assert report.endswith("USABLE: no problems found")


def test_files_only_the_published_code_reads_are_named(tmp_path):
  root = fx.make_aebad_s(tmp_path)
  hidden = fx.write_image(root / "AeBAD_S/train/good/.cache/100.png", seed=1)  # os.listdir finds the folder.
  usable, report = _run(fx.config_for("aebad_s", root))
  assert usable
  assert (
    f"note: 1 files in hidden folders are read by the published code but not here (e.g. {hidden.relative_to(root)})"
  ) in report
  assert "not comparable" in report
  # MVTec's reader lists every file: the `._*` forks and the rest beside the images too, which are no images.
  usable, report = _run(fx.config_for("mvtec", fx.make_mvtec(tmp_path / "m")))
  assert usable and "not comparable" not in report
  assert (
    "note: 2 files are hidden and not images, macOS `._*` resource forks among them: skipped here, but the "
    "published code lists them too and its loader would fail on them "
    "(e.g. bottle/train/good/._000.png)"
  ) in report
  assert "note: 1 files have no image extension" in report and "bottle/train/good/notes.txt" in report
  assert "the images match the published code's (bottle/train/<type>/*)" in report
  assert "the files match the published code's (bottle/test/<type>/*)" in report


def test_images_that_cannot_be_what_the_user_meant_are_named(tmp_path):
  """An EXIF-turned photo (decoded as a viewer shows it), transparent pixels (dropped), an image smaller than one
  patch: each decodes, and the check names it."""
  root = fx.make_aebad_s(tmp_path)
  train = root / "AeBAD_S/train/good"
  exif = Image.Exif()
  exif[images.EXIF_ORIENTATION] = 8
  Image.open(train / "sub1/001.png").convert("RGB").save(train / "sub1/turned.jpg", exif=exif)
  rgba = np.zeros((32, 32, 4), np.uint8)
  rgba[..., 3] = 255
  rgba[:8, :8, 3] = 0  # A transparent corner.
  Image.fromarray(rgba).save(train / "sub2/cutout.png")
  Image.fromarray(np.full((10, 12, 3), 128, np.uint8)).save(train / "sub2/thumbnail.png")
  usable, report = _run(fx.config_for("aebad_s", root))
  assert usable, report
  assert "note: 1 files carry an EXIF orientation (e.g. AeBAD_S/train/good/sub1/turned.jpg (orientation 8))" in report
  assert "note: 1 images have transparent pixels (e.g. AeBAD_S/train/good/sub2/cutout.png)" in report
  assert (
    "note: 1 images are smaller than one 16-pixel patch (e.g. AeBAD_S/train/good/sub2/thumbnail.png (12x10))" in report
  )
