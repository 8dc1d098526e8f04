"""Scores new images with a trained MMR: `python predict.py --workdir=runs/synthetic --images='photos/*.png'`.

--images is a file, a folder (searched recursively) or a quoted glob; any size and format PIL reads. Writes into
--out (default WORKDIR/predictions): scores.csv (file, score, normalised score, decision at the run's calibrated
threshold), heatmaps/ (an overlay per image, or the --heatmaps=N most anomalous), maps/*.npy with --save_maps, and
unreadable.csv for files that do not decode (skipped). Rerunning an interrupted command completes it. The model
and its preprocessing come from the workdir (its config.json): no --config.
"""

import pathlib

from absl import flags

from mmr_jax import cli

flags.DEFINE_string(
  "workdir", None, "A training run's workdir (its config.json, checkpoints, calibration).", required=True
)
flags.DEFINE_string("images", None, "An image file, a folder, or a quoted glob such as 'dir/**/*.png'.", required=True)
flags.DEFINE_string("out", None, "Where the predictions go (default: WORKDIR/predictions).")
flags.DEFINE_integer("seed", None, "Which of the run's seeds scores (default: its first).")
flags.DEFINE_float(
  "fpr",
  None,
  "False-positive rate on the held-out normals for the threshold (default: the run's eval.threshold_fpr, 1 %).",
)
flags.DEFINE_string(
  "heatmaps", "all", "'all': an overlay per image; N: overlays of the N highest-scoring images; 0: none."
)
flags.DEFINE_bool("save_maps", False, "Also write each anomaly map as a float32 .npy.")
cli.define_flags(config=False, multihost=False)
FLAGS = flags.FLAGS


def predict(config):
  del config  # The workdir's own.
  from mmr_jax import errors  # after cli's start-up
  from mmr_jax import inference

  if FLAGS.heatmaps != "all" and not FLAGS.heatmaps.isdigit():
    raise errors.UserError(f"--heatmaps must be 'all' or a number of images (0: none), got {FLAGS.heatmaps!r}")
  files, base = inference.list_images(FLAGS.images)  # Before anything is built: a mistyped path costs nothing.
  model = inference.TrainedModel(FLAGS.workdir, seed=FLAGS.seed, fpr=FLAGS.fpr)
  out = pathlib.Path(FLAGS.out or pathlib.Path(FLAGS.workdir) / "predictions")
  heatmaps = None if FLAGS.heatmaps == "all" else int(FLAGS.heatmaps)
  summary = inference.predict_files(model, files, base, out, heatmaps=heatmaps, save_maps=FLAGS.save_maps)
  unreadable = f" (listed in {out / inference.UNREADABLE_FILE})" if summary.unreadable else ""
  print(
    f"{summary.scored} images scored, {summary.skipped} already in {out / inference.SCORES_FILE}, "
    f"{summary.unreadable} unreadable{unreadable}"
  )
  if model.calibration is None:
    print(
      "the threshold is uncalibrated: this run held out no normal images (data.calibration_fraction=0), so "
      "scores.csv has raw scores only; train with --config.data.calibration_fraction=0.1 for decisions"
    )
  else:
    print(f"seed {model.seed}, {model.calibration.describe()}: {summary.anomalous} of {summary.total} images anomalous")


if __name__ == "__main__":
  cli.launch(__doc__, predict)
