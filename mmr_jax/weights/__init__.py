"""Pretrained weights: PyTorch checkpoints → the Flax student and teacher trees.

  readers.py   .npz / .safetensors / .pth → {name: array}
  names.py     the explicit PyTorch ↔ Flax name maps, checked loading, export, architecture inference
  catalog.py   the canonical files (MAE ViT-B, torchvision ResNets): URLs, checksums, roles
  fetch.py     download or hand-placed file → verified → cached torch-free .npz; `fetch.resolve` for training
               init (not imported here, so that `python -m mmr_jax.weights.fetch` runs it fresh)
"""

from mmr_jax.weights.errors import ChecksumMismatch, DownloadFailed, FixedTableMismatch, WeightsError
from mmr_jax.weights.names import (check_fixed_tables, infer_teacher, infer_vit, load_student, load_teacher,
                                   student_to_torch, teacher_to_torch)
from mmr_jax.weights.readers import read_state_dict
