"""Scaling study: a ViT-L/16 student (width 1024, 24 blocks) with the published teacher and setting, 224².

    python -m mmr_jax benchmark --config=configs/scaling/vit_l.py --batch=16

The FPN widens with the student (its first layers map width → width/2 → width/4). No ViT-L MAE checkpoint is in
the weights catalog, so the student starts from random weights; pass one with --config.init.student=PATH.
"""

from configs import aebad_s
from configs import common


def get_config():
  c = aebad_s.get_config()
  c.model.vit = common.vit_config("L")
  c.init.student = ""
  return c
