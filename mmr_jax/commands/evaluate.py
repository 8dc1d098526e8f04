"""Evaluates a trained MMR: `python evaluate.py --config=configs/aebad_s.py --workdir=runs/aebad_s`.

Writes WORKDIR/results.json, results.md and report.html (with figures/ and heatmaps/), or into --out=DIR (the
workdir is then only read, so it may be read-only). `--checkpoint` evaluates converted weights instead (a student
trained with the PyTorch code, as .pth/.safetensors/.npz under the published names); `--config.num_epochs=0` with
a workdir that holds no checkpoint scores the untrained model.
"""

import pathlib

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = True, True, True, None


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string(
    "workdir", None, "The training run's workdir (results are written there).", required=True, flag_values=values
  )
  flags.DEFINE_string(
    "checkpoint", None, "Student weights to evaluate instead of the workdir's last checkpoint.", flag_values=values
  )
  flags.DEFINE_string(
    "out", None, "Write results.json, results.md and report.html here instead of the workdir.", flag_values=values
  )


def main(call) -> None:
  from mmr_jax import experiment
  from mmr_jax import files

  args = call.flags
  if experiment.evaluate(call.config, args.workdir, args.checkpoint, args.out):
    print((pathlib.Path(args.out or args.workdir) / files.RESULTS_TABLE).read_text())
