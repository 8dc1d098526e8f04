"""Reads files written by `torch.save` without PyTorch: tensors come back as NumPy arrays.

Two formats exist (docs/weights.md describes both):
  zip     (torch ≥ 1.6): a zip archive holding `<archive>/data.pkl`, one raw file per storage
          `<archive>/data/<key>`, and `<archive>/byteorder`;
  legacy  (torch < 1.6, and `_use_new_zipfile_serialization=False`): one stream of pickles — a magic number, a
          protocol version, a dict describing the writer's machine, the object itself, the list of storage keys,
          then each storage as an int64 element count followed by its raw bytes.
In both, the object's pickle refers to storages through "persistent ids" and rebuilds tensors by calling
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.

A pickle can name any importable callable and have it called. The unpickler here resolves only the names that
rebuilding tensors needs, each to a NumPy stand-in written here (torch's own functions are never looked up), and
refuses every other name with `UnsafeCheckpoint` before anything runs. A tensor's offset and strides are checked
against its storage before it is read, so a malformed file cannot make the reader touch memory outside it.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import pickle
import zipfile
from typing import Any, BinaryIO, Callable

import numpy as np

from mmr_jax.weights.errors import WeightsError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafeCheckpoint(WeightsError):
  """The file's pickle names a global that rebuilding tensors does not need; nothing from it was run."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands in for torch.FloatStorage & co.: only the element type matters."""

  name: str
  dtype: np.dtype  # Little-endian element type as stored; bfloat16 is read as its uint16 bit pattern.
  widen_bfloat16: bool = False


_STORAGE_TYPES = {
  name: _StorageType(name, np.dtype(dtype), name == "BFloat16Storage")
  for name, dtype in (
    ("FloatStorage", "<f4"),
    ("HalfStorage", "<f2"),
    ("BFloat16Storage", "<u2"),
    ("DoubleStorage", "<f8"),
    ("LongStorage", "<i8"),
    ("IntStorage", "<i4"),
    ("ShortStorage", "<i2"),
    ("CharStorage", "i1"),
    ("ByteStorage", "u1"),
    ("BoolStorage", "?"),
  )
}


