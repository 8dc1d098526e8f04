"""A trained workdir as a model to use: its recorded config, one seed's student with the teacher, and the seed's
calibration (`TrainedModel`), adapted to a new domain from a few of its normal images (`TrainedModel.adapt`,
mmr_jax/adaptation.py); and predict.py's work, scoring image files into a folder (`predict_files`, with the
adaptation it used saved beside the scores and reused while its images stay the same: `adapt_from_files`).

Images are preprocessed as the test images are (decode with PIL, data.max_image_side, resize to data.resize_size,
centre crop data.image_size) and scored by the run's own compiled functions, so an image gets the score that
`evaluate.py` gives it.
"""

from __future__ import annotations

import concurrent.futures
import copy
import csv
import dataclasses
import hashlib
import glob
import io
import json
import logging
import os
import pathlib
from typing import Iterator, Sequence

import jax
import numpy as np
import tqdm

from mmr_jax import adaptation as adaptation_lib
from mmr_jax import calibration
from mmr_jax import config as config_lib
from mmr_jax import errors
from mmr_jax import figures
from mmr_jax import files
from mmr_jax import scoring
from mmr_jax.data import images
from mmr_jax.data import layouts
from mmr_jax.data import preprocess
from mmr_jax.training import lock
from mmr_jax.training import resume
from mmr_jax.training import sharding

SCORE_COLUMNS = ("file", "score", "normalised_score", "decision")
# What predict.py and the export can do instead when the workdir has no checkpoint (resume.no_checkpoint).
NO_CHECKPOINT_HINT = ", then score with it"


