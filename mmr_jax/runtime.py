"""Process-wide settings and host facts, decided once where a command starts and handed down as plain values: the
compilation cache, the host allocator XLA:CPU runs on, and the `Platform` the compiled functions are built for
(which convolution form, which compiler options). Nothing below this module looks at the host."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import importlib.util
import os
import pathlib
import platform
import sys
from typing import Any, Mapping

# glibc's malloc settings for XLA:CPU. A compiled step mallocs its temporary buffers (GiBs at the paper's
# configuration) and glibc serves blocks that large as fresh mmaps, unmapped again on free: every step
# page-faults its whole working set anew, 4 KiB at a time (≈ 930k minor faults and 6 s of kernel time per
# training step on a 2-core machine). Transparent huge pages on that memory make it 512× fewer faults: 22.3 →
# 19.5 s per training batch, 11.8 → 9.6 s per inference batch at the paper's configuration. Keeping freed
# memory in the heap instead (arena_max=1, mmap_max=0, no trim) saved no more within the noise, and kept peak
# memory at the sum of all programs' buffers (9.9 GiB instead of 6.4).
MALLOC_TUNABLES = {"glibc.malloc.hugetlb": "1"}
# Set to 0 to keep the allocator as it is. The second variable marks a relaunched process: never twice.
MALLOC_TUNING_VARIABLE = "MMR_JAX_MALLOC_TUNING"
RELAUNCHED_VARIABLE = "MMR_JAX_RELAUNCHED"


def enable_compilation_cache(
  directory: str | os.PathLike | None = None, min_compile_seconds: float = 1.0
) -> pathlib.Path:
  """Keeps compiled programs on disk (default: $MMR_JAX_COMPILE_CACHE or ~/.cache/mmr_jax/xla), so that a
  resumed or repeated run with the same shapes starts in seconds instead of recompiling."""
  import jax  # # Here, so that the relaunch and --help never import JAX.

  if directory is None:
    directory = os.environ.get("MMR_JAX_COMPILE_CACHE", "~/.cache/mmr_jax/xla")
  directory = pathlib.Path(directory).expanduser()
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


def computes_on_cpu(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether JAX will pick its CPU backend, decided without starting a backend: JAX_PLATFORMS names it first,
  or is unset and no accelerator plugin (CUDA, ROCm, TPU) is installed."""
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  if importlib.util.find_spec("libtpu") is not None:
    return False
  if importlib.metadata.entry_points(group="jax_plugins"):
    return False
  namespace = importlib.util.find_spec("jax_plugins")
  return namespace is None or not list(namespace.submodule_search_locations or [])


def malloc_tuned_environment(environ: Mapping[str, str], *, libc: str, on_cpu: bool) -> dict[str, str] | None:
  """The environment to relaunch with: `environ` plus the MALLOC_TUNABLES that GLIBC_TUNABLES lacks (a value
  the user set is kept). None where nothing is to be done: set already, opted out, not glibc, not the CPU."""
  if (
    libc != "glibc" or not on_cpu or environ.get(RELAUNCHED_VARIABLE) or environ.get(MALLOC_TUNING_VARIABLE, "1") == "0"
  ):
    return None
  current = environ.get("GLIBC_TUNABLES", "")
  named = {item.split("=", 1)[0] for item in current.split(":") if "=" in item}
  missing = [f"{name}={value}" for name, value in MALLOC_TUNABLES.items() if name not in named]
  if not missing:
    return None
  return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [current, *missing])), RELAUNCHED_VARIABLE: "1"}


def relaunch_with_malloc_tunables() -> None:
  """Re-executes this program (same interpreter and command line) with MALLOC_TUNABLES, which glibc reads only
  at process start; returns at once where `malloc_tuned_environment` says there is nothing to do. Call it first
  thing in an entry point's `if __name__ == "__main__":` block, never from library code: it replaces the
  calling process."""
  environment = malloc_tuned_environment(os.environ, libc=platform.libc_ver()[0], on_cpu=computes_on_cpu())
  if environment is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environment)


def flags_help(values) -> str:
  """One line per flag of an absl FlagValues of a command's own (name, help, default), for its --help; boolean
  flags as absl writes them, --[no]name."""
  name_of = lambda name: f"[no]{name}" if values[name].boolean else name
  return "\n".join(f"  --{name_of(name)}: {values[name].help} (default: {values[name].default!r})" for name in values)


@functools.cache
def import_tensorflow():
  """TensorFlow, imported with its C++ start-up lines silenced (below) and kept off every GPU: tf.data and TFDS
  run on the host, and a GPU that TF grabbed would be memory JAX cannot use."""
  with native_stderr_silenced():
    import tensorflow as tf  # only the modules that need TF call this
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF was initialised before; its device list can no longer change.
    pass
  return tf


@contextlib.contextmanager
def native_stderr_silenced():
  """Sends what native code writes to file descriptor 2 meanwhile to /dev/null: TensorFlow's C++ start-up lines
  (oneDNN, CPU features, absl's pre-initialisation notice), which no TF variable turns off any more. An exception
  raised inside still propagates and prints afterwards. MMR_JAX_NATIVE_LOGS=1 keeps the lines."""
  if os.environ.get("MMR_JAX_NATIVE_LOGS") == "1":
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


