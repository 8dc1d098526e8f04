"""MVTec AD with the published setting: one model per class (ViT-B/16 + WideResNet50-2, 224², 200 epochs).

    python train.py --config=configs/mvtec.py:bottle --workdir=runs/mvtec_bottle --config.data.root=data/mvtec
    python train.py --config=configs/mvtec.py --workdir=runs/mvtec --config.data.root=data/mvtec   # all 15

Expected (paper Tables 5-6), means over the 15 classes in %: image AUROC 98.4, pixel AUROC 97.2, PRO 92.6.
Each class is one subset of the results table; "mean" is their plain mean.
"""

from configs import common


def get_config(arg: str = ""):
  c = common.get_config()
  c.data.name = "mvtec"
  # "all": the 15 classes (the config check expands it and rejects a name that is not a class).
  c.data.subsets = (arg,) if arg else ("all",)
  return c
