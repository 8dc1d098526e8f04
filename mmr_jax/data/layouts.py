"""Readers for the published folder layouts (docs/spec.md §7): which files form which split, with labels.

A reader only lists files; decoding (and so the check that every file is readable) happens in `sources.py`.
Every layout yields `FileList`s of `Example`s whose `name` is the path relative to `config.data.root`; that
name is what reports and evaluation batches show.

    aebad_s  ROOT/AeBAD_S/train/good/<any subfolder>/*.png
             ROOT/AeBAD_S/test/<type>/<domain>/*.png, masks ROOT/AeBAD_S/ground_truth/<type>/<domain>/<same name>
    aebad_v  ROOT/AeBAD_V/train/good/*/*.jpg
             ROOT/AeBAD_V/test/<video>/<folder>/*.jpg, label = folder != good, no masks
    mvtec    ROOT/<class>/train/good/*, ROOT/<class>/test/<type>/*,
             masks ROOT/<class>/ground_truth/<type>/<stem>_mask.png
    folder   ROOT/train/good/*, ROOT/test/<type>/*, masks ROOT/ground_truth/<type>/<stem>_mask.png (optional:
             without ground_truth/, image-level metrics only); one test subset, named after ROOT's folder

These readers are more tolerant than the published ones: training folders are searched recursively and every
extension of IMAGE_EXTENSIONS is read. `published_files` lists what the published code would read instead, so
that `python -m mmr_jax check_data` can say whether a tree gives the paper's file sets.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pathlib
from collections.abc import Sequence

import ml_collections

from mmr_jax import errors

DATASET_NAMES = ("aebad_s", "aebad_v", "mvtec", "folder")
MVTEC_CLASSES = (
  "bottle",
  "cable",
  "capsule",
  "carpet",
  "grid",
  "hazelnut",
  "leather",
  "metal_nut",
  "pill",
  "screw",
  "tile",
  "toothbrush",
  "transistor",
  "wood",
  "zipper",
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"

# Where each dataset comes from and what it must look like; every error message about a layout ends with it.
LAYOUT_HELP = {
  "aebad_s": (
    "AeBAD-S is a manual download linked from the MMR GitHub page (github.com/zhangzilongc/MMR). Extract it "
    "so that DATA_ROOT/AeBAD_S/train/good/<subfolder>/*.png, DATA_ROOT/AeBAD_S/test/<type>/<domain>/*.png and "
    "DATA_ROOT/AeBAD_S/ground_truth/<type>/<domain>/*.png exist, and pass --config.data.root=DATA_ROOT "
    "(see data/README.md). For the generated stand-in, use configs/synthetic.py."
  ),
  "aebad_v": (
    "AeBAD-V is a manual download linked from the MMR GitHub page (github.com/zhangzilongc/MMR). Extract it "
    "so that DATA_ROOT/AeBAD_V/train/good/<sequence>/*.jpg and DATA_ROOT/AeBAD_V/test/<video>/<good|...>/*.jpg "
    "exist, and pass --config.data.root=DATA_ROOT (see data/README.md). `python -m mmr_jax synthetic "
    "--out DIR` writes a generated stand-in under DIR/AeBAD_V."
  ),
  "mvtec": (
    "MVTec AD is a manual download from www.mvtec.com/company/research/datasets/mvtec-ad. Extract it so that "
    "DATA_ROOT/<class>/train/good/*.png, DATA_ROOT/<class>/test/<type>/*.png and "
    "DATA_ROOT/<class>/ground_truth/<type>/<name>_mask.png exist, and pass --config.data.root=DATA_ROOT "
    "(see data/README.md)."
  ),
  "folder": (
    "The folder layout for your own product: DATA_ROOT/train/good/* (normal images only), "
    "DATA_ROOT/test/good/* and DATA_ROOT/test/<defect type>/*, and optionally masks "
    "DATA_ROOT/ground_truth/<defect type>/<image name without extension>_mask.png "
    "(see data/README.md)."
  ),
}


class DatasetError(errors.UserError):
  """The dataset on disk cannot serve the run: the message names the path and says what to do.

  `message` says what is wrong (with the path); `advice` where the dataset comes from and the layout expected.
  """

  exit_code = 3

  def __init__(self, message: str, advice: str = ""):
    super().__init__(f"{message} {advice}".strip())
    self.message = message
    self.advice = advice


@dataclasses.dataclass(frozen=True)
class Example:
  """One image of a split. The pixels come from `image_bytes` when set (TFDS), else from `image_file`."""

  name: str  # Relative to config.data.root, '/'-separated; what reports and eval batches show.
  label: int  # 0 normal, 1 anomalous (by folder; an empty mask after cropping makes it normal later).
  defect_type: str  # The <type> folder; "good" for normal images.
  image_file: str
  mask_file: str | None = None  # None: normal image, or a dataset without masks.
  image_bytes: bytes | None = None
  mask_bytes: bytes | None = None

  @property
  def has_mask(self) -> bool:
    return self.mask_file is not None or self.mask_bytes is not None


@dataclasses.dataclass
class FileList:
  """The files of one split, plus the non-image files found beside them (skipped, relative names)."""

  dataset: str
  split: str  # "train" or "test"
  subset: str  # Test subset (domain, video, class); for train, the class (mvtec) or "".
  examples: list[Example]
  location: str = ""  # The folder (pattern) read, for messages.
  skipped: list[str] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    # Names that are not valid UTF-8 (bytes a file system allows) cannot go into results, CSVs or the report:
    # named here, when the files are listed, before any work.
    bad = [name for name in [e.name for e in self.examples] + self.skipped if not encodes(name)]
    if bad:
      raise DatasetError(
        f"{self.location}: {len(bad)} file names are not valid UTF-8 (e.g. {ascii(bad[0])}); rename them (for "
        f"example with convmv -f latin1 -t utf-8 -r --notest DIR)"
      )

  @property
  def title(self) -> str:
    return f"{self.split} {self.subset}".strip()


def encodes(name: str) -> bool:
  try:
    name.encode("utf-8")
    return True
  except UnicodeEncodeError:
    return False


def _is_image_name(name: str) -> bool:
  # `._x.png` (macOS resource forks), `.DS_Store` and other hidden files are never images.
  return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _relative(path: pathlib.Path, root: pathlib.Path) -> str:
  return path.relative_to(root).as_posix()


def _require_folder(folder: pathlib.Path, dataset: str, what: str) -> None:
  if not folder.is_dir():
    raise DatasetError(f"{folder}: missing folder ({what}).", LAYOUT_HELP[dataset])


def _scan(folder: pathlib.Path, root: pathlib.Path, recursive: bool) -> tuple[list[pathlib.Path], list[str]]:
  """Image files under `folder` (sorted) and the relative names of the other files found there."""
  images, skipped = [], []
  candidates = folder.rglob("*") if recursive else folder.iterdir()
  for path in sorted(candidates):
    if any(part.startswith(".") for part in path.relative_to(folder).parts[:-1]) or path.is_dir():
      continue
    if _is_image_name(path.name):
      images.append(path)
    else:
      skipped.append(_relative(path, root))
  return images, skipped


def _subfolders(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def _train_good(dataset: str, good: pathlib.Path, root: pathlib.Path, subset: str, recursive: bool) -> FileList:
  _require_folder(good, dataset, "the normal training images")
  images, skipped = _scan(good, root, recursive)
  examples = [Example(_relative(p, root), 0, GOOD, str(p)) for p in images]
  return FileList(dataset, "train", subset, examples, str(good), skipped)


def _test_types(
  dataset: str, test: pathlib.Path, root: pathlib.Path, subset: str, mask_for, within: str = ""
) -> FileList:
  """`test/<type>/<within>/*` for every <type> folder; mask_for(type, image) -> mask path (anomalous only)."""
  examples, skipped = [], []
  for type_folder in _subfolders(test):
    folder = type_folder / within if within else type_folder
    if not folder.is_dir():
      continue
    defect_type = type_folder.name
    images, extra = _scan(folder, root, recursive=False)
    skipped += extra
    for image in images:
      label = int(defect_type != GOOD)
      # Whether the mask exists is checked with the decoding (sources.py), which names what is missing.
      mask = mask_for(defect_type, image) if label else None
      examples.append(
        Example(_relative(image, root), label, defect_type, str(image), None if mask is None else str(mask))
      )
  location = f"{test}/<type>/{within}" if within else f"{test}/<type>"
  return FileList(dataset, "test", subset, examples, location, skipped)


def aebad_s_train(root: str | os.PathLike) -> FileList:
  root = pathlib.Path(root)
  return _train_good("aebad_s", root / "AeBAD_S" / "train" / GOOD, root, "", recursive=True)


def aebad_s_test(root: str | os.PathLike, domain: str) -> FileList:
  """Every `AeBAD_S/test/<type>/<domain>/*` (types include good); masks under ground_truth with the same name."""
  root = pathlib.Path(root)
  base = root / "AeBAD_S"
  test = base / "test"
  _require_folder(test, "aebad_s", "the test images")
  files = _test_types(
    "aebad_s",
    test,
    root,
    domain,
    within=domain,
    mask_for=lambda defect_type, image: base / "ground_truth" / defect_type / domain / image.name,
  )
  if not files.examples:
    types = [p.name for p in _subfolders(test)]
    raise DatasetError(
      f"{test}/<type>/{domain}: no test images for the domain {domain!r} (types found: {', '.join(types) or 'none'}).",
      LAYOUT_HELP["aebad_s"],
    )
  return files


def aebad_v_train(root: str | os.PathLike) -> FileList:
  root = pathlib.Path(root)
  return _train_good("aebad_v", root / "AeBAD_V" / "train" / GOOD, root, "", recursive=True)


def aebad_v_test(root: str | os.PathLike, video: str) -> FileList:
  """`AeBAD_V/test/<video>/<folder>/*`: a frame is anomalous unless its folder is `good`; no masks."""
  root = pathlib.Path(root)
  folder = root / "AeBAD_V" / "test" / video
  _require_folder(folder, "aebad_v", f"the frames of {video}")
  return _test_types("aebad_v", folder, root, video, mask_for=lambda defect_type, image: None)


def mvtec_train(root: str | os.PathLike, class_name: str) -> FileList:
  root = pathlib.Path(root)
  return _train_good("mvtec", root / class_name / "train" / GOOD, root, class_name, recursive=False)


def mvtec_test(root: str | os.PathLike, class_name: str) -> FileList:
  root = pathlib.Path(root)
  folder = root / class_name / "test"
  _require_folder(folder, "mvtec", f"the test images of the class {class_name!r}")
  truth = root / class_name / "ground_truth"
  return _test_types(
    "mvtec",
    folder,
    root,
    class_name,
    mask_for=lambda defect_type, image: truth / defect_type / f"{image.stem}_mask.png",
  )


def folder_train(root: str | os.PathLike) -> FileList:
  root = pathlib.Path(root)
  return _train_good("folder", root / "train" / GOOD, root, "", recursive=False)


def folder_test(root: str | os.PathLike) -> FileList:
  """`test/<type>/*`; masks `ground_truth/<type>/<stem>_mask.png` when `ground_truth/` exists, else none (the
  run then reports image-level metrics only, as for AeBAD-V)."""
  root = pathlib.Path(root)
  _require_folder(root / "test", "folder", "the test images")
  truth = root / "ground_truth"
  with_masks = folder_has_masks(root)
  return _test_types(
    "folder",
    root / "test",
    root,
    folder_subset(root),
    mask_for=lambda defect_type, image: truth / defect_type / f"{image.stem}_mask.png" if with_masks else None,
  )


def folder_has_masks(root: str | os.PathLike) -> bool:
  return (pathlib.Path(root) / "ground_truth").is_dir()


def folder_subset(root: str | os.PathLike) -> str:
  """The folder layout's single test subset is named after its root folder."""
  return pathlib.Path(root).resolve().name


