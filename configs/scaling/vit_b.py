"""Scaling study: the published ViT-B/16 student (width 768, 12 blocks) + WideResNet50-2 at 224², the reference
point of the student-size and image-size studies (the same model as configs/aebad_s.py).

    python -m mmr_jax benchmark --config=configs/scaling/vit_b.py --batch=16
"""

from configs import aebad_s


def get_config():
  return aebad_s.get_config()
