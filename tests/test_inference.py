"""From a trained workdir to decisions: the held-out calibration set, its threshold and normalisation, predict's
scores (the same as evaluate's), its resumable outputs, and the exported models (jax.export without the project,
SavedModel, TFLite) agreeing with the native function."""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from mmr_jax import adaptation
from mmr_jax import calibration
from mmr_jax import cli
from mmr_jax import evaluation
from mmr_jax import experiment
from mmr_jax import export
from mmr_jax import files
from mmr_jax import inference
from mmr_jax import metrics
from mmr_jax.data import images
from mmr_jax.data import preprocess
from mmr_jax.data import sources
from mmr_jax.models import mmr

REPO = pathlib.Path(__file__).parents[1]


@pytest.fixture(scope="module")
def config(calibrated_run):
  return calibrated_run[0]


@pytest.fixture(scope="module")
def workdir(calibrated_run):
  return calibrated_run[1]


@pytest.fixture(scope="module")
def model(workdir):
  return inference.TrainedModel(workdir)


def test_held_out_images_are_never_trained_on_and_fixed_by_their_names(config):
  trained, held = sources.train_set(config), sources.calibration_set(config)
  trained_names = {e.name for e in trained.examples}
  held_names = {e.name for e in held.examples}
  assert len(held_names) == 2 and len(trained_names) == 6 and not trained_names & held_names
  assert trained.shapes.shape == (6, 2) and len(held.pixels) == 2
  with config.unlocked():
    config.seed = 99  # Another seed holds out the same images.
  try:
    assert {e.name for e in sources.calibration_set(config).examples} == held_names
  finally:
    with config.unlocked():
      config.seed = 54
  assert sources.calibration_count(320, 0.1) == 32 and sources.calibration_count(8, 0.01) == 1
  assert sources.calibration_count(8, 0.0) == 0 and sources.calibration_count(2, 0.9) == 1


def test_the_threshold_flags_at_most_the_asked_fraction_of_held_out_normals():
  scores = np.random.default_rng(0).normal(1.0, 0.1, 1000)
  c = calibration.Calibration(np.sort(scores), 0.01, 0.1)
  assert c.held_out_fpr() == pytest.approx(0.01, abs=1e-9)  # 1000 normals resolve 1 % exactly.
  assert np.sum(scores > c.threshold) == 10 and np.sum(scores >= c.threshold) == 11
  assert c.normalise(np.array([c.threshold, c.centre]))[0] == pytest.approx(0.5)
  assert c.normalise(np.array([c.centre]))[0] == pytest.approx(0.0)
  few = calibration.Calibration(np.sort(scores[:32]), 0.01, 0.1)
  assert few.threshold == scores[:32].max() and few.held_out_fpr() == 0.0 and "their maximum" in few.describe()
  with pytest.raises(ValueError, match="false-positive rate"):
    calibration.threshold_at_fpr(scores, 0.0)


def test_decisions_at_a_threshold_and_the_f1_optimum_agree_with_sklearn():
  rng = np.random.default_rng(1)
  labels = rng.random(200) < 0.3
  scores = rng.normal(labels * 1.0, 1.0).round(1)  # Rounded: many ties.
  got = metrics.decisions_at(scores, labels, 0.5)
  flagged = scores > 0.5
  assert got["fpr_at_threshold"] == pytest.approx(np.mean(flagged[~labels]))
  assert got["tpr_at_threshold"] == pytest.approx(np.mean(flagged[labels]))
  assert got["f1_at_threshold"] == pytest.approx(sk_metrics.f1_score(labels, flagged))
  best = max(sk_metrics.f1_score(labels, scores > t) for t in np.unique(scores))
  best = max(best, sk_metrics.f1_score(labels, np.ones_like(labels)))
  assert got["f1_best"] == pytest.approx(best)
  assert sk_metrics.f1_score(labels, scores > got["f1_best_threshold"]) == pytest.approx(best)