@dataclasses.dataclass
class PublishedFiles:
  """The files the published readers (datasets/{aebad_S,aebad_V,mvtec}.py) enumerate for one split."""

  pattern: str  # What they read, for messages: AeBAD_S/train/good/<subfolder>/*.png.
  names: list[str]  # Relative to config.data.root, as Example.name.
  folders: list[str]  # The folders whose files they list (relative).
  extension: str  # The one extension globbed, case-sensitive ('.png', '.jpg'); '' when every file is listed.


def published_files(config: ml_collections.ConfigDict, split: str, subset: str) -> PublishedFiles | None:
  """What the published code would read for (split, subset), by its own rules, to compare with this reader's.

  Its AeBAD readers find folders with os.listdir (hidden ones included) and glob `*.png` / `*.jpg` in them:
  one level, case-sensitive, and Python's glob skips names starting with '.' (so `._*` forks). AeBAD-V's
  `train/good/*/` is a glob too, without hidden folders. Its MVTec reader takes every file os.listdir gives in
  `<class>/<split>/<type>/`, non-images and `._*` included. None for the folder layout, which it lacks.
  """
  name, root = _check_name(config), data_root(config)
  if name == "folder":
    return None

  def folders_in(folder: pathlib.Path, hidden: bool = True) -> list[pathlib.Path]:
    if not folder.is_dir():
      return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and (hidden or not p.name.startswith(".")))

  if name == "aebad_s" and split == "train":
    folders, pattern = folders_in(root / "AeBAD_S" / "train" / GOOD), "AeBAD_S/train/good/<subfolder>/*.png"
  elif name == "aebad_s":
    folders = [t / subset for t in folders_in(root / "AeBAD_S" / "test") if (t / subset).is_dir()]
    pattern = f"AeBAD_S/test/<type>/{subset}/*.png"
  elif name == "aebad_v" and split == "train":
    folders, pattern = folders_in(root / "AeBAD_V" / "train" / GOOD, hidden=False), "AeBAD_V/train/good/*/*.jpg"
  elif name == "aebad_v":
    folders, pattern = folders_in(root / "AeBAD_V" / "test" / subset), f"AeBAD_V/test/{subset}/<folder>/*.jpg"
  else:
    folders, pattern = folders_in(root / subset / split), f"{subset}/{split}/<type>/*"
  extension = {"aebad_s": ".png", "aebad_v": ".jpg"}.get(name, "")
  names = []
  for folder in folders:
    if extension:
      paths = [pathlib.Path(p) for p in glob.glob(os.path.join(glob.escape(str(folder)), "*" + extension))]
    else:
      paths = [folder / entry for entry in os.listdir(folder)]
    names += [_relative(path, root) for path in paths if not path.is_dir()]
  return PublishedFiles(pattern, sorted(names), [_relative(f, root) for f in folders], extension)