class TrainedModel:
  """One seed of a trained run: `score` maps preprocessed uint8 images to anomaly maps and image scores. Built from
  the workdir's recorded config and last checkpoint's parameters, through the one scorer (`scoring.Scorer`) that
  evaluation uses: no optimizer, no training step. `adapt` returns the same model adapted to a new domain."""

  adaptation: scoring.Adaptation | None = None  # Set on the model `adapt` returns,
  adaptation_id: str | None = None  # with a fingerprint of it (the same shots give the same one).

  def __init__(self, workdir: str | os.PathLike, seed: int | None = None, fpr: float | None = None):
    self.workdir = workdir = pathlib.Path(workdir)
    self.config = resume.read_config(workdir)
    seeds = config_lib.seeds_of(self.config)
    self.seed = self.config.seed if seed is None else seed
    if self.seed not in seeds:
      raise errors.UserError(f"{workdir} trained seeds {', '.join(map(str, seeds))}; pass one of them as --seed")
    if fpr is not None and not 0 < fpr < 1:
      raise errors.UserError(f"--fpr must lie in (0, 1), e.g. 0.01 for 1 % false positives, got {fpr}")
    self.scorer = scoring.Scorer(self.config)
    restored = resume.restore_params(workdir, self.config, self.scorer.abstract_params())
    if restored is None:
      if self.config.num_epochs != 0:
        raise resume.no_checkpoint(workdir, NO_CHECKPOINT_HINT)
      params, self.epochs_trained = self.scorer.initial_params(), 0
    else:
      params, self.epochs_trained = restored[0], restored[1] + 1
    k = seeds.index(self.seed)
    self.params = jax.tree_util.tree_map(lambda leaf: leaf[k : k + 1], params)  # Keeps a seed axis of 1.
    self.calibration = calibration.read(workdir, self.seed, fpr)
    self.fpr = self.config.eval.threshold_fpr if fpr is None else fpr
    self._key = jax.random.key(self.seed)

  def adapt(self, normal_images: Sequence[np.ndarray], preprocessed: bool = False) -> TrainedModel:
    """This model adapted to the domain of `normal_images` (decoded uint8 RGB of any size; `preprocessed`: already
    through `preprocess`), normal parts only: a defect among them teaches the model that defect. Its maps score
    what those images show to be normal as normal (mmr_jax/adaptation.py), and its threshold is set from them by
    the calibration's rule (calibration.from_shots). Nothing is trained; this model is left as it is."""
    if len(normal_images) < 1:
      raise errors.UserError("adaptation needs at least one normal image of the new domain")
    shots = np.stack(list(normal_images) if preprocessed else [self.preprocess(image) for image in normal_images])
    return self.with_adaptation(self.scorer.adapt(self.params, shots))

  def with_adaptation(self, adaptation: scoring.Adaptation) -> TrainedModel:
    """This model with `adaptation` (this seed's, as `adapt` makes it) and the threshold from its shots."""
    adapted = copy.copy(self)
    adapted.adaptation = adaptation
    adapted.adaptation_id = hashlib.sha256(_adaptation_arrays(adaptation)).hexdigest()[:16]
    adapted.calibration = calibration.from_shots(sharding.to_host(adaptation.shot_scores)[0], self.fpr)
    return adapted

  @property
  def image_size(self) -> int:
    return self.config.data.image_size

  @property
  def batch_size(self) -> int:
    return self.config.eval_batch_size

  def preprocess(self, image: np.ndarray) -> np.ndarray:
    """A decoded uint8 RGB image of any size → the uint8 (S, S, 3) crop that the test transform gives."""
    data = self.config.data
    image, _ = images.limit_size(image, None, data.max_image_side)
    return preprocess.eval_transform(
      image, None, False, data.resize_size, data.image_size, bool(data.strict_mask_binarization)
    )[0]

  def score(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, S, S, 3) preprocessed images → (anomaly maps (n, S, S), image scores (n,)), float32."""
    maps, scores = self.scorer.score_images(self.params, batch, self._key, self.adaptation)
    return maps[0], scores[0]

  def colour_scale(self) -> tuple[float, float] | None:
    """(vmin, vmax) for overlays, from the calibration: 0 to the score normalised to 1 (twice as far above the
    held-out median as the threshold); None when uncalibrated (each overlay then uses its own maximum)."""
    if self.calibration is None:
      return None
    c = self.calibration
    return 0.0, max(c.centre + 2 * (c.threshold - c.centre), c.threshold * 1.01, 1e-6)


def _digest(path: str) -> str:
  with open(path, "rb") as handle:
    return hashlib.sha256(handle.read()).hexdigest()


def adapt_from_files(
  model: TrainedModel, pattern: str, out: pathlib.Path | None = None, workers: int | None = None
) -> tuple[TrainedModel, str]:
  """(the model adapted to the normal images that `pattern` names (a file, a folder or a glob, as --images), a line
  saying what was done). With OUT, the adaptation is written there (adaptation.npz and adaptation.json, which
  names the images with their SHA-256, the seed and the method) and reused by a later call with the same images;
  with other images, or saved by another method, it is computed again, and the line says so. Files that do not
  decode are skipped and named; none readable is an error."""
  image_files, _ = list_images(pattern, "--adapt")
  digests = {file: _digest(file) for file in image_files}
  record_path = None if out is None else out / files.ADAPTATION_RECORD
  before = json.loads(record_path.read_text()) if record_path is not None and record_path.exists() else None
  # What decides reuse: the same images, for the same seed, adapted by the same method.
  identity = {"seed": model.seed, "method": adaptation_lib.METHOD, "images": digests}
  if before is not None and all(before.get(key) == value for key, value in identity.items()):
    with np.load(out / files.ADAPTATION) as arrays:
      adaptation = _adaptation_from_arrays(arrays)
    adapted = model.with_adaptation(adaptation)
    return adapted, f"adapted to {len(before['shots'])} normal images of {pattern} (reused from {record_path})"
  loaded = [
    item for batch in _loaded_batches(model, image_files, workers or min(8, os.cpu_count() or 1)) for item in batch
  ]
  shots = [item for item in loaded if item.image is not None]
  skipped = [item.problem for item in loaded if item.image is None]
  if not shots:
    raise errors.UserError(
      f"--adapt={pattern}: none of its {len(image_files)} image files decodes ({'; '.join(skipped[:3])}); give "
      f"normal images of the new domain"
    )
  adapted = model.adapt([item.image for item in shots], preprocessed=True)
  line = f"adapted to {len(shots)} normal images of {pattern}" + (
    f"; skipped {len(skipped)} that do not decode" if skipped else ""
  )
  if out is not None:
    record = {**identity, "shots": [item.file for item in shots], "skipped": skipped}
    files.write_atomic(out / files.ADAPTATION, _adaptation_arrays(adapted.adaptation))
    files.write_json(record_path, record)
    line += f" (recomputed: the images or the method differ from those of {record_path})" if before is not None else ""
  for problem in skipped:
    logging.warning("--adapt: skipped %s", problem)
  return adapted, line


def _adaptation_arrays(adaptation: scoring.Adaptation) -> bytes:
  """An adaptation as the bytes of an .npz: per scale s, memory_s_entries and memory_s_owners; shot_scores."""
  adaptation = sharding.to_host(adaptation)
  arrays = {"shot_scores": np.asarray(adaptation.shot_scores)}
  for s, memory in enumerate(adaptation.memories):
    arrays[f"memory_{s}_entries"] = np.asarray(memory.entries)
    arrays[f"memory_{s}_owners"] = np.asarray(memory.owners)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def _adaptation_from_arrays(arrays) -> scoring.Adaptation:
  scales = sorted({name.split("_")[1] for name in arrays.files if name.startswith("memory_")}, key=int)
  memories = tuple(adaptation_lib.Memory(arrays[f"memory_{s}_entries"], arrays[f"memory_{s}_owners"]) for s in scales)
  return scoring.Adaptation(memories, arrays["shot_scores"])


def list_images(pattern: str, flag: str = "--images") -> tuple[list[str], pathlib.Path]:
  """The image files a --images (or --adapt: `flag`) argument names (a file, a folder searched recursively, or a
  glob), sorted, and the folder their output names are relative to. Hidden files (".*", such as macOS's "._"
  files) are left out."""
  if os.path.isfile(pattern):
    return [pattern], pathlib.Path(pattern).parent
  if os.path.isdir(pattern):
    found = [str(p) for p in pathlib.Path(pattern).rglob("*")]
    base = pathlib.Path(pattern)
  else:
    found = glob.glob(pattern, recursive=True)
    parts = pathlib.Path(pattern).parts
    literal = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts) - 1)
    base = pathlib.Path(*parts[:literal]) if literal else pathlib.Path(".")
  image_files = sorted(
    f
    for f in found
    if os.path.isfile(f) and f.lower().endswith(layouts.IMAGE_EXTENSIONS) and not os.path.basename(f).startswith(".")
  )
  undecodable = [f for f in image_files if not layouts.encodes(f)]
  if undecodable:
    raise errors.UserError(
      f"{flag}={pattern}: {len(undecodable)} file names are not valid UTF-8 (e.g. {ascii(undecodable[0])}); rename "
      f"them (for example with convmv -f latin1 -t utf-8 -r --notest DIR)"
    )
  if not image_files:
    raise errors.UserError(
      f"{flag}={pattern}: 0 image files ({', '.join(layouts.IMAGE_EXTENSIONS)}) there; pass a file, a "
      f"folder or a quoted glob such as 'photos/**/*.png'"
    )
  return image_files, base


@dataclasses.dataclass
class _Loaded:
  file: str
  image: np.ndarray | None  # Preprocessed uint8 (S, S, 3); None when unreadable.
  problem: str | None


def _loaded_batches(model: TrainedModel, image_files: Sequence[str], workers: int) -> Iterator[list[_Loaded]]:
  """Files decoded and preprocessed in threads (PIL releases the GIL), one batch ahead of the model."""

  def load(file: str) -> _Loaded:
    try:
      return _Loaded(file, model.preprocess(images.decode_rgb(file)), None)
    except Exception as error:  # PIL raises many types for bad files; each becomes one line naming the file.
      return _Loaded(file, None, images.describe_failure(file, error))

  chunks = [image_files[i : i + model.batch_size] for i in range(0, len(image_files), model.batch_size)]
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = [pool.submit(lambda c=c: [load(f) for f in c]) for c in chunks[:1]]
    for index in range(len(chunks)):
      if index + 1 < len(chunks):
        pending.append(pool.submit(lambda c=chunks[index + 1]: list(pool.map(load, c))))
      yield pending.pop(0).result()


def _done_files(path: pathlib.Path) -> set[str]:
  """The files a CSV written by an earlier, possibly killed, predict already lists; a torn last line is cut."""
  if not path.exists():
    return set()
  text = path.read_text()
  if text and not text.endswith("\n"):
    text = text[: text.rfind("\n") + 1]
    path.write_text(text)
  return {row["file"] for row in csv.DictReader(io.StringIO(text))}


def _append_rows(path: pathlib.Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
  """Appends rows (the header first on a new file), on disk before it returns: a killed run loses no row."""
  new = not path.exists() or path.stat().st_size == 0
  with open(path, "a", newline="") as handle:
    writer = csv.DictWriter(handle, columns, lineterminator="\n")
    if new:
      writer.writeheader()
    writer.writerows(rows)
    handle.flush()
    os.fsync(handle.fileno())


def _check_settings(out: pathlib.Path, settings: dict) -> None:
  """Records what the decisions in OUT depend on; an earlier predict into OUT must have had the same."""
  path = out / files.PREDICT_SETTINGS
  if path.exists():
    before = json.loads(path.read_text())
    differing = [k for k in settings if k != "images" and before.get(k) != settings[k]]
    if differing:
      raise errors.UserError(
        f"{out} holds predictions made with another {', '.join(differing)} ("
        + ", ".join(f"{k} {before.get(k)!r} then, {settings[k]!r} now" for k in differing)
        + "); pass another --out, or delete it to start again"
      )
  path.write_text(json.dumps(settings, indent=2) + "\n")


def relative_name(file: str, base: pathlib.Path) -> str:
  """A scored file's path relative to `base` (the folder --images names), as the outputs name it."""
  relative = pathlib.PurePath(os.path.relpath(os.path.abspath(file), os.path.abspath(base)))
  return "/".join(part for part in relative.parts if part not in ("..", "."))


