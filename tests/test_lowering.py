"""The programs of a run lower for TPU and CUDA on this CPU (mmr_jax/lowering.py): the teacher, the training step
(one seed and K seeds in one program) and the scoring, at the paper's shapes (ViT-B/16 + WRN50-2, 224², batch 16)
and the demo's, from shapes alone; and what would not run there is caught: the CPU's compiler options, the CPU's
convolution form, a host callback."""

import jax
import jax.numpy as jnp
import pytest

from configs import aebad_s
from configs import synthetic
from mmr_jax import config as config_lib
from mmr_jax import lowering
from mmr_jax import runtime

# Custom calls that mean a sharding annotation, not a kernel: they run on every platform.
SHARDING_CALLS = {"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"}


def config_of(module, **overrides):
  config = module.get_config()
  config.data.synthetic = False  # Shapes only: nothing is read.
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config_lib.validate(config)


def custom_call_targets(exported) -> set[str]:
  text = exported.mlir_module()
  return {line.split("@", 1)[1].split("(", 1)[0] for line in text.splitlines() if "stablehlo.custom_call @" in line}


@pytest.mark.parametrize(
  "module,num_seeds", [(aebad_s, 1), (synthetic, 2)], ids=["paper ViT-B+WRN50 224 batch 16", "demo, 2 seeds"]
)
def test_the_programs_lower_for_tpu_and_cuda(module, num_seeds):
  config = config_of(module, num_seeds=num_seeds)
  exported = lowering.lower(config)
  assert set(exported) == {"teacher", "train_step", "scoring"}
  for name, program in exported.items():
    assert program.platforms == ("cuda", "tpu"), name
    assert custom_call_targets(program) <= SHARDING_CALLS, (name, custom_call_targets(program))
  state = exported["train_step"].in_avals[0]  # The seed axis leads every leaf of the K-seed state.
  assert all(leaf.shape[0] == num_seeds for leaf in jax.tree_util.tree_leaves(state) if leaf.shape)
  assert exported["scoring"].out_avals[0].shape == (num_seeds, config.eval_batch_size, *(config.data.image_size,) * 2)


def test_accelerator_programs_take_none_of_the_cpus_choices(monkeypatch):
  """In bfloat16 on a CPU with bf16 matrix instructions the run would compute the 3×3 convolutions as im2col dots
  with YNNPACK options; a TPU or GPU program keeps the native convolution and no option, whatever this host is."""
  config = config_of(synthetic, **{"model.compute_dtype": "bfloat16"})
  step = lambda platforms: lowering.lower(config, platforms)["train_step"]
  counts = lambda program: lowering.operation_counts(program, ("stablehlo.convolution",))["stablehlo.convolution"]
  float32_step = lowering.lower(config_of(synthetic), ("tpu",))["train_step"]
  assert counts(step(("tpu",))) == counts(float32_step) > 0
  assert runtime.Platform("cpu", cpu_bf16_matmul=True).compiler_options("bfloat16") is not None
  cpu_im2col = lowering.lower(config, ("cpu",), platform=runtime.Platform("cpu", cpu_bf16_matmul=True))["train_step"]
  assert counts(cpu_im2col) == 0  # What a leak of the CPU's form would look like: no convolution left.
  # A CPU-only option forced into an accelerator's step is refused before anything is lowered.
  monkeypatch.setattr(
    runtime.Platform, "compiler_options", lambda self, dtype, **_: {"xla_cpu_enable_fast_math": "true"}
  )
  with pytest.raises(lowering.LoweringError, match="tpu programs carry the CPU's compiler options"):
    step(("tpu",))


def test_a_host_callback_in_a_step_does_not_lower_for_an_accelerator():
  def step(x):
    jax.debug.callback(print, x)
    return x * 2

  with pytest.raises(ValueError, match="callback|different from the lowering platform tpu"):
    jax.export.export(jax.jit(step), platforms=("tpu",))(jax.ShapeDtypeStruct((4,), jnp.float32))
