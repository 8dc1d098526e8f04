"""AeBAD-V with the published setting (ViT-B/16 + WideResNet50-2, 224², 200 epochs). Frame AUROC only.

    python train.py --config=configs/aebad_v.py --workdir=runs/aebad_v --config.data.root=data
    python evaluate.py --config=configs/aebad_v.py --workdir=runs/aebad_v --config.data.root=data

Expected (paper Table 3, mean ± std of 5 runs), frame AUROC in %:
    video1 75.7 ± 0.2, video2 88.3 ± 1.4, video3 70.7 ± 0.6; mean 78.2.
data.root holds the extracted archive's `AeBAD_V/` folder (see data/README.md).
"""

from configs import common


def get_config():
  c = common.get_config()
  c.data.name = "aebad_v"
  c.data.subsets = ("video1", "video2", "video3")
  return c
