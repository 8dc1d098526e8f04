"""A scaling study: a grid of runs and how detection scales against compute (mmr_jax/study.py).

    python -m mmr_jax study --config=configs/synthetic.py --grid=model.vit.depth=1,2,4 --grid=data.image_size=96,128,160
        --config.num_seeds=2 --workdir=runs/study
    python -m mmr_jax study --config=configs/aebad_s.py --grid=model.vit=S,B,L --grid=data.image_size=224,320
        --config.num_seeds=3 --config.data.root=/data --workdir=/shared/study --points=0/4   # machine 1 of 4

Every grid point is an ordinary run in WORKDIR/<key=value,...> with all its seeds in one program: it resumes,
refuses a changed config and is skipped once finished. Ends by writing WORKDIR/study.csv and study.html.
"""

import pathlib

from absl import flags

CONFIG, COMPUTES, MULTIHOST, POSITIONAL = True, True, True, None


def define_flags(values: flags.FlagValues) -> None:
  define = dict(flag_values=values)
  flags.DEFINE_string("workdir", None, "The study's folder: one sub-workdir per grid point.", required=True, **define)
  flags.DEFINE_multi_string(
    "grid", [], "KEY=v1,v2,... (repeat for each key): config values to vary; model.vit=Ti,S,B names sizes.", **define
  )
  flags.DEFINE_string("points", None, "i/n: run every n-th point from the i-th (n machines share a study).", **define)


def main(call) -> None:
  from mmr_jax import study

  args = call.flags
  workdir = pathlib.Path(args.workdir)
  rows = study.run(call.config, study.parse_grid(args.grid), workdir, args.points)
  print(f"{len(rows)} point(s) finished; wrote {workdir / study.TABLE} and {workdir / study.PAGE}")
