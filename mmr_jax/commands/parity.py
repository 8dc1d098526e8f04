"""Proof of equality with a PyTorch MMR (docs/parity-format.md).

    python -m mmr_jax parity --weights=W.npz --reference=R.npz [--json=OUT.json] [--num_heads=N]
        [--precision=default|high|highest]

Loads a PyTorch model's weights (W.npz, PyTorch names and layouts) and its outputs on one batch (R.npz), runs
this project's code on the same inputs with the same weights, prints one row per quantity (max |error|,
relative error ‖a − b‖/‖b‖, tolerance, pass/fail) and exits 1 if any fails. The architecture is read from the
weights: ViT width/depth/patch/position grid, ResNet block type, depths and widths. The head count is not visible
in the weights: it defaults to width / 64 (every MAE/ViT size) unless --num_heads says otherwise.
"""

import json

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = False, True, False, None


def define_flags(values: flags.FlagValues) -> None:
  define = dict(flag_values=values)
  flags.DEFINE_string("weights", None, "W.npz: student/<name> and teacher/<name> arrays.", required=True, **define)
  flags.DEFINE_string("reference", None, "R.npz: inputs and PyTorch outputs.", required=True, **define)
  flags.DEFINE_string("json", None, "Also write the comparison as JSON here.", **define)
  flags.DEFINE_integer("num_heads", None, "Attention heads (default: width / 64).", **define)
  flags.DEFINE_string(
    "precision",
    "highest",
    "model.precision of every dot and convolution: highest (the float32 proof), high, or default (TF32 on GPUs, "
    "one bfloat16 pass on TPUs).",
    **define,
  )


def main(call) -> int:
  import pathlib

  from mmr_jax import cli
  from mmr_jax import files
  from mmr_jax import parity
  from mmr_jax.models import layers

  args = call.flags
  if args.precision not in layers.PRECISIONS:
    raise cli.UsageError(f"--precision must be one of {', '.join(layers.PRECISIONS)}, got {args.precision!r}")
  results, skipped = parity.run(args.weights, args.reference, args.num_heads, args.precision)
  parity.print_table(results, skipped)
  if args.json:
    record = {key: {k: v for k, v in r.items() if k != "tol_kind"} for key, r in results.items()}
    files.write_atomic(pathlib.Path(args.json), json.dumps(record, indent=2))
  return 0 if all(r["ok"] for r in results.values()) else 1