def output_name(file: str, base: pathlib.Path, suffix: str) -> str:
  """The path (under heatmaps/ or maps/) of a file's overlay or map: its path relative to `base`, its extension
  kept, then `suffix` (good/0001.png → good/0001.png.png): unique (x.png and x.jpg differ, a/b.png and a__b.png
  too) and reversible (drop the suffix)."""
  return relative_name(file, base) + suffix


@dataclasses.dataclass
class Summary:
  scored: int  # In this call.
  skipped: int  # Already in scores.csv.
  unreadable: int
  anomalous: int | None  # Over every row of scores.csv; None when uncalibrated.
  total: int


def predict_files(
  model: TrainedModel,
  image_files: Sequence[str],
  base: pathlib.Path,
  out: pathlib.Path,
  *,
  heatmaps: int | None = None,
  save_maps: bool = False,
  workers: int | None = None,
  show_progress: bool = True,
) -> Summary:
  """Scores `image_files` into OUT: scores.csv (file, score, normalised score, decision), unreadable.csv,
  heatmaps/<relative name>.png (every image when `heatmaps` is None, else the `heatmaps` highest-scoring ones, at
  the end), maps/<relative name>.npy with `save_maps`. Resumable: files already in scores.csv or unreadable.csv
  are skipped, and each batch's rows are written after its pictures. One predict per OUT at a time (a lock)."""
  files.check_folder(out, "--out")
  with lock.WorkdirLock(out, "--out"):
    return _predict_files(model, image_files, base, out, heatmaps, save_maps, workers, show_progress)


