"""The accelerator extras resolve with the project's pins: what `pip install -e ".[cuda]"` and `".[tpu]"` would
install on a GPU host or a TPU VM (README, "On a GPU or a TPU"), resolved here without installing anything."""

import json
import pathlib
import re
import subprocess
import sys

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later.
REPO = pathlib.Path(__file__).parents[1]


def normalised(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503.


def test_the_cuda_and_tpu_extras_resolve_with_the_pinned_jax(tmp_path):
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  extras = project["optional-dependencies"]
  # The project's own requirements plus both extras, resolved together: the same resolution as `pip install
  # --dry-run -e ".[cuda,tpu]"` without building the project itself.
  requirements = [*project["dependencies"], *extras["cuda"], *extras["tpu"]]
  report = tmp_path / "report.json"
  result = subprocess.run(
    [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
    + requirements,
    capture_output=True,
    text=True,
    timeout=600,
  )
  if result.returncode != 0 and any(word in result.stderr for word in ("NewConnectionError", "Temporary failure")):
    pytest.skip(f"the package index cannot be reached: {result.stderr.strip().splitlines()[-1]}")
  assert result.returncode == 0, result.stderr[-3000:]
  installs = json.loads(report.read_text())["install"]
  resolved = {normalised(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}
  jax = next(r.split("==")[1] for r in project["dependencies"] if r.startswith("jax=="))
  for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt"):
    assert resolved[name] == jax, (name, resolved.get(name))
  assert "libtpu" in resolved
  for pin in project["dependencies"]:  # Every pin of the project holds beside the extras.
    name, version = pin.split("==")
    assert resolved[normalised(name)] == version, pin
