"""Pretrained weights: PyTorch checkpoints → the Flax student and teacher trees.

  readers.py   .npz / .safetensors / .pth → {name: array}
  names.py     the explicit PyTorch ↔ Flax name maps and layout changes
  structure.py tree flattening, and the architecture a tree or state dict implies
  loading.py   checked loading into the Flax trees, and export back to PyTorch names
  catalog.py   the canonical files (MAE ViT-B, torchvision ResNets): URLs, checksums, roles
  fetch.py     download or hand-placed file → verified → cached torch-free .npz; `fetch.resolve` for training
               init
Nothing is imported here: import the module that holds what you need.
"""