def test_training_records_the_calibration_and_the_results_say_how_it_fares(workdir, model):
  c = calibration.read(workdir, 54)
  assert c is not None and len(c.scores) == 2 and c.threshold == c.scores.max()
  assert model.calibration.threshold == c.threshold
  results = (workdir / "results.json").read_text()
  for key in ("fpr_at_threshold", "tpr_at_threshold", "f1_best_threshold", "f1_best"):
    assert f'"{key}"' in results
  # predict's --fpr recomputes the threshold from the recorded scores.
  assert calibration.read(workdir, 54, fpr=0.5).threshold == c.scores.min()


def test_predict_scores_every_image_as_evaluate_does_and_resumes(config, data_root, model, tmp_path):
  folder = tmp_path / "photos"
  test_files = sorted((data_root / "AeBAD_S" / "test").glob("*/same/*.png"))
  for file in test_files:
    target = folder / file.parts[-3] / file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(file, target)
  (folder / "good" / "broken.png").write_bytes(b"not an image")
  (folder / "good" / "._0000.png").write_bytes(b"macOS fork")  # Hidden: not listed at all.
  image_files, base = inference.list_images(str(folder))
  assert len(image_files) == len(test_files) + 1 and base == folder

  out = tmp_path / "out"
  first = inference.predict_files(model, image_files[:3], base, out, show_progress=False)
  assert first.scored == 3
  with open(out / files.SCORES, "a") as handle:
    handle.write(f"{image_files[3]},1.0")  # A torn line, as a kill mid-write leaves.
  summary = inference.predict_files(model, image_files, base, out, save_maps=True, show_progress=False)
  assert (summary.skipped, summary.unreadable, summary.total) == (3, 1, len(test_files))
  with open(out / files.SCORES) as handle:
    rows = list(csv.DictReader(handle))
  assert sorted(row["file"] for row in rows) == sorted(f for f in image_files if "broken" not in f)
  unreadable = (out / files.UNREADABLE).read_text()
  assert "broken.png" in unreadable and "does not decode" in unreadable
  assert len(list((out / "heatmaps").rglob("*.png"))) == len(test_files)
  assert np.load(out / "maps" / "good" / "0000.png.npy").shape == (64, 64)

  # The same scores as evaluate's for every test image of the subset.
  predictions = evaluation.predict_subset(config, model.scorer, model.params, "same")
  evaluated = {
    pathlib.Path(n).parts[-3] + "/" + pathlib.Path(n).name: s for n, s in zip(predictions.names, predictions.scores[0])
  }
  predicted = {pathlib.Path(r["file"]).parts[-2] + "/" + pathlib.Path(r["file"]).name: float(r["score"]) for r in rows}
  assert predicted.keys() == evaluated.keys()
  names = sorted(evaluated)
  np.testing.assert_allclose([predicted[n] for n in names], [evaluated[n] for n in names], rtol=1e-6)
  assert np.array_equal(
    np.argsort([predicted[n] for n in names], kind="stable"), np.argsort([evaluated[n] for n in names], kind="stable")
  )
  c = model.calibration
  for row in rows:
    assert row["decision"] == ("anomalous" if float(row["score"]) > c.threshold else "normal")
    assert float(row["normalised_score"]) == pytest.approx(float(c.normalise(float(row["score"]))), abs=1e-6)

  with pytest.raises(inference.errors.UserError, match="another threshold"):
    inference.predict_files(inference.TrainedModel(model.workdir, fpr=0.5), image_files, base, out, show_progress=False)


@pytest.fixture(scope="module")
def batch(data_root, model):
  files = sorted((data_root / "AeBAD_S" / "test").glob("*/same/*.png"))[:5]
  return np.stack([model.preprocess(images.decode_rgb(str(f))) for f in files])


