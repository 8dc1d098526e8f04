"""The shape of the package: imports flow one way (tools/check_imports.py), and every module imports on its own."""

import importlib.util
import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).parents[1]


def _checker():
  spec = importlib.util.spec_from_file_location("check_imports", REPO / "tools" / "check_imports.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_imports_flow_one_way_the_models_read_no_host_and_the_configs_import_no_library():
  checker = _checker()
  assert checker.violations(REPO / "mmr_jax") == []
  assert checker.host_reads(REPO / "mmr_jax") == []
  assert checker.config_imports(REPO / "configs") == []


def _copy_with(tmp_path, name, module, line):
  package = tmp_path / name / "mmr_jax"
  shutil.copytree(REPO / "mmr_jax", package, ignore=shutil.ignore_patterns("__pycache__"))
  with open(package / module, "a") as handle:
    handle.write(line)
  return package


def test_the_check_fails_on_an_upward_import_and_on_a_cycle(tmp_path):
  checker = _checker()
  upward = _copy_with(
    tmp_path,
    "upward",
    "models/layers.py",
    "\n\ndef _late():\n  from mmr_jax import experiment  # Deferred, and still upward.\n",
  )
  expected = "upward import: mmr_jax.models.layers (models) imports mmr_jax.experiment (a run)"
  assert expected in checker.violations(upward)
  cycle = _copy_with(tmp_path, "cycle", "data/images.py", "\nfrom mmr_jax.data import pipeline\n")
  problems = checker.violations(cycle)
  assert len(problems) == 1 and problems[0].startswith("import cycle: mmr_jax.data.images → "), problems
  assert "mmr_jax.data.pipeline" in problems[0]
  result = subprocess.run(
    [sys.executable, str(REPO / "tools" / "check_imports.py"), f"--package_dir={upward}"],
    capture_output=True,
    text=True,
  )
  assert result.returncode == 1 and "upward import" in result.stdout


def test_the_check_fails_where_a_model_reads_the_host_or_a_config_imports_the_library(tmp_path):
  checker = _checker()
  package = _copy_with(tmp_path, "host", "models/layers.py", "\n\ndef _late():\n  return jax.default_backend()\n")
  assert any(
    p.startswith("host read: mmr_jax/models/layers.py:") and "jax.default_backend" in p
    for p in checker.host_reads(package)
  )
  package = _copy_with(tmp_path, "cpuinfo", "models/fpn.py", "\nimport pathlib\n")
  assert "host read: mmr_jax/models/fpn.py imports pathlib" in checker.host_reads(package)
  configs = tmp_path / "configs"
  shutil.copytree(REPO / "configs", configs, ignore=shutil.ignore_patterns("__pycache__"))
  with open(configs / "common.py", "a") as handle:
    handle.write("\nfrom mmr_jax.training import optimizer\n")
  assert checker.config_imports(configs) == ["config import: configs/common.py imports mmr_jax.training.optimizer"]


def test_every_module_imports_in_a_fresh_interpreter():
  names = sorted(_checker().module_names(REPO / "mmr_jax"))
  script = (
    "import importlib, sys\nfor name in sys.argv[1:]:\n  importlib.import_module(name)\n"
    "print('imported', len(sys.argv) - 1)"
  )
  result = subprocess.run([sys.executable, "-c", script, *names], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split()[-1] == str(len(names))
