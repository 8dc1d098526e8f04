"""The generated dataset: deterministic, in the published layouts, with visible defects and shifted domains."""

import shutil

import numpy as np
from scipy import ndimage

import data_fixtures as fx
from mmr_jax.data import check
from mmr_jax.data import layouts
from mmr_jax.data import decoding
from mmr_jax.data import synthetic


def _files(root):
  return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tiny_generation_is_deterministic_whatever_the_worker_count(tmp_path):
  synthetic.generate(tmp_path / "a", seed=3, size="tiny", workers=1)
  synthetic.generate(tmp_path / "b", seed=3, size="tiny", workers=2)
  synthetic.generate(tmp_path / "c", seed=4, size="tiny", workers=1)
  a, b, c = (_files(tmp_path / name) for name in "abc")
  assert a == b
  assert a.keys() != c.keys() or a != c
  assert not any(name.startswith(".") for name in a)  # No staging folder left behind.


def test_tiny_dataset_is_in_the_published_layouts(tmp_path):
  synthetic.generate(tmp_path, seed=0, size="tiny", workers=1)
  size = synthetic.SIZES["tiny"]
  config = fx.config_for("aebad_s", tmp_path, subsets=synthetic.DOMAINS)
  train = layouts.list_train(config)
  assert len(train.examples) == 2 * size.train_per_background and not train.skipped
  for domain in synthetic.DOMAINS:
    split = decoding.validate(layouts.list_test(config, domain), skip_bad_files=False, keep_pixels=True)
    types = layouts.count_by(split.examples, lambda e: e.defect_type)
    assert types == {"good": size.test_good, **{t: size.test_per_defect for t in synthetic.DEFECT_TYPES}}
    for example, (image, mask, _) in zip(split.examples, split.pixels):
      assert image.shape == size.image_hw + (3,)
      assert (mask is not None) == bool(example.label)
      if mask is not None:
        assert set(np.unique(mask)) == {0, 255}
  video = fx.config_for("aebad_v", tmp_path, subsets=synthetic.VIDEOS)
  assert len(layouts.list_train(video).examples) == 2 * size.train_frames
  labels = [e.label for v in synthetic.VIDEOS for e in layouts.list_test(video, v).examples]
  assert len(labels) == 3 * size.test_frames and 0 < sum(labels) < len(labels)
  lines = []
  assert check.run_check(config, emit=lines.append), "\n".join(lines)
  # The tiny videos hold one class each: a run could not compute their frame AUROC, and the check says so.
  lines = []
  assert not check.run_check(video, emit=lines.append)
  assert sum("so its image AUROC is undefined" in line for line in lines) == len(synthetic.VIDEOS), "\n".join(lines)


def test_ensure_synthetic_generates_once(tmp_path):
  assert synthetic.ensure_synthetic(tmp_path / "data", size="tiny", workers=1)
  before = _files(tmp_path / "data")
  assert not synthetic.ensure_synthetic(tmp_path / "data", size="tiny", workers=1)
  assert _files(tmp_path / "data") == before
  # Interrupted between the two moves: AeBAD_V is complete and kept, AeBAD_S is written again.
  shutil.rmtree(tmp_path / "data" / "AeBAD_S")
  assert synthetic.ensure_synthetic(tmp_path / "data", size="tiny", workers=1)
  assert _files(tmp_path / "data") == before


def test_defects_stand_out_from_the_blade_around_them():
  """Mean grey-level difference between a defect's pixels and a 4-px ring around it, at the default size."""
  for kind in ("ablation", "fracture", "groove"):
    contrasts = []
    for i in range(6):
      image, mask = synthetic.render_blade_image(np.random.default_rng([9, i]), "same", kind, (256, 288))
      ring = ndimage.binary_dilation(mask, iterations=4) & ~mask
      grey = image.astype(float).mean(axis=-1)
      contrasts.append(abs(grey[mask].mean() - grey[ring].mean()))
    assert np.median(contrasts) > 8, (kind, contrasts)
  # A breakdown removes blade: on a black background its pixels are dark, where the blade was bright.
  image, mask = synthetic.render_blade_image(np.random.default_rng(1), "same", "breakdown", (256, 288), "black")
  assert image[mask].mean() < 40 and np.percentile(image.mean(axis=-1), 99) > 100


def test_scene_choices_are_balanced_within_each_test_folder():
  """Black and gray backgrounds alternate with the index, for normal and defective images alike."""
  for kind in ("good", "groove"):
    corners = [
      synthetic.render_blade_image(np.random.default_rng([5, i]), "same", kind, (64, 72), variant=i)[0][:4, :4]
      for i in range(4)
    ]
    assert [bool(c.mean() > 60) for c in corners] == [False, True, False, True]


def test_test_domains_shift_away_from_training():
  def images(domain, n=8):
    return [
      synthetic.render_blade_image(np.random.default_rng([2, i]), domain, "good", (64, 72), variant=i)[0]
      for i in range(n)
    ]

  def blueness(batch):
    return np.mean([i[..., 2].mean() - i[..., 0].mean() for i in batch])

  def highlight_spread(batch):
    """How much the brightest blade pixels vary from image to image (exposure)."""
    return np.std([np.percentile(i.mean(axis=-1), 99) for i in batch])

  same = images("same")
  assert blueness(images("background")) > blueness(same) + 5
  assert highlight_spread(images("illumination")) > 1.5 * highlight_spread(same)