def _predict_files(
  model: TrainedModel,
  image_files: Sequence[str],
  base: pathlib.Path,
  out: pathlib.Path,
  heatmaps: int | None,
  save_maps: bool,
  workers: int | None,
  show_progress: bool,
) -> Summary:
  c = model.calibration
  _check_settings(
    out,
    {
      "seed": model.seed,
      "threshold": None if c is None else c.threshold,
      "fpr": None if c is None else c.fpr,
      "image_size": model.image_size,
      "adaptation": model.adaptation_id,
      "images": len(image_files),
    },
  )
  done = _done_files(out / files.SCORES) | _done_files(out / files.UNREADABLE)
  pending = [f for f in image_files if f not in done]
  scale = model.colour_scale()
  unreadable = 0
  progress = tqdm.tqdm(total=len(pending), unit="img", dynamic_ncols=True, disable=not show_progress)
  for loaded in _loaded_batches(model, pending, workers or min(8, os.cpu_count() or 1)):
    good = [item for item in loaded if item.image is not None]
    bad = [
      {"file": item.file, "reason": item.problem.removeprefix(f"{item.file}: ")}
      for item in loaded
      if item.image is None
    ]
    rows = []
    if good:
      batch = np.stack([item.image for item in good])
      maps, scores = model.score(batch)
      for item, image, amap, score in zip(good, batch, maps, scores):
        if heatmaps is None:
          _write_overlay(model, out, item.file, base, image, amap, float(score), scale)
        if save_maps:
          buffer = io.BytesIO()
          np.save(buffer, amap.astype(np.float32))
          files.write_atomic(out / files.MAPS / output_name(item.file, base, ".npy"), buffer.getvalue())
        rows.append(_score_row(model, item.file, float(score)))
    _append_rows(out / files.SCORES, SCORE_COLUMNS, rows)
    if bad:
      _append_rows(out / files.UNREADABLE, ("file", "reason"), bad)
      unreadable += len(bad)
    progress.update(len(loaded))
  progress.close()
  with open(out / files.SCORES) as handle:
    every = list(csv.DictReader(handle))
  if heatmaps:
    _write_top_overlays(model, out, base, every, heatmaps, scale)
  anomalous = None if c is None else sum(row["decision"] == "anomalous" for row in every)
  return Summary(
    scored=len(pending) - unreadable,
    skipped=len(image_files) - len(pending),
    unreadable=unreadable,
    anomalous=anomalous,
    total=len(every),
  )