def _check_name(config: ml_collections.ConfigDict) -> str:
  name = config.data.name
  if name not in DATASET_NAMES:
    raise DatasetError(f"config.data.name must be one of {', '.join(DATASET_NAMES)}, got {name!r}")
  return name


def data_root(config: ml_collections.ConfigDict) -> pathlib.Path:
  """config.data.root, which must exist."""
  root = pathlib.Path(os.path.expanduser(config.data.root))
  if not root.is_dir():
    raise DatasetError(f"{root}: the data root (config.data.root) does not exist.", LAYOUT_HELP[_check_name(config)])
  return root


def has_masks(config: ml_collections.ConfigDict) -> bool:
  """Whether the test sets carry pixel masks (AeBAD-V has frame labels only; a folder may have none)."""
  name = _check_name(config)
  if name == "folder":
    return folder_has_masks(data_root(config))
  return name != "aebad_v"


def subset_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The test subsets evaluated separately (then averaged): config.data.subsets, or the folder's own name."""
  if _check_name(config) == "folder":
    return (folder_subset(config.data.root),)
  return tuple(config.data.subsets)


def train_subset(config: ml_collections.ConfigDict, subset: str | None = None) -> str:
  """The MVTec class whose training set is read: `subset`, else the config's single subset (one model per class).

  For the other datasets there is one training set, and this returns "".
  """
  if _check_name(config) != "mvtec":
    return ""
  if subset:
    return subset
  if len(config.data.subsets) == 1:
    return config.data.subsets[0]
  raise DatasetError(
    "MVTec AD trains one model per class: name the class with subset=..., "
    "--config.data.subsets=CLASS or configs/mvtec.py:CLASS."
  )


