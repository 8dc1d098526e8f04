"""Proof, on any machine, that a config's programs lower for an accelerator: the teacher, the training step (one seed
and K seeds in one program) and the students' scoring, exported for TPU and CUDA with `jax.export` from their
shapes alone (jax.eval_shape: no weights are read and no device of that kind is needed).

The programs are built as a run on that platform builds them (`runtime.Platform("tpu")`): its convolution form and
no compiler option of the CPU's. What would not run there fails here: a CPU-only custom call or a host callback
(jax.export refuses both for another platform), an XLA:CPU option, or the CPU's convolution form in the program.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from mmr_jax import experiment
from mmr_jax import runtime
from mmr_jax.training import sharding

ACCELERATORS = ("cuda", "tpu")


class LoweringError(Exception):
  """A program that would not run on the platform it was built for."""


def check_compiler_options(options: dict[str, str] | None, platform: runtime.Platform) -> None:
  """XLA:CPU's options belong to CPU programs only."""
  cpu_only = sorted(key for key in options or {} if key.startswith("xla_cpu"))
  if cpu_only and platform.backend != "cpu":
    raise LoweringError(f"the {platform.backend} programs carry the CPU's compiler options {', '.join(cpu_only)}")


def abstract_arguments(run: experiment.Run) -> dict[str, tuple[Any, ...]]:
  """The arguments of each program as ShapeDtypeStructs with the run's shardings, from the config's shapes."""
  config, scorer, mesh = run.config, run.scorer, run.mesh
  k, b, size = config.num_seeds, config.batch_size, config.data.image_size
  with_sharding = lambda shape, spec, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype, sharding=spec)
  per_seed = sharding.batch_sharding(mesh, extra_leading_axes=1)
  images = with_sharding((k, b, size, size, 3), per_seed)
  test_images = with_sharding((config.eval_batch_size, size, size, 3), sharding.batch_sharding(mesh))
  teacher = sharding.abstract_replicated(scorer.abstract_teacher_params(), mesh)
  features = jax.eval_shape(scorer.teacher_fn, teacher, images)
  test_features = jax.eval_shape(scorer.teacher_fn, teacher, jax.ShapeDtypeStruct((1, *test_images.shape), jnp.float32))
  test_features = tuple(with_sharding(f.shape[1:], sharding.batch_sharding(mesh)) for f in test_features)
  state = run.abstract_state()
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
  return {
    "teacher": (teacher, images),
    "train_step": (state, images, with_sharding((k, b), per_seed), features, 1e-3),
    "scoring": (state.params, test_images, test_features, rng),
  }


def lower(
  config: ml_collections.ConfigDict,
  platforms: tuple[str, ...] = ACCELERATORS,
  mesh: jax.sharding.Mesh | None = None,
  platform: runtime.Platform | None = None,
) -> dict[str, jax.export.Exported]:
  """The config's programs built for `platforms` (as `platform` describes them; default runtime.Platform of the
  first) and exported for them: the accelerators, which a run builds alike (the native convolution, no compiler
  option), or the CPU alone. Raises LoweringError, or jax.export's own error, where a program would not run."""
  if "cpu" in platforms and len(platforms) > 1:
    raise ValueError(f"the CPU's programs differ from the accelerators': lower {platforms} one at a time")
  run = experiment.Run(config, mesh, platform=platform or runtime.Platform(platforms[0]))
  for options in (run.scorer.compiler_options, run.scorer.scoring_options):
    check_compiler_options(options, run.scorer.platform)
  programs = {"teacher": run.scorer.teacher_fn, "train_step": run.train_step, "scoring": run.scorer.anomaly_fn}
  arguments = abstract_arguments(run)
  return {name: jax.export.export(program, platforms=platforms)(*arguments[name]) for name, program in programs.items()}


def operation_counts(exported: jax.export.Exported, operations: tuple[str, ...]) -> dict[str, int]:
  """How often each StableHLO operation (e.g. "stablehlo.convolution") appears in an exported program."""
  text = exported.mlir_module()
  return {operation: text.count(f"{operation}") for operation in operations}
