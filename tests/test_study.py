"""`python -m mmr_jax study`: a grid of ordinary runs, each skipped once finished; study.csv and study.html collect
them. A study killed part-way and rerun completes without retraining its finished points."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import common
from configs import synthetic
from mmr_jax import cli
from mmr_jax import config as config_lib
from mmr_jax import study
from mmr_jax.models import vit
from tests import test_training


def test_the_grid_its_points_and_their_share():
  grid = study.parse_grid(["model.vit.depth=1,2", "data.image_size=96,128,160"])
  points = study.grid_points(grid)
  assert [p.name for p in points[:2]] == [
    "model.vit.depth=1,data.image_size=96",
    "model.vit.depth=1,data.image_size=128",
  ]
  assert len(points) == 6 and study.share(points, "1/4") == [points[1], points[5]]
  assert sorted(p.name for i in range(4) for p in study.share(points, f"{i}/4")) == sorted(p.name for p in points)
  for bad, message in (
    (["depth"], "write KEY=v1,v2"),
    (["a=1", "a=2"], "names a twice"),
    (["a=1,,2"], "write KEY=v1,v2"),
  ):
    with pytest.raises(study.StudyError, match=message):
      study.parse_grid(bad)
  with pytest.raises(study.StudyError, match="i must lie in"):
    study.share(points, "4/4")


def test_a_points_config_takes_the_keys_types_and_named_sizes():
  base = synthetic.get_config()
  grid = study.parse_grid(
    ["model.vit=S", "model.vit.depth=2", "optim.lr=3e-4", "data.hflip_prob=0", "data.image_size=96"]
  )
  config = study.point_config(base, study.grid_points(grid)[0])
  assert (config.model.vit.width, config.model.vit.num_heads, config.model.vit.depth) == (384, 6, 2)
  assert config.optim.lr == 3e-4 and config.data.hflip_prob == 0.0
  assert (base.data.image_size, base.data.resize_size, config.data.resize_size) == (160, 183, 110)  # 256/224 kept.
  assert vit.SIZES == {name: size for name, size in common.VIT_SIZES.items() if name in vit.SIZES}
  for spec, message in (
    ("model.vit=XL", "not a named size"),
    ("model.vit.depht=2", "no key model.vit.depht"),
    ("num_epochs=many", "is not a int"),
    ("data.image_size=100", "multiple of the patch size"),
  ):
    with pytest.raises(study.StudyError, match=message):
      study.point_config(base, study.grid_points(study.parse_grid([spec]))[0])
  assert config_lib.validate(base) is base  # The base is left as it was.


def test_a_killed_study_completes_without_retraining_its_finished_points(
  data_root, tmp_path, compilation_cache, capsys
):
  overrides = [
    f"--config.{k}={','.join(v) if isinstance(v, tuple) else v}"
    for k, v in test_training.tiny_overrides(data_root).items()
    if k != "num_epochs"
  ]
  workdir = tmp_path / "study"
  command = [
    sys.executable,
    "-m",
    "mmr_jax",
    "study",
    "--config=configs/synthetic_random_teacher.py",
    "--config.data.synthetic=False",
    *overrides,
    "--grid=num_epochs=1,2",
    f"--workdir={workdir}",
  ]
  env = {**os.environ, "MMR_JAX_COMPILE_CACHE": str(compilation_cache)}
  process = subprocess.Popen(
    command, cwd=test_training.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
  )
  first = workdir / "num_epochs=1"
  deadline = time.time() + 300
  while not (first / "report.html").exists() and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert (first / "results.json").exists(), process.stderr.read().decode()[-3000:]
  # Every file of the finished point but its lock, which each run on the workdir takes.
  finished = {path: path.stat().st_mtime_ns for path in first.rglob("*") if path.is_file() and path.name != ".lock"}
  assert cli.run(command[3:]) == 0  # The same command again, in this process.
  assert "2 point(s) finished" in capsys.readouterr().out
  assert {path: path.stat().st_mtime_ns for path in finished} == finished  # Point 1 was not touched again.
  with open(workdir / study.TABLE) as handle:
    rows = list(csv.DictReader(handle))
  assert [row["num_epochs"] for row in rows] == ["1", "2"]
  for row in rows:
    assert int(row["parameters"]) > 0 and float(row["train_gflop_per_image"]) > float(row["test_gflop_per_image"]) > 0
    assert float(row["train_pflop_per_seed"]) > 0 and float(row["train_images_per_second"]) > 0
    assert 0 <= float(row["image_auroc/mean"]) <= 1 and float(row["train_seconds"]) > 0
  assert float(rows[1]["wall_seconds"]) > 0  # Point 2 finished in the second call, on the study's clock.
  assert float(rows[1]["train_pflop_per_seed"]) == pytest.approx(2 * float(rows[0]["train_pflop_per_seed"]))
  page = (workdir / study.PAGE).read_text()
  assert page.count("data:image/png;base64,") == 2 and "num_epochs=2" in page
