"""Exports a trained MMR for use without this project: `python -m mmr_jax export --workdir=W --format=jax`.

`jax`: OUT/model.jax, a serialised jax.export artefact for the CPU, CUDA and TPU that plain `jax` runs;
`savedmodel`: OUT/savedmodel, a TF SavedModel (serving_default: uint8 images → anomaly_map, score) that the TFLite
converter takes. OUT/model.json holds the preprocessing, the threshold and the config (mmr_jax/export.py).
"""

import os

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = False, True, False, None
FORMATS = ("jax", "savedmodel")


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A training run's workdir.", required=True, flag_values=values)
  flags.DEFINE_enum(
    "format", "jax", FORMATS, "jax: a jax.export artefact; savedmodel: a TF SavedModel.", flag_values=values
  )
  flags.DEFINE_string(
    "out", None, "Where the artefact and model.json go (default: WORKDIR/export_<format>).", flag_values=values
  )
  flags.DEFINE_integer("seed", None, "Which of the run's seeds to export (default: its first).", flag_values=values)


def main(call) -> None:
  from mmr_jax import export
  from mmr_jax import files
  from mmr_jax import inference

  args = call.flags
  out = files.check_folder(args.out or os.path.join(args.workdir, f"export_{args.format}"), "--out")
  model = inference.TrainedModel(args.workdir, seed=args.seed)
  path = export.export_jax(model, out) if args.format == "jax" else export.export_savedmodel(model, out)
  print(
    f"exported seed {model.seed} ({model.epochs_trained} epochs) as {args.format}: {path}; model.json beside it"
    + ("" if model.calibration else " (uncalibrated: no threshold)")
  )
