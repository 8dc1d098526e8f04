"""Process-wide JAX settings of the entry points."""

import os
import pathlib

import jax


def enable_compilation_cache(directory: str | os.PathLike | None = None,
                             min_compile_seconds: float = 1.0) -> pathlib.Path:
  """Keeps compiled programs on disk (default: $MMR_JAX_COMPILE_CACHE or ~/.cache/mmr_jax/xla), so that a
  resumed or repeated run with the same shapes starts in seconds instead of recompiling."""
  if directory is None:
    directory = os.environ.get("MMR_JAX_COMPILE_CACHE", "~/.cache/mmr_jax/xla")
  directory = pathlib.Path(directory).expanduser()
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
