"""The probe suite: bad inputs and abuses, run through the real commands (`cli.run`, the whole start-up but the
allocator relaunch) at a tiny size. For each: the exit code, one "error:" line and no traceback, and nothing
already computed changed (the files of a trained workdir, byte for byte).

    python -m pytest tests/test_probes.py -v

Probes that need to mount a file system (a full disk, a read-only one) skip where this user cannot mount.
"""

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from mmr_jax import cli
from mmr_jax import experiment
from mmr_jax import files
from mmr_jax import inference
from mmr_jax.data import images
from mmr_jax.training import lock
from tests import test_training

TRAINED = test_training.CALIBRATED  # The session's calibrated run (tests/conftest.py).


def flags_of(data_root, **overrides) -> list[str]:
  values = {**test_training.tiny_overrides(data_root), **TRAINED, **overrides}
  return [
    "--config=configs/synthetic_random_teacher.py",
    "--config.data.synthetic=False",
    *(f"--config.{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in values.items()),
  ]


@pytest.fixture(scope="module")
def trained(calibrated_run):
  return calibrated_run[1]


def snapshot(folder: pathlib.Path) -> dict[str, str]:
  """Every file under FOLDER (but a lock, which each command takes) with its SHA-256."""
  return {
    str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
    for path in sorted(folder.rglob("*"))
    if path.is_file() and path.name != files.LOCK
  }


def run(argv: list[str], capsys) -> tuple[int, str]:
  code = cli.run(argv)
  captured = capsys.readouterr()
  return code, captured.err


def assert_one_line_error(code: int, err: str, expected_code: int, pattern: str) -> None:
  lines = [line for line in err.splitlines() if line.startswith("error: ")]
  assert code == expected_code, (code, err[-2000:])
  assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
  assert re.search(pattern, lines[0]), lines[0]


@contextlib.contextmanager
def mounted(tmp_path: pathlib.Path, options: str):
  """A tmpfs with `options` (e.g. "size=600k" or "ro") at a fresh folder; skips where mounting is not allowed."""
  point = tmp_path / f"mount_{options.replace(',', '_').replace('=', '')}"
  point.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True).returncode:
    pytest.skip("this user cannot mount a file system")
  try:
    yield point
  finally:
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


