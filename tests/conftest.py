"""Test-session settings: compiled programs are cached on disk for the session, so tests that build the same
functions again (a resumed run, a second evaluation) load them instead of compiling them again; converted
weights go to a session folder, never to the user's cache."""

import os

import pytest

from mmr_jax import runtime
from mmr_jax.data import synthetic
from mmr_jax.weights import fetch


@pytest.fixture(scope="session", autouse=True)
def weights_cache(tmp_path_factory):
  """$MMR_JAX_CACHE for the session (subprocesses inherit it)."""
  folder = tmp_path_factory.mktemp("weights_cache")
  previous = os.environ.get(fetch.CACHE_ENV)
  os.environ[fetch.CACHE_ENV] = str(folder)
  yield folder
  if previous is None:
    os.environ.pop(fetch.CACHE_ENV, None)
  else:
    os.environ[fetch.CACHE_ENV] = previous


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """The session's cache folder, for this process, the commands run in it (cli.run) and the subprocesses that
  compile the same programs; never the user's."""
  folder = tmp_path_factory.mktemp("xla_cache")
  previous = os.environ.get("MMR_JAX_COMPILE_CACHE")
  os.environ["MMR_JAX_COMPILE_CACHE"] = str(folder)
  yield runtime.enable_compilation_cache(folder, min_compile_seconds=0.2)
  if previous is None:
    os.environ.pop("MMR_JAX_COMPILE_CACHE", None)
  else:
    os.environ["MMR_JAX_COMPILE_CACHE"] = previous


@pytest.fixture(scope="session")
def calibrated_run(data_root, tmp_path_factory):
  """(config, workdir) of a tiny run trained for one epoch with held-out normals, shared by the tests of what a
  trained workdir serves (test_inference) and of what must leave it untouched (test_probes)."""
  from mmr_jax import experiment
  from tests import test_training

  config = test_training.tiny_config(data_root, **test_training.CALIBRATED)
  workdir = tmp_path_factory.mktemp("calibrated_run")
  experiment.train(config, workdir)
  return config, workdir


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
  """The generated AeBAD-like dataset at its tiny size (64×72 px, 8 training images), shared by the training and
  inference tests."""
  root = tmp_path_factory.mktemp("tiny_data")
  synthetic.generate(root, seed=0, size="tiny")
  return root
