"""results.json and results.md: raw values, the published rounding, the paper's layout."""

import json

import numpy as np

from mmr_jax import reports


def _row(image_auroc, pro):
  return {"image_auroc": image_auroc, "pixel_auroc": 0.97, "pro": pro, "aupro": 0.9}


def test_results_keep_raw_values_and_add_the_published_rounding(tmp_path):
  """The published evaluation rounds image AUROC and PRO per subset to 3 decimals (NumPy's rounding of its
  float64s) and the paper's mean is the mean of those: here 84.5 where the raw mean gives 84.6."""
  per_subset = {"same": _row(0.8445, 0.9004), "view": _row(0.8474, 0.8996)}
  top = reports.write_results(tmp_path, [54], [per_subset])
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk == top
  assert on_disk["same"]["image_auroc"] == 0.8445  # Raw, unchanged.
  assert on_disk["same"]["image_auroc_rounded"] == 0.844  # Not Python's 0.845.
  assert on_disk["view"]["image_auroc_rounded"] == 0.847
  np.testing.assert_allclose(on_disk["mean"]["image_auroc"], 0.84595)
  np.testing.assert_allclose(on_disk["mean"]["image_auroc_rounded"], 0.8455)
  np.testing.assert_allclose(on_disk["mean"]["pro_rounded"], 0.900)
  assert "pixel_auroc_rounded" not in on_disk["same"]  # The published code does not round it.
  table = (tmp_path / "results.md").read_text()
  image_row = next(line for line in table.splitlines() if line.startswith("| Image AUROC"))
  assert image_row == "| Image AUROC | 84.4 | 84.7 | 84.5 |"


def test_seed_statistics_are_over_the_rounded_values(tmp_path):
  runs = [{"same": _row(0.8445, 0.9)}, {"same": _row(0.8466, 0.9)}]
  top = reports.write_results(tmp_path, [54, 55], runs)
  np.testing.assert_allclose(top["same"]["image_auroc_rounded"], (0.844 + 0.847) / 2)
  assert "84.5 ± 0.2" in (tmp_path / "results.md").read_text()
  assert json.loads((tmp_path / "seed_55" / "results.json").read_text())["same"]["image_auroc_rounded"] == 0.847
