"""Test-session settings: compiled programs are cached on disk for the session, so tests that build the same
functions again (a resumed run, a second evaluation) load them instead of compiling them again."""

import pytest

from mmr_jax import runtime


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """The session's cache folder; subprocesses that compile the same programs can be pointed at it too."""
  return runtime.enable_compilation_cache(tmp_path_factory.mktemp("xla_cache"), min_compile_seconds=0.2)