# Run in a fresh interpreter whose path holds nothing of the project: the editable install's import hook and the
# repository's own folders (not a virtualenv inside it) are removed, and an import of mmr_jax fails.
RUN_EXPORTED = textwrap.dedent("""
    import sys
    repo = sys.argv[4]
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in type(finder).__module__]
    sys.path[:] = [p for p in sys.path if p and p != repo and not (p.startswith(repo + "/") and "-packages" not in p)]
    sys.modules["mmr_jax"] = None
    import jax, numpy as np
    exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
    maps, scores = exported.call(np.load(sys.argv[2]))
    np.savez(sys.argv[3], maps=np.asarray(maps), scores=np.asarray(scores))
    try:
      import mmr_jax
      sys.exit("mmr_jax was importable")
    except ImportError:
      pass
    print(",".join(exported.platforms))
""")


def test_the_jax_export_runs_without_the_project_and_equals_the_native_function(model, batch, tmp_path):
  path = export.export_jax(model, tmp_path / "export")
  meta = (tmp_path / "export" / files.EXPORT_METADATA).read_text()
  assert '"threshold": ' in meta and '"calibrated": true' in meta
  script = tmp_path / "run_exported.py"
  script.write_text(RUN_EXPORTED)
  np.save(tmp_path / "batch.npy", batch)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run(
    [sys.executable, str(script), str(path), str(tmp_path / "batch.npy"), str(tmp_path / "out.npz"), str(REPO)],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split()[-1] == "cpu,cuda,tpu"
  exported = np.load(tmp_path / "out.npz")
  maps, scores = model.score(batch)
  np.testing.assert_allclose(exported["maps"], maps, atol=1e-5)
  np.testing.assert_allclose(exported["scores"], scores, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_the_savedmodel_and_its_tflite_conversion_equal_the_native_function(model, batch, tmp_path):
  import tensorflow as tf

  path = export.export_savedmodel(model, tmp_path)
  maps, scores = model.score(batch)
  served = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(batch))
  np.testing.assert_allclose(served["anomaly_map"].numpy(), maps, atol=1e-5)
  np.testing.assert_allclose(served["score"].numpy(), scores, atol=1e-5)
  tflite = tf.lite.TFLiteConverter.from_saved_model(str(path)).convert()
  runner = tf.lite.Interpreter(model_content=tflite).get_signature_runner("serving_default")
  out = runner(images=batch)
  np.testing.assert_allclose(out["anomaly_map"], maps, atol=1e-5)
  np.testing.assert_allclose(out["score"], scores, atol=1e-5)


def test_predict_on_the_command_line_writes_the_top_heatmaps_and_refuses_bad_input(workdir, data_root, tmp_path):
  folder = data_root / "AeBAD_S" / "test" / "ablation" / "same"
  out = tmp_path / "cli"
  result = subprocess.run(
    [sys.executable, "predict.py", f"--workdir={workdir}", f"--images={folder}/*.png", f"--out={out}", "--heatmaps=1"],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "anomalous" in result.stdout and "threshold" in result.stdout
  assert len(list((out / "heatmaps").rglob("*.png"))) == 1
  missing = subprocess.run(
    [sys.executable, "predict.py", f"--workdir={tmp_path / 'nowhere'}", f"--images={folder}"],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert missing.returncode == 6 and missing.stderr.startswith("error: ") and "config.json" in missing.stderr
  assert "Traceback" not in missing.stderr


# Adaptation to a new domain (mmr_jax/adaptation.py), on the same trained model: shots from its training images.


def shot_files(data_root) -> list[str]:
  return [str(f) for f in sorted((data_root / "AeBAD_S" / "train" / "good").rglob("*.png"))[:3]]


@pytest.fixture(scope="module")
def shots(data_root, model):
  return np.stack([model.preprocess(images.decode_rgb(f)) for f in shot_files(data_root)])


def test_adaptation_is_deterministic_and_leaves_the_model_as_it_was(model, shots, batch, data_root):
  first, again = (
    model.adapt(list(shots), preprocessed=True),
    model.adapt([images.decode_rgb(f) for f in shot_files(data_root)]),
  )
  assert model.adaptation is None and first.adaptation is not None and first.adaptation_id == again.adaptation_id
  np.testing.assert_array_equal(np.asarray(first.adaptation.shot_scores), np.asarray(again.adaptation.shot_scores))
  np.testing.assert_array_equal(first.score(batch)[1], again.score(batch)[1])
  # The threshold is the calibration's rule on the shots' leave-one-out scores; the model's own is untouched.
  assert first.calibration.threshold == calibration.threshold_at_fpr(np.asarray(first.adaptation.shot_scores[0]), 0.01)
  assert model.calibration.threshold == calibration.read(model.workdir, 54).threshold


def test_the_adapted_map_is_never_above_mmrs_and_the_shots_lie_within_the_coreset_radius(model, shots, batch):
  """The memory holds the zero vector (MMR's own normal): every adapted distance is ≤ 1 − cos, so the maps are too.
  Every position of a shot, at each of the four phases, is in the memory or within its coreset's covering radius
  of it: so with the whole memory kept the shots and their shifted copies score 0."""
  adapted = model.adapt(list(shots), preprocessed=True)
  maps, scores = model.score(batch)
  adapted_maps, adapted_scores = adapted.score(batch)
  assert np.all(adapted_maps <= maps + 1e-5) and np.all(adapted_scores < scores)
  # The memory as `Scorer.adapt` builds it, from the shots at their four phases (phase major).
  scorer, params = model.scorer, {"params": jax.tree_util.tree_map(lambda leaf: leaf[0], model.params)}
  features = jax.jit(
    lambda x: (mmr.teacher_features(scorer.teacher, scorer.teacher_params, x), scorer.student.apply(params, x, 0.0))
  )
  normalised = preprocess.normalize(shots)
  coarsest_grid = jax.eval_shape(features, normalised)[0][-1].shape[1]
  teacher, student = features(np.concatenate([normalised, adaptation.shifted_phases(normalised, coarsest_grid)]))
  build_memory = jax.jit(adaptation.build_memory, static_argnames=("phases", "fraction"))
  kept = build_memory(teacher, student, phases=4)
  for memory, adapted_memory in zip(kept, adapted.adaptation.memories):
    np.testing.assert_allclose(np.asarray(memory.entries), np.asarray(adapted_memory.entries[0]), atol=1e-5)
  whole = build_memory(teacher, student, phases=4, fraction=1.0)
  for t, s, memory, all_kept in zip(teacher, student, kept, whole):
    (distance,), (zero,) = (adaptation.adapted_distances([t], [s], [m]) for m in (memory, all_kept))
    np.testing.assert_allclose(zero, 0.0, atol=1e-6)
    by_shot = adaptation.per_shot(adaptation.discrepancy(t, s), phases=4)
    size = adaptation.coreset_size(by_shot.shape[1])
    _, radii = jax.vmap(lambda entries: adaptation.coreset(entries, size))(by_shot)
    assert 0 < np.max(distance) <= 0.5 * np.max(radii) + 1e-6


def test_a_shots_score_is_its_score_against_the_others(model, shots):
  """Leave one out: shot j's recorded score is what the adaptation to the other shots gives it."""
  scores = np.asarray(model.adapt(list(shots), preprocessed=True).adaptation.shot_scores[0])
  for j in range(len(shots)):
    others = model.adapt([shot for i, shot in enumerate(shots) if i != j], preprocessed=True)
    np.testing.assert_allclose(others.score(shots[j : j + 1])[1][0], scores[j], rtol=1e-5)


def test_evaluate_predict_and_export_agree_on_the_adapted_scores(config, workdir, model, tmp_path):
  """eval.adapt_shots leaves the shots out of every metric; predict --adapt with the same images and the jax export
  with them baked in give the same adapted scores as the evaluation."""
  with config.unlocked():
    config.eval.adapt_shots = 1  # The tiny set has 2 normal test images per domain.
  try:
    results = experiment.evaluate(config, workdir, out=tmp_path / "eval")
    predictions = evaluation.predict_subset(config, model.scorer, model.params, "same")
    unadapted, adapted, thresholds = evaluation.adapted_subset(config, model.scorer, model.params, "same", predictions)
  finally:
    with config.unlocked():
      config.eval.adapt_shots = 0
  shot = evaluation.adaptation_shots(predictions.kinds, "same", 1)
  assert len(adapted.names) == len(predictions.names) - 1 and predictions.names[shot[0]] not in adapted.names
  assert list(unadapted.names) == list(adapted.names)
  for subset in ("same", "view", "mean"):
    assert {"image_auroc", "pixel_auroc", "fpr_at_threshold", "threshold", "shots"} <= set(results[subset]["adapted"])
  assert results["same"]["adapted"]["image_auroc"] == metrics.image_auroc(adapted.scores[0], adapted.labels)
  assert "→" in (tmp_path / "eval" / "results.md").read_text()
  assert (tmp_path / "eval" / "figures" / "domains_adapted.png").exists()
  assert list((tmp_path / "eval" / files.HEATMAPS_ADAPTED / "same").glob("*.png"))

  # predict --adapt with that shot, on the other images of the subset.
  root = config.data.root
  shot_dir, image_dir = tmp_path / "shot", tmp_path / "images"
  for name in predictions.names:
    source = pathlib.Path(root) / name
    target = (shot_dir if name == predictions.names[shot[0]] else image_dir) / name.replace("/", "_")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
  out = tmp_path / "predict"
  adapted_model, line = inference.adapt_from_files(model, str(shot_dir), out)
  assert line.startswith("adapted to 1 normal images") and (out / files.ADAPTATION).exists()
  image_files, base = inference.list_images(str(image_dir))
  inference.predict_files(adapted_model, image_files, base, out, heatmaps=0, show_progress=False)
  with open(out / files.SCORES) as handle:
    predicted = {row["file"].rsplit("/", 1)[1]: float(row["score"]) for row in csv.DictReader(handle)}
  evaluated = {name.replace("/", "_"): score for name, score in zip(adapted.names, adapted.scores[0])}
  assert predicted.keys() == evaluated.keys()
  np.testing.assert_allclose([predicted[n] for n in evaluated], list(evaluated.values()), rtol=1e-5)
  assert adapted_model.calibration.threshold == thresholds[0].threshold
  again, line = inference.adapt_from_files(model, str(shot_dir), out)
  assert "reused" in line and again.adaptation_id == adapted_model.adaptation_id
  # One saved by another version of the method is computed again, not reused.
  record = json.loads((out / files.ADAPTATION_RECORD).read_text())
  (out / files.ADAPTATION_RECORD).write_text(json.dumps({**record, "method": "an earlier method"}))
  (out / files.ADAPTATION).write_bytes(b"not an adaptation")
  again, line = inference.adapt_from_files(model, str(shot_dir), out)
  assert "recomputed" in line and again.adaptation_id == adapted_model.adaptation_id

  exported = jax.export.deserialize(export.export_jax(adapted_model, tmp_path / "export", ("cpu",)).read_bytes())
  batch = np.stack([model.preprocess(images.decode_rgb(f)) for f in image_files])
  np.testing.assert_allclose(np.asarray(exported.call(batch)[1]), adapted_model.score(batch)[1], atol=1e-5)


def test_an_adapt_folder_without_a_readable_image_stops_before_scoring(workdir, data_root, tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "a.png").write_bytes(b"not an image")
  scored = data_root / "AeBAD_S" / "test" / "good" / "same"
  for folder, message in ((tmp_path / "empty", "0 image files"), (broken, "none of its 1 image files decodes")):
    out = tmp_path / "o"
    code = cli.run(["predict", f"--workdir={workdir}", f"--images={scored}", f"--adapt={folder}", f"--out={out}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and f"--adapt={folder}" in err and "Traceback" not in err
    assert not (out / files.SCORES).exists()
