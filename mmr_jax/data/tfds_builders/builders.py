"""TFDS builders for AeBAD-S, AeBAD-V and MVTec AD. All three are manual downloads: `manual_dir` holds the
extracted archives, read through the same layout readers as the folder route (mmr_jax/data/layouts.py).

Images are stored as the original file bytes (PNG/JPEG; other formats re-encoded as PNG) so that decoding
them later gives exactly the folder route's pixels. Every file is decoded while preparing: a bad one stops
the preparation with its path, unless the builder was made with skip_bad_files=True.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from mmr_jax.data import images
from mmr_jax.data import layouts
from mmr_jax.data import decoding

_CITATION = """@article{zhang2023industrial,
  title={Industrial Anomaly Detection with Domain Shift: A Real-world Dataset and Masked Multi-scale Reconstruction},
  author={Zhang, Zilong and Zhao, Zhibin and Zhang, Xingwu and Sun, Chuang and Chen, Xuefeng},
  journal={Computers in Industry},
  year={2023}
}"""
_MVTEC_CITATION = """@inproceedings{bergmann2019mvtec,
  title={MVTec AD -- A Comprehensive Real-World Dataset for Unsupervised Anomaly Detection},
  author={Bergmann, Paul and Fauser, Michael and Sattlegger, David and Steger, Carsten},
  booktitle={CVPR},
  year={2019}
}"""
_KEPT_FORMATS = (".png", ".jpg", ".jpeg")


def split_name(split: str, subset: str) -> str:
  """TFDS split of a (split, subset): "train", or "test_<subset>" (MVTec, one class per config: "test")."""
  return split if split == "train" or not subset else f"test_{subset}"


class _LayoutBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared by the three builders: features, validation, examples."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  WITH_MASKS = True

  def __init__(self, *, skip_bad_files: bool = False, **kwargs):
    self._skip_bad_files = skip_bad_files
    super().__init__(**kwargs)

  def _features(self) -> tfds.features.FeaturesDict:
    features = {
      "image": tfds.features.Image(shape=(None, None, 3)),
      "label": tfds.features.ClassLabel(names=["normal", "anomalous"]),
      "defect_type": tfds.features.Text(),
      "name": tfds.features.Text(),  # Path relative to the manual_dir: what the folder route reports.
    }
    if self.WITH_MASKS:
      features["mask"] = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    return tfds.features.FeaturesDict(features)

  def _generate_examples(self, files: layouts.FileList):
    split = decoding.validate(files, self._skip_bad_files, keep_pixels=False)
    for example, (height, width) in zip(split.examples, split.shapes):
      record = {
        "image": self._encoded(example.image_file, lambda e=example: images.decode_rgb(e.image_file)),
        "label": example.label,
        "defect_type": example.defect_type,
        "name": example.name,
      }
      if self.WITH_MASKS:
        if example.mask_file is None:
          record["mask"] = np.zeros((height, width, 1), np.uint8)
        else:
          record["mask"] = self._encoded(
            example.mask_file, lambda e=example: images.decode_mask(e.mask_file)[0][..., None]
          )
      yield example.name, record

  @staticmethod
  def _encoded(path: str, decode):
    """The file's own bytes when TF can decode its format, else the decoded array (stored as PNG)."""
    if os.path.splitext(path)[1].lower() in _KEPT_FORMATS:
      with open(path, "rb") as f:
        return f.read()
    return decode()


class AebadS(_LayoutBuilder):
  """AeBAD-S: aero-engine blades; one training set, four test domains with pixel masks."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download AeBAD from the link on the MMR GitHub page, https://github.com/zhangzilongc/MMR, and extract it "
    "into the manual_dir (config.data.root) so that manual_dir/AeBAD_S/{train,test,ground_truth} exist."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=self._features(), homepage="https://github.com/zhangzilongc/MMR", citation=_CITATION
    )

  def _split_generators(self, dl_manager):
    root = dl_manager.manual_dir
    test = root / "AeBAD_S" / "test"
    domains = (
      sorted({d.name for t in test.iterdir() if t.is_dir() for d in t.iterdir() if d.is_dir()}) if test.is_dir() else []
    )
    splits = {"train": self._generate_examples(layouts.aebad_s_train(root))}
    for domain in domains:
      splits[split_name("test", domain)] = self._generate_examples(layouts.aebad_s_test(root, domain))
    return splits


class AebadV(_LayoutBuilder):
  """AeBAD-V: videos of aero-engine blades; training frames, three test videos with frame labels (no masks)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download AeBAD from the link on the MMR GitHub page, https://github.com/zhangzilongc/MMR, and extract it "
    "into the manual_dir (config.data.root) so that manual_dir/AeBAD_V/{train,test} exist."
  )
  WITH_MASKS = False

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=self._features(), homepage="https://github.com/zhangzilongc/MMR", citation=_CITATION
    )

  def _split_generators(self, dl_manager):
    root = dl_manager.manual_dir
    test = root / "AeBAD_V" / "test"
    videos = sorted(v.name for v in test.iterdir() if v.is_dir()) if test.is_dir() else []
    splits = {"train": self._generate_examples(layouts.aebad_v_train(root))}
    for video in videos:
      splits[split_name("test", video)] = self._generate_examples(layouts.aebad_v_test(root, video))
    return splits


class MvtecAd(_LayoutBuilder):
  """MVTec AD: one config per class, each with its training set and its test set (pixel masks)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    "Download MVTec AD from https://www.mvtec.com/company/research/datasets/mvtec-ad (registration required) "
    "and extract it into the manual_dir (config.data.root) so that manual_dir/<class>/{train,test,ground_truth} "
    "exist for each class."
  )
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in layouts.MVTEC_CLASSES]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=self._features(),
      homepage="https://www.mvtec.com/company/research/datasets/mvtec-ad",
      citation=_MVTEC_CITATION,
    )

  def _split_generators(self, dl_manager):
    root, name = dl_manager.manual_dir, self.builder_config.name
    return {
      "train": self._generate_examples(layouts.mvtec_train(root, name)),
      "test": self._generate_examples(layouts.mvtec_test(root, name)),
    }
