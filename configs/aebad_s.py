"""AeBAD-S with the published setting: ViT-B/16 (MAE init) + WideResNet50-2, 224², 200 epochs, batch 16.

    python train.py --config=configs/aebad_s.py --workdir=runs/aebad_s --config.data.root=data
    python evaluate.py --config=configs/aebad_s.py --workdir=runs/aebad_s --config.data.root=data

Expected (paper Table 2, mean ± std of 5 runs), image AUROC / PRO in %:
    same 85.6 ± 0.5 / 89.6 ± 0.2, background 84.4 ± 0.7 / 90.1 ± 0.2,
    illumination 88.8 ± 0.5 / 90.2 ± 0.2, view 79.9 ± 0.6 / 86.3 ± 0.3; mean 84.7 / 89.1.
data.root holds the extracted archive's `AeBAD_S/` folder (see data/README.md).
"""

from configs import common


def get_config():
  c = common.get_config()
  c.data.name = "aebad_s"
  c.data.subsets = ("same", "background", "illumination", "view")
  return c
