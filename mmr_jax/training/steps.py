"""The compiled functions of training: teacher features and the training step (Eq. 1 + AdamW).

Every function works on K independent models at once (a leading seed axis on the state and the batch, K = 1
for a plain run): one compiled program trains K seeds side by side. The batch axis is sharded over the mesh's
'data' axis and parameters are replicated (data parallelism); XLA inserts the gradient all-reduce. Compiler
options are the platform's (mmr_jax.runtime.Platform.compiler_options), passed in by the caller.
"""

import functools
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmr_jax import objectives
from mmr_jax.models import layers
from mmr_jax.models import mmr
from mmr_jax.training import sharding

CompilerOptions = dict[str, str] | None


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training. In a run every leaf has a leading seed axis K."""

  step: jax.Array  # int32
  params: Any
  opt_state: Any
  rng: jax.Array  # Raw PRNG key data (uint32), split once per step for the masking noise.


def create_train_state(params: Any, tx: optax.GradientTransformation, seed_key: jax.Array) -> TrainState:
  """One seed's initial state (no seed axis); `stack` K of them for a run."""
  return TrainState(
    step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=jax.random.key_data(seed_key)
  )


def at_precision(function: Callable, precision: str) -> Callable:
  """`function` traced under `jax.default_matmul_precision(precision)` (model.precision): every dot and
  convolution without an explicit precision, the student's and the teacher's, gets it. On GPUs "default" is TF32
  and on TPUs one bfloat16 pass; "highest" is float32 on every backend; on the CPU all three are float32."""
  if precision not in layers.PRECISIONS:
    raise ValueError(f"model.precision must be one of {layers.PRECISIONS}, got {precision!r}")

  @functools.wraps(function)
  def traced(*args):
    with jax.default_matmul_precision(precision):
      return function(*args)

  return traced


def make_teacher_fn(
  teacher: nn.Module, mesh: jax.sharding.Mesh, precision: str = "highest", compiler_options: CompilerOptions = None
) -> Callable:
  """(teacher_params, images (K, B, H, W, 3)) → three (K, B, h, w, C) float32 feature maps. Compiled on its own:
  the teacher needs no gradient, and a separate program lets XLA schedule its convolutions best (CPU notes).
  Training and scoring share it."""
  batch = sharding.batch_sharding(mesh, extra_leading_axes=1)

  def features(teacher_params, images):
    k, b = images.shape[:2]
    maps = mmr.teacher_features(teacher, teacher_params, images.reshape(k * b, *images.shape[2:]))
    return tuple(m.reshape(k, b, *m.shape[1:]) for m in maps)

  return jax.jit(
    at_precision(features, precision),
    in_shardings=(sharding.replicated(mesh), batch),
    out_shardings=batch,
    compiler_options=compiler_options,
  )


def make_train_step(
  student: nn.Module,
  tx: optax.GradientTransformation,
  mask_ratio: float,
  mesh: jax.sharding.Mesh,
  precision: str = "highest",
  compiler_options: CompilerOptions = None,
) -> Callable:
  """(state, images (K,B,H,W,3), weights (K,B), teacher features, lr) → (state, metrics); the old state's buffers
  are donated. `weights` is 1 for real images and 0 for the rows that pad an epoch's last, smaller batch: the loss
  is the mean over the real images only, so that batch trains as the published one does (docs/spec.md §6)."""
  batch = sharding.batch_sharding(mesh, extra_leading_axes=1)
  replicated = sharding.replicated(mesh)

  def one_seed(state: TrainState, images, weights, teacher_features, lr):
    rng, masking_rng = jax.random.split(jax.random.wrap_key_data(state.rng))

    def loss_fn(params):
      features = student.apply({"params": params}, images, mask_ratio, rngs={"masking": masking_rng})
      return objectives.reconstruction_loss(teacher_features, features, weights)

    (loss, per_scale), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    hyperparams = {**state.opt_state.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)}
    updates, opt_state = tx.update(grads, state.opt_state._replace(hyperparams=hyperparams), state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
    # A NaN or Inf anywhere in a tree makes its norm NaN or Inf: checking the norms (a finite norm overflows only
    # past |x| ≈ 1e19) saves a reduction per leaf, which XLA compiles one by one.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    metrics = {
      "loss": loss,
      "loss_per_scale": per_scale,
      "grad_norm": grad_norm,
      "param_norm": param_norm,
      "finite": finite,
    }
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=jax.random.key_data(rng))
    return new_state, metrics

  step = at_precision(jax.vmap(one_seed, in_axes=(0, 0, 0, 0, None)), precision)
  return jax.jit(
    step,
    in_shardings=(replicated, batch, batch, batch, None),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
    compiler_options=compiler_options,
  )
