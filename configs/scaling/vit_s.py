"""Scaling study: a ViT-S/16 student (width 384, 12 blocks) with the published teacher and setting, 224².

    python -m mmr_jax benchmark --config=configs/scaling/vit_s.py --batch=16
    python -m mmr_jax sweep --config=configs/scaling/vit_s.py --batch_sizes=8,16,32 --out=runs/sweep_vit_s

No ViT-S MAE checkpoint is in the weights catalog, so the student starts from random weights; pass a file with
--config.init.student=/path/to/checkpoint.pth to train from one.
"""

from configs import aebad_s
from configs import common


def get_config():
  c = aebad_s.get_config()
  c.model.vit = common.vit_config("S")
  c.init.student = ""
  return c
