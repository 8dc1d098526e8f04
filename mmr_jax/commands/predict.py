"""Scores new images with a trained MMR: `python predict.py --workdir=runs/synthetic --images='photos/*.png'`.

--images is a file, a folder (searched recursively) or a quoted glob; any size and format PIL reads. Writes into
--out (default WORKDIR/predictions): scores.csv (file, score, normalised score, decision at the run's calibrated
threshold), heatmaps/ (an overlay per image, or the --heatmaps=N most anomalous), maps/*.npy with --save_maps, and
unreadable.csv for files that do not decode (skipped). Rerunning an interrupted command completes it. The model
and its preprocessing come from the workdir (its config.json): no --config.

--adapt=DIR (a folder, file or glob of normal images of the scored images' domain: a new camera, light, background)
adapts the model to that domain before scoring (docs/adaptation.md): nothing is trained; the threshold is set again
from those images; the adaptation is saved into --out and reused while the images stay the same.
"""

import pathlib

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = False, True, False, None


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string(
    "workdir",
    None,
    "A training run's workdir (its config.json, checkpoints, calibration).",
    required=True,
    flag_values=values,
  )
  flags.DEFINE_string(
    "images",
    None,
    "An image file, a folder, or a quoted glob such as 'dir/**/*.png'.",
    required=True,
    flag_values=values,
  )
  flags.DEFINE_string("out", None, "Where the predictions go (default: WORKDIR/predictions).", flag_values=values)
  flags.DEFINE_integer("seed", None, "Which of the run's seeds scores (default: its first).", flag_values=values)
  flags.DEFINE_float(
    "fpr",
    None,
    "False-positive rate on the held-out normals for the threshold (default: the run's eval.threshold_fpr, 1 %).",
    flag_values=values,
  )
  flags.DEFINE_string(
    "heatmaps",
    "all",
    "'all': an overlay per image; N: overlays of the N highest-scoring images; 0: none.",
    flag_values=values,
  )
  flags.DEFINE_bool("save_maps", False, "Also write each anomaly map as a float32 .npy.", flag_values=values)
  flags.DEFINE_string(
    "adapt",
    None,
    "Normal images of the scored images' domain (a folder, file or quoted glob) to adapt the model to it first.",
    flag_values=values,
  )


def main(call) -> None:
  from mmr_jax import errors
  from mmr_jax import files
  from mmr_jax import inference

  args = call.flags
  if args.heatmaps != "all" and not args.heatmaps.isdigit():
    raise errors.UserError(f"--heatmaps must be 'all' or a number of images (0: none), got {args.heatmaps!r}")
  image_files, base = inference.list_images(args.images)  # Before anything is built: a mistyped path costs nothing.
  model = inference.TrainedModel(args.workdir, seed=args.seed, fpr=args.fpr)
  out = pathlib.Path(args.out or pathlib.Path(args.workdir) / files.PREDICTIONS)
  if args.adapt:
    model, line = inference.adapt_from_files(model, args.adapt, out)
    print(line)
  heatmaps = None if args.heatmaps == "all" else int(args.heatmaps)
  summary = inference.predict_files(model, image_files, base, out, heatmaps=heatmaps, save_maps=args.save_maps)
  unreadable = f" (listed in {out / files.UNREADABLE})" if summary.unreadable else ""
  print(
    f"{summary.scored} images scored, {summary.skipped} already in {out / files.SCORES}, "
    f"{summary.unreadable} unreadable{unreadable}"
  )
  if model.calibration is None:
    print(
      "the threshold is uncalibrated: this run held out no normal images (data.calibration_fraction=0), so "
      "scores.csv has raw scores only; train with --config.data.calibration_fraction=0.1, or pass --adapt=DIR "
      "with normal images of this domain, for decisions"
    )
  else:
    print(f"seed {model.seed}, {model.calibration.describe()}: {summary.anomalous} of {summary.total} images anomalous")
