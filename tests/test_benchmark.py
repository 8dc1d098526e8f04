"""The benchmark and the scaling sweep: analytic FLOPs, a real (tiny) run of each command, the bfloat16 option.

Speed itself is never asserted: it is what the benchmark's printed figures show.
"""

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import aebad_s
from configs import synthetic
from configs.scaling import vit_b_320
from configs.scaling import vit_l
from configs.scaling import vit_s
from mmr_jax import objectives
from mmr_jax import sweep
from mmr_jax.benchmark import flops
from mmr_jax.models import mmr
from mmr_jax.models import teachers
from mmr_jax.training import sharding
from mmr_jax.training import steps

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The commands run on a one-block micro model at batch 4 with a small matmul probe.
TINY = ["--config=configs/synthetic.py", "--config.model.vit.depth=1", "--warmup=0", "--probe_sizes=256"]
# XLA's CPU compile time is almost all LLVM optimisation of elementwise kernels: these tests check what the
# commands compute, not how fast, so they compile unoptimised.
UNOPTIMISED = "--xla_backend_optimization_level=0"
SIMULATED_DEVICES = 2


@pytest.fixture(scope="module")
def command_env(tmp_path_factory):
  return {
    **os.environ,
    "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "XLA_FLAGS": UNOPTIMISED,
  }


def run_command(env: dict, command: str, *args: str) -> subprocess.CompletedProcess:
  result = subprocess.run(
    [sys.executable, "-m", "mmr_jax", command, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.parametrize("visible_tokens,published_gflop", [(117, 21.0), (196, 35.1)])
def test_vit_b16_flops_match_published_counts(visible_tokens, published_gflop):
  count = flops.encoder_flops(768, 12, 4.0, 16, visible_tokens)
  assert count / 1e9 == pytest.approx(published_gflop, rel=0.02)


def test_wide_resnet50_2_flops_to_layer3_match_published_count():
  # torchvision's 11.4 GMAC for the whole network, less layer4 and fc (2.2 GMAC): 18.4 GFLOP.
  count = flops.teacher_flops(teachers.spec("wide_resnet50_2"), 224)
  assert count / 1e9 == pytest.approx(18.4, rel=0.02)


def test_training_and_inference_flops_add_up():
  f = flops.analytic_flops(aebad_s.get_config())
  assert f["train"] == f["teacher"] + 3 * (f["encoder_train"] + f["fpn"])
  assert f["infer"] == f["teacher"] + f["encoder_infer"] + f["fpn"] + f["anomaly_map"]
  # Scaling configs grow the student or the image as they should.
  scaled = {
    name: flops.analytic_flops(module.get_config()) for name, module in (("S", vit_s), ("L", vit_l), ("320", vit_b_320))
  }
  assert scaled["S"]["encoder_infer"] < f["encoder_infer"] < scaled["L"]["encoder_infer"]
  assert scaled["320"]["teacher"] == pytest.approx(f["teacher"] * (320 / 224) ** 2, rel=0.03)


def test_benchmark_and_sweep_import_no_tensorflow():
  code = "import sys, mmr_jax.benchmark, mmr_jax.sweep; print('tensorflow' in sys.modules)"
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "False"


def test_sweep_writes_csv_and_plot(tmp_path, command_env):
  run_command(
    command_env,
    "sweep",
    *TINY,
    "--batch_sizes=4",
    f"--devices=1,{SIMULATED_DEVICES}",
    "--steps=1",
    f"--out={tmp_path}",
  )
  with (tmp_path / "sweep.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert sorted((int(r["devices"]), int(r["batch_size"])) for r in rows) == [(1, 4), (SIMULATED_DEVICES, 4)]
  for row in rows:
    assert float(row["train_img_per_s"]) > 0 and float(row["train_fraction_of_f32_peak"]) > 0
  assert (tmp_path / "sweep.png").stat().st_size > 0
  # Each point is a `python -m mmr_jax benchmark --json` child: its report has every figure.
  report = json.loads((tmp_path / "points" / "devices1_batch4.json").read_text())
  assert report["config"]["depth"] == 1 and report["config"]["batch_size"] == 4 and report["num_devices"] == 1
  for key in (
    "train_img_per_s",
    "infer_img_per_s",
    "train_compile_s",
    "infer_compile_s",
    "peak_memory_bytes",
    "train_flop_per_s",
    "infer_flop_per_s",
    "peak_f32_flop_per_s",
    "peak_bf16_flop_per_s",
    "train_fraction_of_f32_peak",
    "infer_fraction_of_f32_peak",
    "train_fraction_of_bf16_peak",
  ):
    assert report[key] > 0, key
  assert len(report["train_step_all_s"]) == 1
  config = synthetic.get_config()
  config.model.vit.depth = 1
  assert report["flops_per_image"] == pytest.approx(flops.analytic_flops(config))
  assert report["jax_version"] == jax.__version__ and report["device_kind"]


def test_sweep_passes_config_overrides_on():
  argv = [
    "--config=configs/synthetic.py",
    "--batch_sizes=8",
    "--config.model.compute_dtype",
    "bfloat16",
    "--config.seed=3",
    "--out=x",
  ]
  assert sweep.config_arguments(argv) == [
    "--config=configs/synthetic.py",
    "--config.model.compute_dtype=bfloat16",
    "--config.seed=3",
  ]


def host_random_params(module) -> dict:
  """Parameters of the right shapes drawn in NumPy (compiling the initialisers would take longer than the test):
  kernels ~ N(0, 1/fan_in), vectors (norm scales and shifts, BN statistics) in [0.5, 1.5]."""
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(lambda key: module.init(key, jnp.zeros((1, 64, 64, 3)))["params"], jax.random.key(0))
  draw = lambda s: (
    rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    if len(s.shape) > 1
    else rng.uniform(0.5, 1.5, size=s.shape)
  )
  return jax.tree_util.tree_map(lambda s: jnp.asarray(draw(s), jnp.float32), shapes)


def test_bfloat16_features_stay_close_to_float32():
  """bf16 operands with f32 accumulation: features within bf16's expected error; params, features, loss f32."""
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(1, 4, 64, 64, 3)).astype(np.float32))
  mesh = sharding.make_mesh(1)
  outputs = {}
  for dtype in ("float32", "bfloat16"):
    config = synthetic.get_config()
    config.model.compute_dtype = dtype
    student, teacher = mmr.build_student(config.model, "native"), mmr.build_teacher(config.model, "native")
    student_params, teacher_params = host_random_params(student), host_random_params(teacher)
    teacher_features = steps.make_teacher_fn(teacher, mesh)(teacher_params, images)
    features = jax.jit(lambda p, x: student.apply({"params": p}, x, 0.0))(student_params, images[0])
    outputs[dtype] = (
      teacher_features,
      features,
      objectives.reconstruction_loss([t[0] for t in teacher_features], features)[0],
    )
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(student_params))
  pairs = zip(jax.tree_util.tree_leaves(outputs["float32"][:2]), jax.tree_util.tree_leaves(outputs["bfloat16"][:2]))
  for f32, bf16 in pairs:
    assert bf16.dtype == jnp.float32
    relative = float(jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32))
    assert 1e-5 < relative < 2e-2  # Not identical (bf16 really is used), but within bf16's error.
  assert outputs["bfloat16"][2].dtype == jnp.float32
  assert float(outputs["bfloat16"][2]) == pytest.approx(float(outputs["float32"][2]), rel=2e-2)


