"""Tiny dataset trees in each published layout, for the data tests (40-px images, a few per folder).

Every tree also holds what the real archives hold besides images: macOS `._*` resource forks, `.DS_Store`,
a stray text file.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `configs` is a folder of the repository, not an installed package.
  sys.path.insert(0, str(REPO))

from configs import common  # noqa: E402

SIZE = 40


def write_image(path: pathlib.Path, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> pathlib.Path:
  """A smooth random colour image (PNG or JPEG by the suffix)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
  base = rng.uniform(40, 200, 3)
  image = base + 50 * np.sin(6 * xx + rng.uniform(0, 6))[..., None] * rng.uniform(-1, 1, 3) + 30 * yy[..., None]
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
  return path


def write_mask(
  path: pathlib.Path, box: tuple[int, int, int, int] = (10, 10, 25, 25), size: tuple[int, int] = (SIZE, SIZE)
) -> pathlib.Path:
  """A 0/255 mask with the rectangle (top, left, bottom, right) set."""
  mask = np.zeros(size, np.uint8)
  top, left, bottom, right = box
  mask[top:bottom, left:right] = 255
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(mask).save(path)
  return path


def write_junk(folder: pathlib.Path) -> None:
  """What the released archives carry beside the images."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "._000.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
  (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
  (folder / "notes.txt").write_text("not an image")


def truncate(path: pathlib.Path) -> pathlib.Path:
  """Cuts the file in half: it no longer decodes."""
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  return path


def make_aebad_s(root: pathlib.Path, train: int = 6, domains=("same", "view")) -> pathlib.Path:
  base = root / "AeBAD_S"
  for i in range(train):
    write_image(base / "train" / "good" / ("sub1" if i % 2 else "sub2") / f"{i:03d}.png", seed=i)
  write_junk(base / "train" / "good" / "sub1")
  for d, domain in enumerate(domains):
    for i in range(2):
      write_image(base / "test" / "good" / domain / f"{i:03d}.png", seed=100 + 10 * d + i)
      write_image(base / "test" / "groove" / domain / f"{i:03d}.png", seed=200 + 10 * d + i)
      write_mask(base / "ground_truth" / "groove" / domain / f"{i:03d}.png")
    write_junk(base / "test" / "groove" / domain)
  return root


def make_aebad_v(root: pathlib.Path, train: int = 5) -> pathlib.Path:
  base = root / "AeBAD_V"
  for i in range(train):
    write_image(base / "train" / "good" / "seq1" / f"{i:03d}.jpg", seed=i)
  write_junk(base / "train" / "good" / "seq1")
  for v, video in enumerate(("video1", "video2")):
    for i in range(2):
      write_image(base / "test" / video / "good" / f"{i:03d}.jpg", seed=100 + 10 * v + i)
      write_image(base / "test" / video / "anomaly" / f"{i + 2:03d}.jpg", seed=200 + 10 * v + i)
  return root


def make_mvtec(root: pathlib.Path, classes=("bottle",), train: int = 5) -> pathlib.Path:
  for c, name in enumerate(classes):
    for i in range(train):
      write_image(root / name / "train" / "good" / f"{i:03d}.png", seed=10 * c + i)
    write_junk(root / name / "train" / "good")
    for i in range(2):
      write_image(root / name / "test" / "good" / f"{i:03d}.png", seed=100 + i)
      write_image(root / name / "test" / "broken" / f"{i:03d}.png", seed=200 + i)
      write_mask(root / name / "ground_truth" / "broken" / f"{i:03d}_mask.png")
  return root


def make_folder(root: pathlib.Path, train: int = 4) -> pathlib.Path:
  for i in range(train):
    write_image(root / "train" / "good" / f"{i:03d}.png", seed=i)
  for i in range(2):
    write_image(root / "test" / "good" / f"g{i}.png", seed=100 + i)
    write_image(root / "test" / "scratch" / f"s{i}.png", seed=200 + i)
    write_mask(root / "ground_truth" / "scratch" / f"s{i}_mask.png")
  write_junk(root / "test" / "scratch")
  return root


def config_for(name: str, root: pathlib.Path, subsets=None, **data_overrides):
  """The project's config with a tiny image size and batches, reading `root` in layout `name`."""
  config = common.get_config()
  config.data.name = name
  config.data.root = str(root)
  config.data.subsets = (
    subsets
    or {"aebad_s": ("same", "view"), "aebad_v": ("video1", "video2"), "mvtec": ("bottle",), "folder": (root.name,)}[
      name
    ]
  )
  config.data.image_size = 32
  config.data.resize_size = 36
  config.batch_size = 2
  config.eval_batch_size = 3
  for key, value in data_overrides.items():
    config.data[key] = value
  return config
