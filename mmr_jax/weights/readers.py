"""Reading and writing flat state dicts ({name: array}) from .npz, .safetensors and PyTorch .pth/.pt/.bin files.

Names and layouts are left as the file has them (PyTorch's); `names.py` maps them onto the Flax trees. None of
the readers needs PyTorch: `torch_format.py` reads torch.save files (both formats) with a restricted unpickler.
"""

import json
import os
import pathlib
import tempfile
import zipfile
from typing import Mapping

import numpy as np

from mmr_jax.weights import torch_format
from mmr_jax.weights.errors import WeightsError

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SUFFIXES = (".npz", ".safetensors") + TORCH_SUFFIXES
# Entries of a training checkpoint that hold the model's state dict (MAE saves {"model": ...}).
_WRAPPER_KEYS = ("model", "state_dict", "model_state")
# DataParallel / DistributedDataParallel prefix every name with this.
_PARALLEL_PREFIX = "module."

StateDict = dict[str, np.ndarray]


def read_state_dict(path: str | os.PathLike, prefix: str | None = None) -> StateDict:
  """Reads every array of a checkpoint as NumPy; `prefix` (e.g. "student/") keeps only those names, stripped."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise WeightsError(
      f"weights file not found: {path}. Give the path of a {'/'.join(SUFFIXES)} file, or a "
      "catalog name (python -m mmr_jax fetch_weights --list)."
    )
  suffix = path.suffix.lower()
  if suffix == ".npz":
    state = _read_npz(path)
  elif suffix == ".safetensors":
    state = _read_safetensors(path)
  elif suffix in TORCH_SUFFIXES:
    state = _read_torch(path)
  else:
    raise WeightsError(f"{path}: unsupported weights format {suffix!r}; supported: {', '.join(SUFFIXES)}.")
  if not state:
    raise WeightsError(f"{path} holds no arrays.")
  state = _strip_parallel_prefix(state)
  return select_prefix(state, prefix, source=str(path)) if prefix else state


def select_prefix(state: Mapping[str, np.ndarray], prefix: str, source: str = "state dict") -> StateDict:
  """The entries whose names start with `prefix`, with the prefix removed."""
  selected = {name[len(prefix) :]: value for name, value in state.items() if name.startswith(prefix)}
  if not selected:
    groups = sorted({name.split("/", 1)[0] + "/" for name in state if "/" in name})
    hint = f" It has the groups {', '.join(groups)}." if groups else " Its names carry no 'group/' prefix."
    raise WeightsError(f"{source} has no entries under {prefix!r}.{hint}")
  return selected


def write_npz(path: str | os.PathLike, state: Mapping[str, np.ndarray]) -> pathlib.Path:
  """Writes `state` as an uncompressed .npz, atomically (a reader never sees a half-written file)."""
  path = pathlib.Path(path).expanduser()
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".partial")
  try:
    with os.fdopen(handle, "wb") as stream:
      np.savez(stream, **{name: np.asarray(value) for name, value in state.items()})
    os.chmod(temporary, 0o644)  # mkstemp makes it private; a weights cache is not secret.
    os.replace(temporary, path)
  except BaseException:
    pathlib.Path(temporary).unlink(missing_ok=True)
    raise
  return path


def _read_npz(path: pathlib.Path) -> StateDict:
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {name: archive[name] for name in archive.files}
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
    raise WeightsError(
      f"could not read {path} as .npz ({error}). The file is incomplete or corrupt: write or download it again."
    ) from None


def _read_safetensors(path: pathlib.Path) -> StateDict:
  from safetensors import numpy as safetensors_numpy

  try:
    state = safetensors_numpy.load_file(str(path))
    # Once ml_dtypes is imported (jax does), NumPy knows bfloat16; widen it like the fallback does.
    return {
      name: value.astype(np.float32) if value.dtype.name == "bfloat16" else value for name, value in state.items()
    }
  except TypeError:
    # NumPy has no bfloat16, which the library's NumPy backend needs; read those files directly.
    return _read_safetensors_widening(path)
  except Exception as error:  # The library raises its own error types for bad headers and short files.
    raise WeightsError(
      f"could not read {path} as .safetensors ({error}). The file is incomplete or corrupt: write or download it again."
    ) from None


_SAFETENSORS_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}


def _read_safetensors_widening(path: pathlib.Path) -> StateDict:
  """The .safetensors format (8-byte header size, JSON header, raw little-endian data), bfloat16 → float32."""
  try:
    data = path.read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    body = memoryview(data)[8 + header_size :]
    state = {}
    for name, info in header.items():
      if name == "__metadata__":
        continue
      begin, end = info["data_offsets"]
      raw = np.frombuffer(body[begin:end], np.uint16 if info["dtype"] == "BF16" else _SAFETENSORS_DTYPES[info["dtype"]])
      if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32.
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
      state[name] = raw.reshape(info["shape"]).copy()
    return state
  except (ValueError, KeyError, TypeError) as error:
    raise WeightsError(
      f"could not read {path} as .safetensors ({error!r}). The file is incomplete or corrupt: "
      "write or download it again."
    ) from None


def _read_torch(path: pathlib.Path) -> StateDict:
  loaded = torch_format.load(path)
  state = _unwrap(loaded)
  if not isinstance(state, Mapping):
    raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict.")
  not_tensors = [str(name) for name, value in state.items() if not isinstance(value, np.ndarray)]
  if not_tensors:
    raise WeightsError(
      f"{path}: the state dict has entries that are not tensors: {', '.join(not_tensors[:10])}"
      f"{' ...' if len(not_tensors) > 10 else ''}. Save the model's state_dict() alone."
    )
  return dict(state)


def _unwrap(loaded):
  """MAE saves {"model": state dict, "optimizer": ..., "epoch": ...}; others say "state_dict" or "model_state"."""
  while isinstance(loaded, Mapping):
    inner = next((loaded[key] for key in _WRAPPER_KEYS if isinstance(loaded.get(key), Mapping)), None)
    if inner is None:
      return loaded
    loaded = inner
  return loaded


def _strip_parallel_prefix(state: StateDict) -> StateDict:
  if all(name.startswith(_PARALLEL_PREFIX) for name in state):
    return {name[len(_PARALLEL_PREFIX) :]: value for name, value in state.items()}
  return state
