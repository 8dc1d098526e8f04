"""Process-wide settings of the entry points: the compilation cache, and the host allocator XLA:CPU runs on."""

import contextlib
import importlib.metadata
import importlib.util
import os
import pathlib
import platform
import sys
from typing import Mapping

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


HELP_FLAGS = ("-h", "--help", "-?", "--helpshort", "--helpfull")


def exit_on_help(doc: str, argv: list[str] = sys.argv, shared_flags_module: str | None = None) -> None:
  """Prints the entry point's docstring and its flags (and those `shared_flags_module` defines for it) and exits 0
  when asked for help (absl's --help exits 1, and would come after the relaunch and the imports)."""
  if not any(arg in HELP_FLAGS for arg in argv[1:]):
    return
  from absl import flags

  text = flags.FLAGS.main_module_help()
  if shared_flags_module:
    text += "\n" + flags.FLAGS.module_help(shared_flags_module)
  print(doc.strip() + "\n\nFlags:\n" + text)
  sys.exit(0)


def flags_help(values) -> str:
  """One line per flag of an absl FlagValues of a command's own (name, help, default), for its --help."""
  return "\n".join(f"  --{name}: {values[name].help} (default: {values[name].default!r})" for name in values)


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