@dataclasses.dataclass
class _Storage:
  """One storage: a flat array of `numel` elements, read on first use (views share their root's array)."""

  kind: _StorageType
  numel: int
  read: Callable[[], np.ndarray]
  _array: np.ndarray | None = None

  def array(self) -> np.ndarray:
    if self._array is None:
      array = self.read()
      if array.size != self.numel:
        raise WeightsError(
          f"a storage holds {array.size} elements where the file's index says {self.numel}: the "
          "file is truncated or corrupt"
        )
      self._array = array
    return self._array


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
  """bfloat16 is the top half of a float32: exact widening (NumPy has no bfloat16 of its own)."""
  return (bits.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(
  storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *unused: Any
) -> np.ndarray:
  """torch._utils._rebuild_tensor(_v2): the strided view of `storage`, copied out as a NumPy array."""
  if not isinstance(storage, _Storage):
    raise WeightsError(f"a tensor is rebuilt from {type(storage).__name__}, not from a storage: corrupt file")
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or offset < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
    raise WeightsError(f"a tensor has an invalid layout (offset {offset}, size {size}, stride {stride}): corrupt file")
  flat = storage.array()
  if 0 in size:
    values = np.empty(size, flat.dtype)
  else:
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.numel:
      raise WeightsError(
        f"a tensor (offset {offset}, size {size}, stride {stride}) reaches element {last} of a "
        f"storage of {storage.numel}: corrupt file"
      )
    values = np.lib.stride_tricks.as_strided(flat[offset:], size, [s * flat.itemsize for s in stride], writeable=False)
  values = np.array(values, values.dtype.newbyteorder("="), order="C")  # A contiguous, native-endian copy.
  return _bfloat16_to_float32(values) if storage.kind.widen_bfloat16 else values


def _rebuild_parameter(data: np.ndarray, *unused: Any) -> np.ndarray:
  """torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
  return data


class _TensorClass:
  """Stands in for torch.Tensor and torch.nn.Parameter, which `_rebuild_from_type_v2` receives."""


def _rebuild_from_type_v2(function: Callable, new_type: Any, args: tuple, state: Any) -> np.ndarray:
  """torch._tensor._rebuild_from_type_v2: rebuild with `function`; the (sub)class and its state are dropped."""
  if new_type is not _TensorClass:
    raise UnsafeCheckpoint(f"a tensor of type {new_type!r} cannot be read without torch")
  return function(*args)


_ALLOWED = {
  ("collections", "OrderedDict"): collections.OrderedDict,
  ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
  ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
  ("torch", "Tensor"): _TensorClass,
  ("torch.nn.parameter", "Parameter"): _TensorClass,
  **{("torch", name): kind for name, kind in _STORAGE_TYPES.items()},
}


class _Deferred:
  """A tensor-rebuilding call, made once every storage can be read (in the legacy format the bytes follow the
  pickle that refers to them)."""

  def __init__(self, function: Callable, args: tuple):
    self.function, self.args = function, args


def _deferred(function: Callable) -> Callable:
  return lambda *args: _Deferred(function, args)


def _resolve(value: Any) -> Any:
  """`value` with every `_Deferred` replaced by the tensor it rebuilds."""
  if isinstance(value, _Deferred):
    return _resolve(value.function(*(_resolve(arg) for arg in value.args)))
  if isinstance(value, dict):
    return type(value)((key, _resolve(item)) for key, item in value.items())
  if isinstance(value, (list, tuple)):
    return type(value)(_resolve(item) for item in value)
  return value


_ALLOWED = {
  ("collections", "OrderedDict"): collections.OrderedDict,
  ("torch._utils", "_rebuild_tensor"): _deferred(_rebuild_tensor),
  ("torch._utils", "_rebuild_tensor_v2"): _deferred(_rebuild_tensor),
  ("torch._utils", "_rebuild_parameter"): _deferred(_rebuild_parameter),
  ("torch._utils", "_rebuild_parameter_with_state"): _deferred(_rebuild_parameter),
  ("torch._tensor", "_rebuild_from_type_v2"): _deferred(_rebuild_from_type_v2),
  ("torch", "Tensor"): _TensorClass,
  ("torch.nn.parameter", "Parameter"): _TensorClass,
  **{("torch", name): kind for name, kind in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED` names; storages come from `load_storage(persistent id)`."""

  def __init__(self, stream: BinaryIO, source: str, load_storage: Callable[[tuple], _Storage] | None = None):
    super().__init__(stream, encoding="utf-8")
    self._source = source
    self._load_storage = load_storage

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name.endswith("Storage"):
      raise UnsafeCheckpoint(
        f"{self._source} holds tensors of type torch.{name}, which this reader does not "
        f"support (supported: {', '.join(_STORAGE_TYPES)})"
      )
    raise UnsafeCheckpoint(
      f"{self._source} asks to import {module}.{name}, which rebuilding tensors does not need; the file was "
      "refused and nothing in it was run. Only state dicts of tensors (possibly inside dicts) can be read: "
      "load the file with torch on a trusted machine and save `model.state_dict()` alone."
    )

  def persistent_load(self, pid: Any) -> Any:
    is_storage = isinstance(pid, tuple) and pid and _ascii(pid[0]) == "storage"
    if not is_storage or self._load_storage is None:
      kind = _ascii(pid[0]) if isinstance(pid, tuple) and pid else type(pid).__name__
      raise UnsafeCheckpoint(
        f"{self._source} refers to a pickled object of kind {kind!r} where only tensor "
        "storages belong; only state dicts of tensors can be read"
      )
    return self._load_storage(pid)


def _ascii(value: Any) -> Any:
  return value.decode("ascii") if isinstance(value, bytes) else value


def _storage_kind(kind: Any, source: str) -> _StorageType:
  if not isinstance(kind, _StorageType):
    raise WeightsError(f"{source}: a storage of unknown type {kind!r}: corrupt file")
  return kind


def load(path: str | pathlib.Path) -> Any:
  """The object `torch.save` wrote to `path`, with every tensor as a NumPy array."""
  path = pathlib.Path(path)
  try:
    if zipfile.is_zipfile(path):
      return _load_zip(path)
    with open(path, "rb") as stream:
      return _load_legacy(stream, str(path))
  except (WeightsError, MemoryError):
    raise
  except Exception as error:  # pickle, zipfile and NumPy raise many types for damaged files.
    raise WeightsError(
      f"could not read {path} as a PyTorch file ({type(error).__name__}: {error}). The file is "
      "incomplete or corrupt: download or save it again."
    ) from None


def _load_zip(path: pathlib.Path) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
      raise WeightsError(
        f"{path} is a zip archive but not one written by torch.save (no single '<archive>/data.pkl' in it)"
      )
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in names:
      byteorder = archive.read(f"{prefix}byteorder").decode("ascii").strip()
    order = "<" if byteorder == "little" else ">"
    storages: dict[str, _Storage] = {}

    def load_storage(pid: tuple) -> _Storage:
      _, kind, key, _location, numel = pid[:5]
      kind, key = _storage_kind(kind, str(path)), str(_ascii(key))
      if key not in storages:
        dtype = kind.dtype.newbyteorder(order)
        storages[key] = _Storage(kind, int(numel), lambda: np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype))
      return storages[key]

    with archive.open(pickles[0]) as stream:
      return _resolve(_RestrictedUnpickler(stream, str(path), load_storage).load())


