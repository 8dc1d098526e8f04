"""TFDS builders (AeBAD-S, AeBAD-V, MVTec AD) and the route the pipelines take through them.

With config.data.use_tfds, a split is read from the prepared TFDS dataset (prepared on first use from the
manual download in config.data.root, into config.data.tfds_data_dir or DATA_ROOT/tensorflow_datasets) instead
of from the folders. The records keep the original file bytes, decoded with PIL as in the folder route, so
both routes give the same pixels. The prepared dataset reflects the files when it was prepared: delete its
folder to prepare it again after the files change.
"""

from __future__ import annotations

import os

import ml_collections

from mmr_jax import runtime

runtime.import_tensorflow()  # First, so that TF, which TFDS imports, stays off the GPU.
with runtime.native_stderr_silenced():
  import tensorflow_datasets as tfds

from mmr_jax.data import layouts
from mmr_jax.data.layouts import DatasetError
from mmr_jax.data.tfds_builders.builders import AebadS
from mmr_jax.data.tfds_builders.builders import AebadV
from mmr_jax.data.tfds_builders.builders import MvtecAd
from mmr_jax.data.tfds_builders.builders import split_name

BUILDERS = {"aebad_s": AebadS, "aebad_v": AebadV, "mvtec": MvtecAd}


def data_dir(config: ml_collections.ConfigDict) -> str:
  return config.data.tfds_data_dir or os.path.join(os.path.expanduser(config.data.root), "tensorflow_datasets")


def prepared_builder(config: ml_collections.ConfigDict, subset: str = "") -> tfds.core.DatasetBuilder:
  """The dataset's builder, prepared from config.data.root (the manual_dir) if it was not already."""
  name = config.data.name
  if name not in BUILDERS:
    raise DatasetError(
      f"config.data.use_tfds: there is no TFDS builder for the {name!r} layout; "
      f"read it from the folders with --config.data.use_tfds=False"
    )
  root = layouts.data_root(config)
  kwargs = dict(data_dir=data_dir(config), skip_bad_files=bool(config.data.skip_bad_files))
  if name == "mvtec":
    if subset not in layouts.MVTEC_CLASSES:
      raise DatasetError(
        f"the MVTec AD TFDS builder has one config per class ({', '.join(layouts.MVTEC_CLASSES)}); got {subset!r}"
      )
    kwargs["config"] = subset
  builder = BUILDERS[name](**kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  return builder


def file_list(config: ml_collections.ConfigDict, split: str, subset: str | None) -> layouts.FileList:
  """A split read from the prepared TFDS dataset, as a FileList whose examples carry the encoded bytes."""
  name = config.data.name
  subset = subset or ""
  builder = prepared_builder(config, subset if name == "mvtec" else "")
  tfds_split = split_name(split, "" if name == "mvtec" else subset)
  location = str(builder.data_path)
  if tfds_split not in builder.info.splits:
    raise DatasetError(
      f"{location}: the prepared {name} dataset has no split {tfds_split!r} (it has "
      f"{', '.join(sorted(builder.info.splits))}). If the files in {config.data.root} changed "
      f"since it was prepared, delete {location} to prepare it again."
    )
  features = builder.info.features
  decoders = {key: tfds.decode.SkipDecoding() for key in ("image", "mask") if key in features}
  dataset = builder.as_dataset(split=tfds_split, shuffle_files=False, decoders=decoders)
  examples = []
  for record in tfds.as_numpy(dataset):
    example_name = record["name"].decode()
    label = int(record["label"])
    with_mask = label == 1 and "mask" in record
    examples.append(
      layouts.Example(
        name=example_name,
        label=label,
        defect_type=record["defect_type"].decode(),
        image_file=f"{location}:{example_name}",
        mask_file=f"{location}:{example_name}:mask" if with_mask else None,
        image_bytes=bytes(record["image"]),
        mask_bytes=bytes(record["mask"]) if with_mask else None,
      )
    )
  examples.sort(key=lambda example: example.name)  # TFDS stores records in hashed order; the folders' order.
  return layouts.FileList(name, split, subset, examples, location)
