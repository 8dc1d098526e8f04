"""report.html: which images it overlays, its figures, and that a browser loads every image on it."""

import html
import re
import shutil
import subprocess

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from mmr_jax import scoring
from mmr_jax import figures
from mmr_jax import metrics
from mmr_jax import report_page
from mmr_jax.data import pipeline
from tests import data_fixtures as fx


def test_picks_show_the_false_positives_the_misses_and_typical_images():
  kinds = np.array(["good"] * 5 + ["crack"] * 3 + ["ablation"] * 4, dtype=object)
  scores = np.array([0.1, 0.9, 0.3, 0.9, 0.2, 0.5, 0.4, 0.6, 0.8, 0.7, 0.75, 0.1])
  picks = figures.pick_examples(scores, kinds, per_kind=2)
  assert [(p.index, p.why) for p in picks] == [
    (1, "highest-scoring normal"),
    (2, "typical normal"),  # 1 and 3 tie at 0.9: eval order decides.
    (11, "lowest-scoring ablation"),
    (10, "typical ablation"),
    (6, "lowest-scoring crack"),
    (5, "typical crack"),
  ]
  assert [p.index for p in figures.pick_examples(scores, kinds, per_kind=3)][:3] == [1, 2, 3]
  assert len(figures.pick_examples(scores, kinds, per_kind=10)) == len(scores)  # Each image once at most.


def test_roc_curve_is_sklearns_and_its_area_is_the_auroc():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 200)
  scores = np.round(rng.normal(size=200) + labels, 1)  # Rounded: many ties.
  fpr, tpr = metrics.roc_curve(scores, labels)
  sk_fpr, sk_tpr, _ = sk_metrics.roc_curve(labels, scores, drop_intermediate=False)
  np.testing.assert_allclose(fpr, sk_fpr)
  np.testing.assert_allclose(tpr, sk_tpr)
  np.testing.assert_allclose(np.trapezoid(tpr, fpr), metrics.image_auroc(scores, labels))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  """A report written from scores made up for a tiny AeBAD-S copy with two defect types in each domain; K = 2
  seeds, so the table is mean ± std and the figures are seed 0's."""
  root = fx.make_aebad_s(tmp_path_factory.mktemp("data"))
  for domain in ("same", "view"):
    for i in range(2):
      fx.write_image(root / "AeBAD_S" / "test" / "crack" / domain / f"{i:03d}.png", seed=300 + i)
      fx.write_mask(root / "AeBAD_S" / "ground_truth" / "crack" / domain / f"{i:03d}.png", box=(4, 4, 12, 30))
  config = fx.config_for("aebad_s", root)
  config.eval.heatmaps_per_kind = 2
  rng = np.random.default_rng(1)
  page = report_page.Report(config)
  per_seed = [{}, {}]
  for subset in ("same", "view"):
    batches = list(pipeline.eval_batches(config, subset))
    valid = np.concatenate([b["valid"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])[valid]
    maps = rng.random((2, labels.size, 32, 32)).astype(np.float32) + labels[None, :, None, None]
    page.add(
      subset,
      scoring.Predictions(
        maps=maps,
        scores=maps.max(axis=(2, 3)),
        masks=np.concatenate([b["mask"] for b in batches])[valid],
        labels=labels,
        names=np.concatenate([b["name"] for b in batches])[valid],
        kinds=np.concatenate([b["kind"] for b in batches])[valid],
      ),
    )
    for k in range(2):
      per_seed[k][subset] = {"image_auroc": 0.9 + 0.01 * k, "pixel_auroc": 0.95, "pro": 0.8, "aupro": 0.7}
  workdir = tmp_path_factory.mktemp("run")
  return page.write(workdir, [54, 55], per_seed, header="MMR on aebad_s (test)"), config


def test_the_page_overlays_every_kind_of_image_in_every_domain(report):
  path, config = report
  text = path.read_text()
  alts = [html.unescape(a) for a in re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]*)"', text)]
  overlays = [a for a in alts if " · score " in a]
  for subset in ("same", "view"):
    for kind, why in (
      ("good", "highest-scoring normal"),
      ("groove", "lowest-scoring groove"),
      ("crack", "lowest-scoring crack"),
      ("crack", "typical crack"),
    ):
      assert any(a.startswith(f"{subset} · AeBAD_S/test/{kind}/{subset}/") and a.endswith(why) for a in overlays), (
        subset,
        kind,
        why,
        overlays,
      )
  assert len(overlays) == 2 * 3 * 2  # Two domains, three kinds, two each.
  assert "image scores per domain" in alts and "score distributions and ROC curves per subset" in alts
  assert "90.5 ± 0.7" in text  # The mean ± std over the two seeds.
  assert "One colour scale for the whole run" in text and "&quot;heatmaps_per_kind&quot;: 2" in text
  for package in ("jax", "flax", "orbax-checkpoint"):
    assert f"<th>{package}</th>" in text
  run = path.parent
  assert sorted(p.name for p in (run / "figures").iterdir()) == ["domains.png", "score_distributions.png"]
  assert len(list((run / "heatmaps").rglob("*.png"))) == len(overlays)


def _chromium() -> str | None:
  return next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
  )


def test_a_headless_browser_loads_every_image_on_the_page(report, tmp_path):
  browser = _chromium()
  if browser is None:
    pytest.skip(
      "no Chromium on this machine (.ci/run installs Debian's `chromium` where it can): the page's "
      "images are not checked in a browser"
    )
  path, _ = report
  # The page, plus a script that records on <body> how many of its images the browser decoded once loaded.
  probe = tmp_path / "probe.html"
  probe.write_text(
    path.read_text().replace(
      "</body>",
      """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0);
  document.body.setAttribute("data-images", loaded.length + "/" + images.length);
});
</script></body>""",
    )
  )
  result = subprocess.run(
    [
      browser,
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      f"--user-data-dir={tmp_path / 'profile'}",
      "--virtual-time-budget=10000",
      "--dump-dom",
      probe.as_uri(),
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  counts = re.search(r'data-images="(\d+)/(\d+)"', result.stdout)
  assert counts, result.stderr[-2000:]
  loaded, total = map(int, counts.groups())
  assert total == 14 and loaded == total  # 12 overlays and 2 figures.
