"""The canonical pretrained weights: where each file comes from, how to check it, and what it initialises.

Checksums. torchvision publishes the first 8 hex digits of each file's SHA-256 in its file name
(wide_resnet50_2-95faca4d.pth); the full digests below begin with those digits and are the values that several
independent projects pin for the same files. Meta publishes no SHA-256 for the MAE files; its MAE README gives
the first 6 hex digits of the MD5 of mae_pretrain_vit_base.pth (8cad7c), and the SHA-256 recorded here for that
file is, again, the value independent projects pin. Nothing is published for mae_visualize_vit_base.pth: its
check is skipped, and `fetch` says so.
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
  source: str  # "mae" | "torchvision": the naming convention, and the load mode (names.load_student's source).
  role: str  # "student" | "teacher": which model it initialises.
  model: str  # What it holds, in words.


_ENTRIES = (
    CatalogEntry(
        name="mae_visualize_vit_base",
        url="https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_base.pth",
        filename="mae_visualize_vit_base.pth", sha256=None, md5_prefix=None, size_bytes=None,
        source="mae", role="student",
        model="MAE ViT-B/16 encoder + pixel decoder (the decoder is dropped); MMR's published initialisation"),
    CatalogEntry(
        name="mae_pretrain_vit_base",
        url="https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
        filename="mae_pretrain_vit_base.pth",
        sha256="aec5f0b68e5f3193a00b07bc65a37440db549c15b36b8bea242606cc40c4bc5d", md5_prefix="8cad7c",
        size_bytes=343_249_461, source="mae", role="student",
        model="MAE ViT-B/16 encoder (the checkpoint released for fine-tuning)"),
    CatalogEntry(
        name="wide_resnet50_2",
        url="https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
        filename="wide_resnet50_2-95faca4d.pth",
        sha256="95faca4d11227dddf8633dbb5ff6c8a9003c1aa5b8945c73834b8007b10950b8", md5_prefix=None,
        size_bytes=138_223_492, source="torchvision", role="teacher",
        model="torchvision wide_resnet50_2, ImageNet IMAGENET1K_V1 (stored as float16); MMR's teacher"),
    CatalogEntry(
        name="resnet18",
        url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        filename="resnet18-f37072fd.pth",
        sha256="f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", md5_prefix=None,
        size_bytes=46_830_571, source="torchvision", role="teacher",
        model="torchvision resnet18, ImageNet IMAGENET1K_V1"),
)

CATALOG: dict[str, CatalogEntry] = {entry.name: entry for entry in _ENTRIES}


def get(name: str) -> CatalogEntry:
  if name not in CATALOG:
    raise WeightsError(f"unknown pretrained weights {name!r}; the catalog has {', '.join(CATALOG)}. "
                       "A file path can be given instead.")
  return CATALOG[name]