def list_train(config: ml_collections.ConfigDict, subset: str | None = None) -> FileList:
  """The training files named by the config (for mvtec, those of `train_subset(config, subset)`)."""
  name, root = _check_name(config), data_root(config)
  if name == "aebad_s":
    return aebad_s_train(root)
  if name == "aebad_v":
    return aebad_v_train(root)
  if name == "mvtec":
    return mvtec_train(root, train_subset(config, subset))
  return folder_train(root)


def list_test(config: ml_collections.ConfigDict, subset: str) -> FileList:
  """The test files of one subset (AeBAD-S domain, AeBAD-V video, MVTec class, or the folder's name)."""
  name, root = _check_name(config), data_root(config)
  if name == "aebad_s":
    return aebad_s_test(root, subset)
  if name == "aebad_v":
    return aebad_v_test(root, subset)
  if name == "mvtec":
    return mvtec_test(root, subset)
  if subset != folder_subset(root):
    raise DatasetError(f"the folder layout at {root} has one test subset, {folder_subset(root)!r}; got {subset!r}")
  return folder_test(root)


def count_by(examples: Sequence[Example], key) -> dict[str, int]:
  counts: dict[str, int] = {}
  for example in examples:
    counts[key(example)] = counts.get(key(example), 0) + 1
  return dict(sorted(counts.items()))
