"""Writes the small torch.save files that test the torch-free reader where PyTorch is not installed.

    python tools/make_torch_fixtures.py --out tests/golden

Needs torch (`pip install -e .[torch]`). Writes, from one set of tensors:
  torch_zip.pt      the zip format of torch ≥ 1.6 (torch.save's default);
  torch_legacy.pt   the legacy stream (`_use_new_zipfile_serialization=False`, the format of torch < 1.6);
  torch_expected.npz  what torch.load returns, as NumPy (bfloat16 widened to float32, the reader's convention).
The tensors cover every storage type the reader supports, views into a shared storage (a transpose, a strided
slice, an offset), a Parameter, a scalar, an empty tensor, and a nested {"model": ..., "epoch": ...} container.
"""

import argparse
import pathlib

import numpy as np
import torch


def tensors() -> dict[str, torch.Tensor]:
  generator = torch.Generator().manual_seed(0)
  normal = lambda *shape: torch.randn(*shape, generator=generator)
  shared = normal(6, 8)
  return {
    "float32": normal(3, 4, 5),
    "float16": normal(7).half(),
    "bfloat16": normal(4, 3).bfloat16(),
    "float64": normal(2, 3).double(),
    "int64": torch.arange(-3, 5),
    "int32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
    "int16": torch.arange(-4, 4, dtype=torch.int16),
    "int8": torch.arange(-5, 5, dtype=torch.int8),
    "uint8": torch.arange(250, 256, dtype=torch.uint8),
    "bool": torch.tensor([True, False, True, True]),
    "shared": shared,
    "shared_transposed": shared.t(),
    "shared_strided": shared[1:5, 2::3],
    "shared_row": shared[4],
    "parameter": torch.nn.Parameter(normal(2, 2)),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 3),
    "num_batches_tracked": torch.tensor(7),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="tests/golden")
  out = pathlib.Path(parser.parse_args().out)
  out.mkdir(parents=True, exist_ok=True)
  state = tensors()
  checkpoint = {"model": state, "epoch": 3}
  torch.save(checkpoint, out / "torch_zip.pt")
  torch.save(checkpoint, out / "torch_legacy.pt", _use_new_zipfile_serialization=False)
  expected = {}
  for name, value in torch.load(out / "torch_zip.pt", weights_only=True)["model"].items():
    value = value.detach()
    expected[name] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
  np.savez(out / "torch_expected.npz", **expected)
  for name in ("torch_zip.pt", "torch_legacy.pt", "torch_expected.npz"):
    print(out / name, (out / name).stat().st_size, "bytes")


if __name__ == "__main__":
  main()
