"""The commands' process settings: the glibc allocator relaunch (runtime.relaunch_with_malloc_tunables), and the
platform choices made once at the start (runtime.Platform)."""

import json
import os
import platform
import subprocess
import sys

import jax
import numpy as np
import pytest

from mmr_jax import objectives
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


ZEN3_FLAGS = "fpu sse sse2 avx fma f16c avx2 bmi2 sha_ni vaes vpclmulqdq"  # AMD EPYC 7xx3: no bf16 instructions.


@pytest.mark.parametrize(
  "cpuinfo,has_bf16",
  [
    (f"processor\t: 0\nflags\t\t: {ZEN3_FLAGS}\n", False),
    (f"processor\t: 0\nflags\t\t: {ZEN3_FLAGS} avx512f avx512_bf16\n", True),  # AMD EPYC 9xx4.
    (f"processor\t: 0\nflags\t\t: {ZEN3_FLAGS} avx512f amx_bf16 amx_tile\n", True),  # Intel Xeon (AMX).
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm Neoverse V1.
    ("processor\t: 0\n", False),
  ],
)
def test_bf16_matrix_instructions_read_from_cpuinfo(cpuinfo, has_bf16):
  assert runtime.has_bf16_matmul(cpuinfo) == has_bf16


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bf16_forms_follow_the_cpus_matrix_instructions(has_bf16):
  """im2col and YNNPACK's dots only where bfloat16 has its own instructions (docs/cpu-performance.md); float32
  keeps the native convolution and XLA's dots on every CPU; other platforms get neither, nor any CPU option."""
  cpu = runtime.Platform("cpu", cpu_bf16_matmul=has_bf16)
  assert cpu.conv3x3_form("auto", "float32") == "native"
  assert cpu.conv3x3_form("auto", "bfloat16") == ("im2col" if has_bf16 else "native")
  assert cpu.conv3x3_form("native", "bfloat16") == "native"
  assert cpu.conv3x3_form("im2col", "float32") == "im2col"
  fusions = lambda dtype: cpu.compiler_options(dtype)["xla_cpu_experimental_ynn_fusion_type"].split(",")
  assert fusions("float32") == ["LIBRARY_FUSION_TYPE_REDUCE"]
  dots = ["LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"] if has_bf16 else []
  assert fusions("bfloat16") == ["LIBRARY_FUSION_TYPE_REDUCE", *dots]
  # The scorer's programs, whose K students share one batch, keep the dots' choice and leave the reductions out.
  shared = lambda dtype: cpu.compiler_options(dtype, seeds_share_inputs=True)["xla_cpu_experimental_ynn_fusion_type"]
  assert shared("float32") == "" and shared("bfloat16") == ",".join(dots)
  for accelerator in ("tpu", "cuda"):
    platform = runtime.Platform(accelerator)
    assert platform.conv3x3_form("auto", "bfloat16") == "native" and platform.compiler_options("bfloat16") is None
  with pytest.raises(ValueError, match="model.conv3x3"):
    cpu.conv3x3_form("winograd", "float32")


def test_the_platform_of_this_process_reads_the_host_once():
  platform = runtime.Platform.of(jax.devices()[0])
  assert platform.backend == jax.devices()[0].platform
  assert platform.cpu_bf16_matmul == (platform.backend == "cpu" and runtime.cpu_has_bf16_matmul())


def test_the_scorers_options_reduce_over_features_shared_by_k_seeds_exactly():
  """The scorer vmaps K students over one batch's teacher features. Compiled with YNNPACK's reductions, jaxlib
  0.10.2 computed this 1 − cos wrong for every seed but the first (by up to 1.4); the scorer's options leave them
  out (`seeds_share_inputs`), and each seed's distances are then exact."""
  options = runtime.Platform.of(jax.devices()[0]).compiler_options("float32", seeds_share_inputs=True)
  rng = np.random.default_rng(0)
  teacher = rng.normal(size=(8, 40, 40, 24)).astype(np.float32)  # The demo's first scale, a batch of 8.
  students = rng.normal(size=(3, 8, 40, 40, 24)).astype(np.float32)
  shared = jax.jit(jax.vmap(objectives.cosine_distance, in_axes=(None, 0)), compiler_options=options)
  norms = np.linalg.norm(teacher, axis=-1) * np.linalg.norm(students, axis=-1)
  np.testing.assert_allclose(shared(teacher, students), 1 - np.sum(teacher * students, axis=-1) / norms, atol=1e-5)