def copy_data(data_root: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  copy = tmp_path / "data"
  shutil.copytree(data_root, copy)
  return copy


@dataclasses.dataclass
class Probe:
  name: str
  argv: Callable  # (data_root, trained workdir, tmp_path) → the command line.
  code: int
  pattern: str


PROBES = [
  Probe(
    "a mistyped config key names the closest one",
    lambda root, w, t: ["train", *flags_of(root), "--config.eval.num_heatmaps=2", f"--workdir={t / 'w'}"],
    2,
    r"unknown config key: eval\.num_heatmaps \(did you mean eval\.heatmaps_per_kind",
  ),
  Probe(
    "a non-finite config value",
    lambda root, w, t: ["train", *flags_of(root, **{"optim.lr": "inf"}), f"--workdir={t / 'w'}"],
    2,
    r"optim\.lr=inf: every number of a config must be finite",
  ),
  Probe(
    "a config that trains otherwise than the checkpoint",
    lambda root, w, t: ["train", *flags_of(root, batch_size=4), f"--workdir={w}"],
    6,
    r"batch_size 6 in the checkpoint, 4 now",
  ),
  Probe(
    "a workdir that is a file",
    lambda root, w, t: ["train", *flags_of(root), f"--workdir={w / files.CONFIG}"],
    6,
    r"--workdir=.*config\.json is a file, not a folder",
  ),
  Probe(
    "evaluate --out that is a file",
    lambda root, w, t: ["evaluate", *flags_of(root), f"--workdir={w}", f"--out={w / files.RESULTS}"],
    6,
    r"--out=.*results\.json is a file, not a folder",
  ),
  Probe(
    "predict --out that is a file",
    lambda root, w, t: ["predict", f"--workdir={w}", f"--images={root}", f"--out={w / files.RESULTS}"],
    6,
    r"--out=.*results\.json is a file, not a folder",
  ),
  Probe(
    "export --out that is a file",
    lambda root, w, t: ["export", f"--workdir={w}", f"--out={w / files.RESULTS}"],
    6,
    r"--out=.*results\.json is a file, not a folder",
  ),
  Probe(
    "a workdir that was never trained, for evaluate",
    lambda root, w, t: ["evaluate", *flags_of(root), f"--workdir={t / 'nothing'}"],
    6,
    r"no checkpoint .* --checkpoint=FILE .* --config\.num_epochs=0",
  ),
  Probe(
    "a workdir whose checkpoints are gone, for predict: the hint is predict's own",
    lambda root, w, t: ["predict", f"--workdir={without_checkpoints(w, t)}", f"--images={root}", f"--out={t / 'p'}"],
    6,
    r"no checkpoint in .*: train first with `python train\.py --config=\.\.\. --workdir=[^`]*`, then score with it$",
  ),
  Probe(
    "a workdir whose checkpoints are gone, for export",
    lambda root, w, t: ["export", f"--workdir={without_checkpoints(w, t)}", f"--out={t / 'e'}"],
    6,
    r"then score with it$",
  ),
  Probe(
    "a test subset with normal images only",
    lambda root, w, t: ["train", *flags_of(one_class(root, t)), f"--workdir={t / 'w'}"],
    3,
    r"the test view split has 2 normal and 0 anomalous images, so its image AUROC is undefined",
  ),
  Probe(
    "a training file name that is not UTF-8",
    lambda root, w, t: [
      "train",
      *flags_of(with_undecodable_name(root, t, "AeBAD_S/train/good")),
      f"--workdir={t / 'w'}",
    ],
    3,
    r"1 file names are not valid UTF-8 \(e\.g\. 'AeBAD_S/train/good/.*\\udcff\.png'\); rename them",
  ),
  Probe(
    "a test file name that is not UTF-8",
    lambda root, w, t: [
      "train",
      *flags_of(with_undecodable_name(root, t, "AeBAD_S/test/good/same")),
      f"--workdir={t / 'w'}",
    ],
    3,
    r"file names are not valid UTF-8",
  ),
  Probe(
    "an image to predict whose name is not UTF-8",
    lambda root, w, t: [
      "predict",
      f"--workdir={w}",
      f"--images={with_undecodable_name(root, t, 'AeBAD_S/test/good/same') / 'AeBAD_S/test/good/same'}",
      f"--out={t / 'p'}",
    ],
    2,
    r"--images=.*: 1 file names are not valid UTF-8",
  ),
  Probe(
    "adaptation to more shots than a subset has normal images",
    lambda root, w, t: ["evaluate", *flags_of(root, **{"eval.adapt_shots": 2}), f"--workdir={w}", f"--out={t / 'o'}"],
    3,
    r"the test subset 'same' has 2 normal images: eval\.adapt_shots=2 needs at least 3",
  ),
  Probe(
    "an adapt folder without images",
    lambda root, w, t: ["predict", f"--workdir={w}", f"--images={root}", f"--adapt={t}", f"--out={t / 'p'}"],
    2,
    r"--adapt=.*: 0 image files",
  ),
  Probe(
    "a config file that does not exist",
    lambda root, w, t: ["train", "--config=configs/nonexistent.py", f"--workdir={t / 'w'}"],
    2,
    r"--config cannot be loaded: .*No such file or directory: 'configs/nonexistent\.py'",
  ),
  Probe(
    "a config file that is not Python",
    lambda root, w, t: ["train", f"--config={written(t / 'broken.py', 'def get_config(:')}", f"--workdir={t / 'w'}"],
    2,
    r"--config cannot be loaded: SyntaxError: invalid syntax \(.*broken\.py, line 1\)",
  ),
  Probe(
    "a workdir whose config.json was cut short",
    lambda root, w, t: ["predict", f"--workdir={torn(w, t, files.CONFIG)}", f"--images={root}", f"--out={t / 'p'}"],
    6,
    r"config\.json is not the JSON a run writes",
  ),
  Probe(
    "a workdir whose calibration.json was cut short",
    lambda root, w, t: [
      "predict",
      f"--workdir={torn(w, t, files.CALIBRATION)}",
      f"--images={root}",
      f"--out={t / 'p'}",
    ],
    6,
    r"calibration\.json is not the JSON a run writes",
  ),
  Probe("an unknown command", lambda root, w, t: ["trian"], 2, r"unknown command 'trian'"),
  Probe(
    "a flag of another command",
    lambda root, w, t: ["predict", f"--workdir={w}", f"--images={root}", "--config=configs/synthetic.py"],
    2,
    r"Unknown command line flag 'config'",
  ),
]


def written(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_text(text)
  return path


def torn(workdir: pathlib.Path, tmp_path: pathlib.Path, name: str) -> pathlib.Path:
  """A copy of the workdir with its file `name` cut to half."""
  copy = tmp_path / "torn"
  shutil.copytree(workdir, copy)
  text = (copy / name).read_text()
  (copy / name).write_text(text[: len(text) // 2])
  return copy


def without_checkpoints(workdir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  copy = tmp_path / "untrained"
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(files.CHECKPOINTS))
  return copy


def one_class(data_root: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  root = copy_data(data_root, tmp_path)
  for folder in (root / "AeBAD_S" / "test").glob("*/view"):
    if folder.parent.name != "good":
      shutil.rmtree(folder)
  return root


def with_undecodable_name(data_root: pathlib.Path, tmp_path: pathlib.Path, folder: str) -> pathlib.Path:
  root = copy_data(data_root, tmp_path)
  source = next((root / folder).rglob("*.png"))
  os.rename(bytes(source), bytes(source.parent) + b"/latin\xff.png")  # A Latin-1 name on a UTF-8 system.
  return root


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe(probe, data_root, trained, tmp_path, capsys):
  before = snapshot(trained)
  code, err = run(probe.argv(data_root, trained, tmp_path), capsys)
  assert_one_line_error(code, err, probe.code, probe.pattern)
  assert snapshot(trained) == before
  assert not list((tmp_path / "w" / files.CHECKPOINTS).glob("*"))  # Refused before any work: nothing saved.


def test_a_workdir_or_an_out_in_use_is_refused(data_root, trained, tmp_path, capsys):
  before = snapshot(trained)
  out = tmp_path / "predictions"
  for folder, argv in (
    (trained, ["train", *flags_of(data_root), f"--workdir={trained}"]),
    (out, ["predict", f"--workdir={trained}", f"--images={data_root}", f"--out={out}"]),
  ):
    with lock.WorkdirLock(folder):  # Another descriptor: the flock conflicts as another process's would.
      code, err = run(argv, capsys)
    assert_one_line_error(code, err, 6, r"is in use by pid \d+")
  assert snapshot(trained) == before and not (out / files.SCORES).exists()


def test_a_full_disk_while_checkpointing_keeps_what_was_saved(data_root, tmp_path, capsys):
  with mounted(tmp_path, "size=600k") as disk:
    code, err = run(["train", *flags_of(data_root), f"--workdir={disk / 'w'}"], capsys)
    assert_one_line_error(
      code, err, 6, r"checkpoint of epoch 0 could not be written .*the disk is full.*rerun the same"
    )
    assert not list((disk / "w" / files.CHECKPOINTS).iterdir())  # No partial checkpoint left to trip a resume.


def test_read_only_folders_are_named(data_root, trained, tmp_path, capsys, monkeypatch):
  with mounted(tmp_path, "ro") as read_only:
    code, err = run(["train", *flags_of(data_root), f"--workdir={read_only / 'w'}"], capsys)
    assert_one_line_error(code, err, 6, r"--workdir=.* cannot be written \(the file system is read-only")
    code, err = run(["predict", f"--workdir={trained}", f"--images={data_root}", f"--out={read_only}"], capsys)
    assert_one_line_error(code, err, 6, r"--out=.* cannot be written \(the file system is read-only")
    monkeypatch.setenv("MMR_JAX_CACHE", str(read_only))  # Where the pretrained teacher is converted on first use.
    flags = flags_of(data_root, **{"model.teacher": "efficientnet_lite0", "init.teacher": "efficientnet_lite0"})
    code, err = run(["train", *flags, f"--workdir={tmp_path / 'w'}"], capsys)
    assert_one_line_error(
      code, err, 4, r"cannot keep the converted efficientnet_lite0 weights .* read-only.*MMR_JAX_CACHE"
    )


def test_predicted_files_never_share_an_output_name(trained, tmp_path):
  """x.png and x.jpg, a/b.png and a__b.png: four images, four overlays, four maps, named by their relative paths."""
  folder = tmp_path / "photos"
  (folder / "a").mkdir(parents=True)
  rng = np.random.default_rng(0)
  for name in ("x.png", "x.jpg", "a/b.png", "a__b.png"):
    Image.fromarray(rng.integers(0, 255, (70, 70, 3), dtype=np.uint8)).save(folder / name)
  model = inference.TrainedModel(trained)
  image_files, base = inference.list_images(str(folder))
  out = tmp_path / "out"
  summary = inference.predict_files(model, image_files, base, out, save_maps=True, show_progress=False)
  assert summary.scored == 4
  for kind, suffix in ((files.HEATMAPS, ".png"), (files.MAPS, ".npy")):
    written = sorted(str(p.relative_to(out / kind)) for p in (out / kind).rglob(f"*{suffix}"))
    assert written == sorted(f"{name}{suffix}" for name in ("x.png", "x.jpg", "a/b.png", "a__b.png"))


def test_exif_orientation_turns_images_and_masks_as_a_viewer_shows_them(tmp_path):
  """A JPEG stored as landscape pixels with Orientation=6 (turn 90° clockwise to view): decoded as a viewer shows it,
  so a mask drawn on the viewed image lies on its pixels."""
  stored = np.zeros((40, 60, 3), np.uint8)
  stored[:10, :20] = 255  # A bright block top-left in the stored pixels: top-right once turned for viewing.
  exif = Image.Exif()
  exif[images.EXIF_ORIENTATION] = 6
  path = tmp_path / "turned.jpg"
  Image.fromarray(stored).save(path, exif=exif, quality=95)
  viewed = images.decode_rgb(str(path))
  assert viewed.shape == (60, 40, 3)
  assert viewed[:20, -10:].mean() > 200 and viewed[-20:, :10].mean() < 50
  assert images.facts(str(path)).orientation == 6
  assert images.facts(str(path)).size == (60, 40)  # As stored: the check names the tag.


def test_a_run_stopped_after_its_results_completes_its_report_without_training(data_root, trained, tmp_path):
  """results.json written, report.html not (a kill, a full disk, a crash in the report), then results.json torn:
  each rerun finishes the end from the last checkpoint, trains nothing, and gives the same results."""
  workdir = tmp_path / "stopped"
  shutil.copytree(trained, workdir)
  checkpoints = snapshot(workdir / files.CHECKPOINTS)
  results = (workdir / files.RESULTS).read_text()
  config = test_training.tiny_config(data_root, **TRAINED)
  (workdir / files.REPORT).unlink()
  experiment.train(config, workdir)
  assert (workdir / files.REPORT).exists() and (workdir / files.RESULTS).read_text() == results
  finished = snapshot(workdir)
  experiment.train(config, workdir)  # Now finished: nothing to do.
  assert snapshot(workdir) == finished
  (workdir / files.RESULTS).write_text(results[: len(results) // 2])  # Torn: not JSON.
  experiment.train(config, workdir)
  assert (workdir / files.RESULTS).read_text() == results
  assert snapshot(workdir / files.CHECKPOINTS) == checkpoints
  log = (workdir / files.METRICS).read_text()
  assert log.count('"eval/mean/image_auroc"') == 1  # The evaluation's record once, not once per rerun.


def test_help_answers_at_once_for_every_command(capsys):
  for name in cli.COMMANDS:
    with pytest.raises(SystemExit) as exit_:
      cli.main(argv=[name, "--help"])
    assert exit_.value.code == 0 and "Flags:" in capsys.readouterr().out
