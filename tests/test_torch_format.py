"""The torch-free reader of torch.save files: both formats, every supported dtype, views, and refusals."""

import pathlib
import pickle
import struct
import zipfile

import numpy as np
import pytest

from mmr_jax.weights import readers
from mmr_jax.weights import torch_format
from mmr_jax.weights.errors import WeightsError

GOLDEN = pathlib.Path(__file__).parent / "golden"
FORMATS = ("torch_zip.pt", "torch_legacy.pt")  # Written by tools/make_torch_fixtures.py.


def _assert_same(got: dict, want: dict) -> None:
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name].dtype == want[name].dtype, name
    assert got[name].shape == want[name].shape, name
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("filename", FORMATS)
def test_fixtures_read_as_torch_load_reads_them(filename):
  with np.load(GOLDEN / "torch_expected.npz") as expected:
    want = dict(expected)
  loaded = torch_format.load(GOLDEN / filename)
  assert loaded["epoch"] == 3
  _assert_same(loaded["model"], want)
  # The checkpoint-level reader unwraps {"model": ...}; views were copied out, not aliased.
  state = readers.read_state_dict(GOLDEN / filename)
  _assert_same(state, want)
  np.testing.assert_array_equal(state["shared_transposed"], state["shared"].T)
  assert all(value.flags.c_contiguous and value.flags.writeable for value in state.values())


def _torch_checkpoint(torch):
  generator = torch.Generator().manual_seed(1)
  base = torch.randn(5, 7, generator=generator)
  return {
    "state_dict": {
      "conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
      "half": torch.randn(9, generator=generator).half(),
      "brain": torch.randn(3, 5, generator=generator).bfloat16(),
      "double": torch.randn(2, generator=generator).double(),
      "long": torch.arange(10),
      "int": torch.arange(3, dtype=torch.int32),
      "byte": torch.arange(4, dtype=torch.uint8),
      "flag": torch.tensor([False, True]),
      "view_t": base.t(),
      "view_cols": base[:, 1:6:2],
      "view_tail": base[3:],
      "param": torch.nn.Parameter(torch.randn(3, generator=generator)),
    }
  }


@pytest.mark.parametrize("zip_format", (True, False), ids=("zip", "legacy"))
def test_equals_torch_load_bit_for_bit(tmp_path, zip_format):
  torch = pytest.importorskip("torch")
  path = tmp_path / "checkpoint.pth"
  torch.save(_torch_checkpoint(torch), path, _use_new_zipfile_serialization=zip_format)
  reference = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
  want = {
    name: (value.detach().float() if value.dtype == torch.bfloat16 else value.detach()).numpy()
    for name, value in reference.items()
  }
  _assert_same(torch_format.load(path)["state_dict"], want)


def _legacy_file(payload: bytes) -> bytes:
  """A legacy torch.save stream around an arbitrary object pickle, with no storages."""
  header = b"".join(
    pickle.dumps(value, protocol=2)
    for value in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
  )
  return header + payload + pickle.dumps([], protocol=2)


# Protocol-0 pickle of os.system("touch <marker>"): GLOBAL 'os system', a one-string tuple, REDUCE.
def _os_system_pickle(marker: pathlib.Path) -> bytes:
  return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


@pytest.mark.parametrize("container", ("legacy", "zip"))
def test_a_pickle_naming_os_system_is_refused_and_runs_nothing(tmp_path, container):
  marker = tmp_path / "was_run"
  path = tmp_path / "evil.pth"
  if container == "legacy":
    path.write_bytes(_legacy_file(_os_system_pickle(marker)))
  else:
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("evil/data.pkl", _os_system_pickle(marker))
  with pytest.raises(torch_format.UnsafeCheckpoint, match=r"import os\.system.*nothing in it was run"):
    readers.read_state_dict(path)
  assert not marker.exists()


def test_other_pickled_objects_are_refused(tmp_path):
  path = tmp_path / "namespace.pth"
  # What MAE's training checkpoints add beside the weights: an argparse.Namespace of the run's arguments.
  path.write_bytes(_legacy_file(b"cargparse\nNamespace\n)R."))
  with pytest.raises(torch_format.UnsafeCheckpoint, match=r"argparse\.Namespace"):
    readers.read_state_dict(path)


def test_damaged_files_name_themselves(tmp_path):
  data = (GOLDEN / "torch_legacy.pt").read_bytes()
  for name, content in (
    ("cut_legacy.pth", data[: len(data) - 100]),
    ("junk.pth", b"\x00not a weights file" * 10),
    ("cut_zip.pth", (GOLDEN / "torch_zip.pt").read_bytes()[:3000]),
  ):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(WeightsError, match=str(tmp_path / name)):
      readers.read_state_dict(tmp_path / name)


def test_a_view_outside_its_storage_is_refused(tmp_path):
  # A tensor of 4×4 elements on a storage of 8: the reader must not read past the storage's end.
  path = tmp_path / "overrun.pth"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("overrun/data.pkl", _rebuild_pickle(size=(4, 4), stride=(4, 1), storage_numel=8))
    archive.writestr("overrun/data/0", np.zeros(8, "<f4").tobytes())
  with pytest.raises(WeightsError, match=r"reaches element 15 of a storage of 8"):
    readers.read_state_dict(path)


def _rebuild_pickle(size: tuple[int, ...], stride: tuple[int, ...], storage_numel: int) -> bytes:
  """A zip-format data.pkl of {"w": tensor(size, stride)} on storage '0' of float32, written opcode by opcode."""

  def tuple_of(values):
    return b"(" + b"".join(b"K" + struct.pack("B", v) for v in values) + b"t"

  return (
    b"\x80\x02}X\x01\x00\x00\x00w"  # {"w":
    b"ctorch._utils\n_rebuild_tensor_v2\n("  # _rebuild_tensor_v2(
    b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
    + b"K"
    + struct.pack("B", storage_numel)
    + b"tQ"  # persistent id → storage,
    + b"K\x00"
    + tuple_of(size)
    + tuple_of(stride)  # offset, size, stride,
    + b"\x89ccollections\nOrderedDict\n)R"  # requires_grad, backward_hooks
    b"tRs."
  )  # ) }
