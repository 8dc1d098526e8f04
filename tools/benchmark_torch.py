"""PyTorch baseline: the training step and inference of MMR in PyTorch, as the published code runs them.

    python tools/benchmark_torch.py --width=768 --depth=12 --num_heads=12 --teacher=wide_resnet50_2 \
        --image_size=224 --batch=16 --steps=3 --json=torch.json

The same work as `python -m mmr_jax benchmark` times (which runs this script with --compare_torch): a training
step is the teacher's forward (no grad) + the student's forward at the mask ratio, Eq. 1, backward and AdamW;
inference is teacher + student at ratio 0 + Eq. 2 with its Gaussian smoothing (scipy, as published). Random
weights and synthetic batches; float32, NCHW, PyTorch's default threads. Medians over --steps after --warmup.

The model is the independent PyTorch MMR of tools/torch_mmr.py (the published code needs timm 0.3.2, which does
not import on current PyTorch). `--baseline=published` (the default) gives it the published code's execution
forms, which cost time but not results (github.com/zhangzilongc/MMR, models/MMR/MMR.py, MMR_pipeline.py):
  * the teacher runs the whole torchvision network (layer4, pooling and fc included) and layer1..3 are read by
    forward hooks, as `MMR_pipeline_` does with `self.cur_model(image)`;
  * the FPN's channel LayerNorms are detectron2's hand-written mean / variance / sqrt form on NCHW maps;
  * Eq. 1 permutes each map to NHWC, makes it contiguous and flattens it before the cosine similarity.
`--baseline=spec` is the lean form of tools/torch_mmr.py (teacher to layer3, fused LayerNorm): what a careful
PyTorch port would run, reported for reference.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import torch_mmr  # noqa: E402  (a sibling script, not a package)


def median_seconds(call, warmup: int, steps: int) -> tuple[float, list[float]]:
  for _ in range(warmup):
    call()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


class Detectron2ChannelLayerNorm(nn.Module):
  """The published FPN's channel LayerNorm: statistics over dim 1 of NCHW, spelled out in elementwise ops."""

  def __init__(self, fused: torch_mmr.ChannelLayerNorm):
    super().__init__()
    self.weight, self.bias, self.eps = fused.weight, fused.bias, fused.eps

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(1, keepdim=True)
    normed = centred / torch.sqrt(centred.pow(2).mean(1, keepdim=True) + self.eps)
    return self.weight[:, None, None] * normed + self.bias[:, None, None]


def use_detectron2_layernorms(module: nn.Module) -> None:
  for name, child in module.named_children():
    if isinstance(child, torch_mmr.ChannelLayerNorm):
      setattr(module, name, Detectron2ChannelLayerNorm(child))
    else:
      use_detectron2_layernorms(child)


class WholeNetworkTeacher(torch_mmr.ResNetTeacher):
  """Runs the full torchvision network (to the logits) and returns layer1..3, as forward hooks would."""

  def __init__(self, arch: str):
    super().__init__(arch, with_layer4_and_fc=True)

  def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
    features = super().forward(images)
    logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layer4(features[-1]), 1), 1))
    del logits  # Computed and discarded, as in the published pipeline.
    return features


def published_loss(teacher_features, student_features) -> torch.Tensor:
  """Eq. 1 as `each_patch_loss_function` computes it: NHWC copies flattened to rows, then the cosine."""
  total = 0
  for t, s in zip(teacher_features, student_features):
    rows = lambda m: m.permute(0, 2, 3, 1).contiguous().view(-1, m.shape[1])
    total = total + torch.mean(1 - F.cosine_similarity(rows(t), rows(s), dim=1, eps=torch_mmr.COSINE_EPS))
  return total


def run(args: argparse.Namespace) -> dict:
  torch.manual_seed(0)
  student = torch_mmr.MMRStudent(
    width=args.width,
    depth=args.depth,
    num_heads=args.num_heads,
    image_size=args.image_size,
    fpn_channels=torch_mmr.TEACHERS[args.teacher].channels,
    patch_size=args.patch_size,
    mlp_ratio=args.mlp_ratio,
  )
  teacher_class, loss_fn = torch_mmr.ResNetTeacher, lambda t, s: torch_mmr.mmr_loss(t, s)[0]
  if args.baseline == "published":
    use_detectron2_layernorms(student)
    loss_fn = published_loss
    if torch_mmr.TEACHERS[args.teacher].layer4_blocks:  # The test-only micro teacher has no layer4.
      teacher_class = WholeNetworkTeacher
  teacher = teacher_class(args.teacher).eval()
  for p in teacher.parameters():
    p.requires_grad_(False)
  optimizer = torch_mmr.adamw(student, lr=1e-4)
  images = torch.rand(args.batch, 3, args.image_size, args.image_size) * 4 - 2
  tokens = (args.image_size // args.patch_size) ** 2

  def train_step():
    student.train()
    with torch.no_grad():
      teacher_features = teacher(images)
    noise = torch.rand(args.batch, tokens)
    loss = loss_fn(teacher_features, student(images, args.mask_ratio, noise))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

  def infer():
    student.eval()
    with torch.no_grad():
      teacher_features = teacher(images)
      student_features = student(images, 0.0, torch.rand(args.batch, tokens))
      torch_mmr.anomaly_maps(teacher_features, student_features, args.image_size)

  train_s, train_all = median_seconds(train_step, args.warmup, args.steps)
  infer_s, infer_all = median_seconds(infer, args.warmup, args.steps)
  return {
    "baseline": args.baseline,
    "torch_version": torch.__version__,
    "threads": torch.get_num_threads(),
    "batch_size": args.batch,
    "train_step_s": train_s,
    "train_step_all_s": train_all,
    "train_img_per_s": args.batch / train_s,
    "infer_batch_s": infer_s,
    "infer_batch_all_s": infer_all,
    "infer_img_per_s": args.batch / infer_s,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--width", type=int, default=768)
  parser.add_argument("--depth", type=int, default=12)
  parser.add_argument("--num_heads", type=int, default=12)
  parser.add_argument("--patch_size", type=int, default=16)
  parser.add_argument("--mlp_ratio", type=float, default=4.0)
  parser.add_argument("--teacher", default="wide_resnet50_2", choices=sorted(torch_mmr.TEACHERS))
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--mask_ratio", type=float, default=0.4)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument(
    "--baseline",
    default="published",
    choices=("published", "spec"),
    help="published: the published code's execution forms (see above); spec: the lean port.",
  )
  parser.add_argument("--json", help="Write the figures to this JSON file.")
  args = parser.parse_args()
  report = run(args)
  print(
    f"PyTorch {report['torch_version']} ({report['threads']} threads), {report['baseline']} forms, "
    f"batch {args.batch}: "
    f"train {report['train_step_s']:.3f} s/step ({report['train_img_per_s']:.2f} img/s), "
    f"infer {report['infer_batch_s']:.3f} s/batch ({report['infer_img_per_s']:.2f} img/s)"
  )
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
  main()