def _score_row(model: TrainedModel, file: str, score: float) -> dict:
  c = model.calibration
  if c is None:
    return {"file": file, "score": f"{score:.9g}", "normalised_score": "", "decision": ""}
  return {
    "file": file,
    "score": f"{score:.9g}",
    "normalised_score": f"{float(c.normalise(score)):.6f}",
    "decision": "anomalous" if c.is_anomalous(score) else "normal",
  }


def _write_overlay(
  model: TrainedModel,
  out: pathlib.Path,
  file: str,
  base: pathlib.Path,
  image: np.ndarray,
  amap: np.ndarray,
  score: float,
  scale: tuple[float, float] | None,
  rank: int | None = None,
) -> None:
  row = _score_row(model, file, score)
  title = f"{relative_name(file, base)}: score {score:.4g}"
  if model.calibration is None:
    title += " (uncalibrated; colours scaled to this map)"
  else:
    title += f", normalised {float(row['normalised_score']):.2f}: {row['decision']}"
  if rank is not None:
    title = f"#{rank} " + title
  vmin, vmax = scale if scale else (0.0, max(float(amap.max()), 1e-6))
  png = figures.prediction_overlay(image, amap, vmin, vmax, title)
  files.write_atomic(out / files.HEATMAPS / output_name(file, base, ".png"), png)


def _write_top_overlays(
  model: TrainedModel,
  out: pathlib.Path,
  base: pathlib.Path,
  rows: list[dict],
  count: int,
  scale: tuple[float, float] | None,
) -> None:
  """Overlays of the `count` highest-scoring files of scores.csv, scored again (their maps were not kept)."""
  top = sorted(rows, key=lambda row: -float(row["score"]))[:count]
  image_files = [row["file"] for row in top]
  loaded = [item for batch in _loaded_batches(model, image_files, 1) for item in batch if item.image is not None]
  if not loaded:
    return
  batch = np.stack([item.image for item in loaded])
  maps, scores = model.score(batch)
  for rank, (item, image, amap, score) in enumerate(zip(loaded, batch, maps, scores), 1):
    _write_overlay(model, out, item.file, base, image, amap, float(score), scale, rank)