# /proc/cpuinfo flags of bfloat16 matrix instructions: x86's AVX512-BF16 and AMX-BF16, Arm's BF16.
BF16_MATMUL_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# model.conv3x3: "auto" is resolved here (`Platform.conv3x3_form`); the models take one of the concrete forms.
CONV3X3_CHOICES = ("auto", "im2col", "native")


def has_bf16_matmul(cpuinfo: str) -> bool:
  """Whether /proc/cpuinfo's text lists a bfloat16 matrix instruction for its first CPU (x86 "flags", Arm
  "Features")."""
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    if key.strip() in ("flags", "Features"):
      return not BF16_MATMUL_CPU_FLAGS.isdisjoint(value.split())
  return False


@functools.cache
def cpu_has_bf16_matmul() -> bool:
  """Whether this host's CPU has bfloat16 matrix instructions. Where it has, a bf16 dot with float32
  accumulation in YNNPACK runs 2× (AVX512-BF16) to 4× (AMX) the float32 rate; where it has not (AVX2 only), at
  0.6× the float32 rate in YNNPACK and at the float32 rate in XLA's own kernels (docs/cpu-performance.md). Read
  from /proc/cpuinfo; False where that cannot be read (other systems): the choice that is never slower."""
  try:
    return has_bf16_matmul(pathlib.Path("/proc/cpuinfo").read_text())
  except OSError:
    return False


@dataclasses.dataclass(frozen=True)
class Platform:
  """Where a run's programs execute and the host facts their form depends on. Built once from the mesh's devices
  (`Platform.of`), or named for another platform (`Platform("tpu")`: what a program lowered on this CPU for a TPU
  is built with); the models and steps receive only what it resolves (a convolution form, compiler options)."""

  backend: str  # JAX's platform name of the devices: "cpu", "cuda", "rocm", "tpu".
  cpu_bf16_matmul: bool = False  # Only ever True when backend is "cpu".

  @classmethod
  def of(cls, device: Any) -> Platform:
    """The platform of a JAX device (e.g. `mesh.devices.flat[0]`), with the host CPU's facts where it is one."""
    backend = device.platform
    return cls(backend, cpu_bf16_matmul=backend == "cpu" and cpu_has_bf16_matmul())

  def bf16_matmul_units(self, compute_dtype: str) -> bool:
    """Whether computing in `compute_dtype` (model.compute_dtype) uses the CPU's bf16 matrix instructions."""
    return compute_dtype != "float32" and self.backend == "cpu" and self.cpu_bf16_matmul

  def conv3x3_form(self, requested: str, compute_dtype: str) -> str:
    """model.conv3x3 resolved for this platform: "auto" is the native convolution, except im2col where bfloat16
    runs on the CPU's bf16 matrix instructions: XLA's bfloat16 convolutions run no faster than float32 there,
    while bfloat16 dots with float32 accumulation run at the bf16 rate (docs/cpu-performance.md). The teacher's
    k×k convolutions follow the same choice."""
    if requested not in CONV3X3_CHOICES:
      raise ValueError(f"model.conv3x3 must be one of {CONV3X3_CHOICES}, got {requested!r}")
    if requested != "auto":
      return requested
    return "im2col" if self.bf16_matmul_units(compute_dtype) else "native"

  def compiler_options(self, compute_dtype: str, seeds_share_inputs: bool = False) -> dict[str, str] | None:
    """XLA options of a run's compiled functions for this platform and model.compute_dtype.

    On the CPU, XLA hands convolutions, dots and reductions to YNNPACK by default. Its convolutions slow this
    model down (the native 3×3 backward by 5×, the teacher by a third), so they go to XLA's own kernels; its
    reductions are kept, 5× faster than XLA's for the cosine distances of Eq. 1 and 2. Its single dots are kept
    only where bfloat16 runs on the CPU's bf16 matrix instructions (`bf16_matmul_units`): the only path on which
    a bf16 dot reaches that rate (2× float32 on AVX512-BF16). Elsewhere XLA's own dots are as fast in float32 and
    faster in bfloat16 without those instructions (1.7×), and keep the rounding of K seeds in one program equal
    to that of one seed alone. docs/cpu-performance.md has the figures. Other platforms: no option.

    `seeds_share_inputs`: for a program that vmaps K seeds over inputs they share (scoring: one batch's teacher
    features for every student). YNNPACK's reductions are left out there: with an operand broadcast across the
    seeds, jaxlib 0.10.2 computed Eq. 2's 1 − cos wrong for every seed but the first (by up to 1.4, at the demo's
    shapes; tests/test_runtime.py checks the options the scorer uses).
    """
    if self.backend != "cpu":
      return None
    fusions = [] if seeds_share_inputs else ["LIBRARY_FUSION_TYPE_REDUCE"]
    if self.bf16_matmul_units(compute_dtype):
      fusions.append("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
    return {"xla_cpu_experimental_ynn_fusion_type": ",".join(fusions)}
