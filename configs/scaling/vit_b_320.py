"""Scaling study: the published ViT-B/16 + WideResNet50-2 at 320² (a 20×20 token grid, 240 visible at mask ratio
0.4; the pretrained 14×14 position table is resized bicubically, as the published code does).

    python -m mmr_jax benchmark --config=configs/scaling/vit_b_320.py --batch=16

Tokens grow 2.04× over 224²; attention's share of the encoder grows with them.
"""

from configs import aebad_s
from configs import common


def get_config():
  c = aebad_s.get_config()
  c.data.image_size = 320
  c.data.resize_size = common.published_resize(c.data.image_size)
  return c
