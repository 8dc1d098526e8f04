"""The entry points' process settings: the glibc allocator relaunch (runtime.relaunch_with_malloc_tunables)."""

import json
import os
import platform
import subprocess
import sys

import pytest

from mmr_jax import runtime

FULL = ":".join(f"{name}={value}" for name, value in runtime.MALLOC_TUNABLES.items())


def test_tuned_environment_adds_what_is_missing_and_keeps_the_users_values():
  env = runtime.malloc_tuned_environment({"PATH": "/bin"}, libc="glibc", on_cpu=True)
  assert env["GLIBC_TUNABLES"] == FULL and env["PATH"] == "/bin" and env[runtime.RELAUNCHED_VARIABLE] == "1"
  mine = "glibc.malloc.arena_max=4:glibc.cpu.x86_rep_movsb_threshold=4096"
  env = runtime.malloc_tuned_environment({"GLIBC_TUNABLES": mine}, libc="glibc", on_cpu=True)
  assert env["GLIBC_TUNABLES"] == f"{mine}:{FULL}"  # The user's own settings first, unchanged.
  declined = {"GLIBC_TUNABLES": ":".join(f"{name}=0" for name in runtime.MALLOC_TUNABLES)}
  assert runtime.malloc_tuned_environment(declined, libc="glibc", on_cpu=True) is None  # Never overridden.


@pytest.mark.parametrize(
  "environ, libc, on_cpu",
  [
    ({"GLIBC_TUNABLES": FULL}, "glibc", True),  # Already set: no relaunch loop.
    ({runtime.RELAUNCHED_VARIABLE: "1"}, "glibc", True),  # Relaunched once already.
    ({runtime.MALLOC_TUNING_VARIABLE: "0"}, "glibc", True),  # Opted out.
    ({}, "", True),  # musl, macOS: no glibc tunables.
    ({}, "glibc", False),  # A GPU or TPU run: host allocations are not the bottleneck.
  ],
)
def test_no_relaunch_where_nothing_is_to_be_done(environ, libc, on_cpu):
  assert runtime.malloc_tuned_environment(environ, libc=libc, on_cpu=on_cpu) is None


def test_cpu_detection_follows_jax_platforms():
  assert runtime.computes_on_cpu({"JAX_PLATFORMS": "cpu"})
  assert not runtime.computes_on_cpu({"JAX_PLATFORMS": "cuda,cpu"})
  assert not runtime.computes_on_cpu({"JAX_PLATFORMS": "tpu"})


# The child relaunches itself, then mallocs and touches 512 MiB: with the tunables in force glibc asks for
# transparent huge pages, so that costs ≈ 256 page faults (2 MiB each) instead of 131,072 (4 KiB each).
CHILD = """
import ctypes, json, os, resource, sys
from mmr_jax import runtime
runtime.relaunch_with_malloc_tunables()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 512 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(ctypes.c_void_p(block))
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES", ""), "faults": faults, "argv": sys.argv[1:]}))
"""


def run_child(**env_extra: str) -> dict:
  env = {
    k: v
    for k, v in os.environ.items()
    if k not in ("GLIBC_TUNABLES", runtime.RELAUNCHED_VARIABLE, runtime.MALLOC_TUNING_VARIABLE)
  }
  env.update(JAX_PLATFORMS="cpu", **env_extra)
  lines = subprocess.run(
    [sys.executable, "-c", CHILD, "--flag=1"], env=env, capture_output=True, text=True, check=True
  ).stdout.splitlines()
  assert len(lines) == 1, lines  # The program ran to its end once, in the relaunched process only.
  return json.loads(lines[0])


def transparent_huge_pages() -> str:
  """The kernel's THP mode: 'always', 'madvise' (what glibc.malloc.hugetlb=1 asks for) or 'never'."""
  try:
    text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
  except OSError:
    return "never"
  return text[text.index("[") + 1 : text.index("]")]


@pytest.mark.skipif(
  platform.libc_ver()[0] != "glibc" or transparent_huge_pages() == "never",
  reason="needs glibc and a kernel with transparent huge pages",
)
def test_relaunched_process_gets_huge_pages():
  tuned = run_child()
  assert tuned["tunables"] == FULL and tuned["argv"] == ["--flag=1"]  # Same command line, tunables in force.
  assert tuned["faults"] < 4096, tuned  # 2 MiB pages: 256 faults (slack for pages the kernel splits).
  if transparent_huge_pages() == "madvise":  # Where THP is 'always', every process gets huge pages anyway.
    untuned = run_child(**{runtime.MALLOC_TUNING_VARIABLE: "0"})
    assert untuned["tunables"] == "" and untuned["faults"] > 65536, untuned  # 4 KiB pages.