def _load_legacy(stream: BinaryIO, source: str) -> Any:
  header = _RestrictedUnpickler(stream, source)
  try:
    magic = header.load()
  except pickle.UnpicklingError:
    magic = None
  if magic != _LEGACY_MAGIC:
    raise WeightsError(
      f"{source} is neither a zip nor a legacy torch.save file (the tar format of torch < 0.4 "
      "is not supported): load it with torch and save it again"
    )
  protocol = header.load()
  if protocol != _LEGACY_PROTOCOL:
    raise WeightsError(f"{source}: legacy torch.save protocol {protocol} is not supported ({_LEGACY_PROTOCOL} is)")
  machine = header.load()
  order = "<" if not isinstance(machine, dict) or machine.get("little_endian", True) else ">"
  roots: dict[str, _Storage] = {}
  views: dict[str, _Storage] = {}
  arrays: dict[str, np.ndarray] = {}  # Root storages' contents, read after the object's pickle.

  def load_storage(pid: tuple) -> _Storage:
    _, kind, root_key, _location, numel, view = pid
    kind, root_key = _storage_kind(kind, source), str(_ascii(root_key))
    if root_key not in roots:
      roots[root_key] = _Storage(kind, int(numel), lambda: arrays[root_key])
    if view is None:
      return roots[root_key]
    view_key, offset, view_numel = view
    view_key, offset, view_numel = str(_ascii(view_key)), int(offset), int(view_numel)
    if view_key not in views:
      root = roots[root_key]
      views[view_key] = _Storage(kind, view_numel, lambda: root.array()[offset : offset + view_numel])
    return views[view_key]

  unpickled = _RestrictedUnpickler(stream, source, load_storage).load()
  for key in _RestrictedUnpickler(stream, source).load():
    key = str(_ascii(key))
    if key not in roots:
      raise WeightsError(f"{source} lists a storage {key!r} that no tensor uses: corrupt file")
    count = int(np.frombuffer(_read_exactly(stream, 8, source), order + "i8")[0])
    dtype = roots[key].kind.dtype.newbyteorder(order)
    arrays[key] = np.frombuffer(_read_exactly(stream, count * dtype.itemsize, source), dtype)
  return _resolve(unpickled)


def _read_exactly(stream: BinaryIO, size: int, source: str) -> bytes:
  data = stream.read(size)
  if len(data) != size:
    raise WeightsError(f"{source} ends early (a truncated download or copy): download or save it again")
  return data