def test_published_torch_forms_compute_what_the_lean_port_computes():
  """The PyTorch baseline's published execution forms cost time, not results: same features, same loss."""
  torch = pytest.importorskip("torch")
  sys.path.insert(0, str(ROOT / "tools"))
  try:
    import benchmark_torch
    import torch_mmr
  finally:
    sys.path.remove(str(ROOT / "tools"))
  torch.manual_seed(0)
  lean_teacher = torch_mmr.ResNetTeacher("resnet18").double().eval()
  whole_teacher = benchmark_torch.WholeNetworkTeacher("resnet18").double().eval()
  lean_teacher.load_state_dict(
    {k: v for k, v in whole_teacher.state_dict().items() if not k.startswith(("layer4.", "fc."))}
  )
  student = torch_mmr.MMRStudent(width=64, depth=1, num_heads=2, image_size=64, fpn_channels=(64, 128, 256))
  student = student.double()
  for p in student.parameters():  # Non-trivial LayerNorm affines, so that a lost weight or bias would show.
    p.data.normal_(0.0, 0.5)
  images, noise = torch.randn(2, 3, 64, 64, dtype=torch.float64), torch.rand(2, 16, dtype=torch.float64)
  with torch.no_grad():
    lean_features = student(images, 0.25, noise)
    lean_loss = torch_mmr.mmr_loss(lean_teacher(images), lean_features)[0]
    benchmark_torch.use_detectron2_layernorms(student)
    assert any(isinstance(m, benchmark_torch.Detectron2ChannelLayerNorm) for m in student.modules())
    published_features = student(images, 0.25, noise)
    published_loss = benchmark_torch.published_loss(whole_teacher(images), published_features)
  for lean, published in zip(lean_features, published_features):
    torch.testing.assert_close(published, lean, rtol=1e-12, atol=1e-12)
  assert float(published_loss) == pytest.approx(float(lean_loss), rel=1e-12)


def test_the_accelerator_check_runs_every_step_on_the_cpu(tmp_path):
  """tools/accelerator_check.py at a small size: every figure it prints comes out (the GPU run is the note's)."""
  out = tmp_path / "check"
  command = [
    sys.executable,
    str(ROOT / "tools" / "accelerator_check.py"),
    "--config=configs/synthetic.py",
    "--override=--config.model.vit.depth=1",
    "--override=--config.data.image_size=64",
    "--override=--config.model.vit.width=128",
    "--override=--config.model.vit.num_heads=2",
    "--batch=4",
    "--max_batch=4",
    "--steps=1",
    "--probe_sizes=256",
    f"--out={out}",
  ]
  env = {**os.environ, "XLA_FLAGS": UNOPTIMISED}  # Its children compile unoptimised too (above).
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = (out / "summary.txt").read_text()
  for dtype in ("float32", "bfloat16"):
    assert re.search(
      rf"{dtype} on cpu: train [\d.]+ img/s \(\d+ % of peak\), inference [\d.]+ img/s; 4 seeds in one "
      rf"program: train [\d.]+×, inference [\d.]+×",
      summary,
    ), summary
  assert "largest training batch that runs (float32, doubling from 4 to at most 4): 4" in summary
  assert re.search(r"training transform from 4 MP originals: [\d.]+ img/s per core", summary), summary
  assert summary.count("32 passed, 0 failed (exit 0)") == 2, summary
