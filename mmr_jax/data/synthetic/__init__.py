"""A procedurally generated AeBAD-like dataset, written in the published AeBAD-S and AeBAD-V layouts.

    python -m mmr_jax synthetic --out data/synthetic --seed 0 [--size tiny|small|large]

AeBAD_S: one turbine blade per image (airfoil with a tilted tip, platform and root block, shaded by a
directional light, brushed texture), not aligned: varying scale, position and angle, on black and gray
backgrounds for training. Test domains shift what the paper's do:
  same          the training distribution;
  background    blue-gray cloth and a wooden bench instead of black / gray;
  illumination  light from the other side, over- or under-exposure, a colour cast, another gamma;
  view          the blade turned by 15-30° (training: up to 12°), foreshortened or closer, often mirrored.
Each domain holds `good` and the four AeBAD defect kinds, from large to thin, with pixel masks:
  breakdown     a chunk missing at the edge (the background shows through),
  ablation      a burnt, discoloured patch,
  fracture      a dark, jagged crack running in from the edge,
  groove        a thin scratch (dark groove with a bright lip).
Within each test folder the scene's either-or choices (which background, over- or under-exposure, viewpoint)
alternate with the image index, so that no scene property is confounded with the label.
AeBAD_V: frames of a rotating disk of blades; training sequences from two viewpoints (all blades good), three
test videos from three other viewpoints in which some blades are defective. A frame is anomalous when a
defect is visible in its centre crop (frames where one is barely visible are left out, as ambiguous).

Everything is a function of (seed, image): the same seed writes the same files, whatever the worker count.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import math
import multiprocessing
import os
import pathlib
import shutil
import tempfile

import numpy as np
from PIL import Image

from mmr_jax.data.synthetic.scene import DEFECT_TYPES
from mmr_jax.data.synthetic.scene import DOMAINS
from mmr_jax.data.synthetic.scene import TRAIN_BACKGROUNDS
from mmr_jax.data.synthetic.scene import VIDEOS
from mmr_jax.data.synthetic.scene import CROP_FRACTION
from mmr_jax.data.synthetic.shading import visible_pixels
from mmr_jax.data.synthetic.blades import render_blade_image
from mmr_jax.data.synthetic.disk import TEST_VIEWS
from mmr_jax.data.synthetic.disk import TRAIN_VIEWS
from mmr_jax.data.synthetic.disk import render_disk_frame


@dataclasses.dataclass(frozen=True)
class Size:
  """How much to generate."""

  image_hw: tuple[int, int]  # AeBAD_S images (height, width).
  train_per_background: int  # AeBAD_S training images per background subfolder.
  test_good: int  # Per domain.
  test_per_defect: int  # Per domain and defect type.
  frame_hw: tuple[int, int]  # AeBAD_V frames.
  train_frames: int  # Per training sequence (two sequences).
  test_frames: int  # Per test video.


SIZES = {
  "tiny": Size((64, 72), 4, 2, 1, (64, 64), 4, 8),
  "small": Size((256, 288), 160, 24, 10, (256, 256), 80, 60),
  "large": Size((512, 576), 600, 60, 25, (512, 512), 300, 150),
}

# Stable codes for the per-image random streams.
_STREAM = {
  "train": 0,
  **{d: 1 + i for i, d in enumerate(DOMAINS)},
  "v_train": 10,
  **{v: 11 + i for i, v in enumerate(VIDEOS)},
}
_TYPE_CODE = {"good": 0, **{t: 1 + i for i, t in enumerate(DEFECT_TYPES)}}


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
  return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def _s_tasks(seed: int, size: Size) -> list[tuple]:
  tasks = []
  for b, background in enumerate(TRAIN_BACKGROUNDS):
    for i in range(size.train_per_background):
      tasks.append(("s", seed, "train", "good", b, i, background, f"AeBAD_S/train/good/{background}/{i:04d}.png"))
  for domain in DOMAINS:
    for defect_type in ("good",) + DEFECT_TYPES:
      count = size.test_good if defect_type == "good" else size.test_per_defect
      for i in range(count):
        tasks.append(("s", seed, domain, defect_type, 0, i, None, f"AeBAD_S/test/{defect_type}/{domain}/{i:04d}.png"))
  return tasks


def _v_tasks(seed: int, size: Size) -> list[tuple]:
  tasks = []
  for sequence in TRAIN_VIEWS:
    for frame in range(size.train_frames):
      tasks.append(("v", seed, sequence, frame))
  for video in VIDEOS:
    # Some frames are left out as ambiguous; render enough candidates to keep `test_frames`.
    for frame in range(int(math.ceil(size.test_frames * 1.3)) + 4):
      tasks.append(("v", seed, video, frame))
  return tasks


def _render_task(task: tuple, size: Size) -> tuple:
  """Runs in a worker: renders one image and returns its encoded file(s)."""
  if task[0] == "s":
    _, seed, domain, defect_type, background_code, index, background, path = task
    rng = np.random.default_rng(
      [seed, _STREAM["train" if domain == "train" else domain], background_code, _TYPE_CODE[defect_type], index]
    )
    image, truth = render_blade_image(
      rng, domain, defect_type, size.image_hw, background, variant=None if domain == "train" else index
    )
    mask = None if truth is None else _png(truth.astype(np.uint8) * 255)
    return path, _png(image), mask
  _, seed, name, frame = task
  train = name in TRAIN_VIEWS
  view = TRAIN_VIEWS[name] if train else TEST_VIEWS[name]
  stream = _STREAM["v_train"] * 100 + list(TRAIN_VIEWS).index(name) if train else _STREAM[name]
  image, truth = render_disk_frame(seed, stream, view, frame, size.frame_hw, defective=not train)
  return name, frame, _jpeg(image), visible_pixels(truth, CROP_FRACTION)


def _render_all(tasks: list[tuple], size: Size, workers: int) -> list[tuple]:
  if workers <= 1:
    return [_render_task(task, size) for task in tasks]
  # 'spawn': the caller may already run JAX or TF threads, which a fork would copy in a broken state.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    return list(pool.map(_render_task, tasks, [size] * len(tasks), chunksize=max(1, len(tasks) // (8 * workers))))


def _write(path: pathlib.Path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def generate(
  out: str | os.PathLike, seed: int = 0, size: str = "small", workers: int | None = None, keep_existing: bool = False
) -> dict:
  """Writes OUT/AeBAD_S and OUT/AeBAD_V; returns file counts.

  Both must be absent, unless keep_existing: then a folder already there is kept (each is moved into place
  whole, so one that exists is complete) and only the missing one is written.
  """
  out = pathlib.Path(out)
  spec = SIZES[size]
  existing = [name for name in ("AeBAD_S", "AeBAD_V") if (out / name).exists()]
  if existing and not keep_existing:
    raise FileExistsError(f"{out / existing[0]} already exists; delete it or choose another --out")
  workers = workers or os.cpu_count() or 1
  out.mkdir(parents=True, exist_ok=True)
  # Written under a temporary folder and moved into place, so that a half-written dataset is never found.
  staging = pathlib.Path(tempfile.mkdtemp(prefix=".synthetic-", dir=out))
  try:
    s_tasks = _s_tasks(seed, spec)
    results = _render_all(s_tasks + _v_tasks(seed, spec), spec, workers)
    s_results, v_results = results[: len(s_tasks)], results[len(s_tasks) :]
    counts = {"AeBAD_S": 0, "AeBAD_S masks": 0, "AeBAD_V": 0}
    for path, image, mask in s_results:
      _write(staging / path, image)
      counts["AeBAD_S"] += 1
      if mask is not None:
        _write(staging / path.replace("/test/", "/ground_truth/", 1), mask)
        counts["AeBAD_S masks"] += 1
    # A frame is anomalous when enough of a defect shows in its centre crop; a sliver is ambiguous.
    least = max(10 * (spec.frame_hw[0] / 256) ** 2, 2)
    kept = {video: 0 for video in VIDEOS}
    for name, frame, image, visible in v_results:
      if name in TRAIN_VIEWS:
        _write(staging / "AeBAD_V" / "train" / "good" / name / f"{frame:04d}.jpg", image)
      elif kept[name] < spec.test_frames and (visible == 0 or visible >= least):
        folder = "good" if visible == 0 else "anomaly"
        _write(staging / "AeBAD_V" / "test" / name / folder / f"{frame:04d}.jpg", image)
        kept[name] += 1
        counts[f"AeBAD_V {name} {folder}"] = counts.get(f"AeBAD_V {name} {folder}", 0) + 1
      else:
        continue
      counts["AeBAD_V"] += 1
    # AeBAD_S last: its presence is what `ensure_synthetic` looks for.
    for name in ("AeBAD_V", "AeBAD_S"):
      try:
        os.replace(staging / name, out / name)
      except OSError:
        if not (keep_existing and (out / name).is_dir()):  # Another process moved its copy in first.
          raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return counts


def ensure_synthetic(root: str | os.PathLike, seed: int = 0, size: str = "small", workers: int | None = None) -> bool:
  """Generates the dataset under `root` unless `root/AeBAD_S` exists. Returns whether it generated.

  Safe when several processes call it at once: each writes its own staging copy; whichever finishes first
  is kept (they are identical, the generator being deterministic).
  """
  root = pathlib.Path(os.path.expanduser(root))
  if (root / "AeBAD_S").is_dir():
    return False
  generate(root, seed=seed, size=size, workers=workers, keep_existing=True)
  return True
