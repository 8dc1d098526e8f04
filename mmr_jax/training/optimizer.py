"""AdamW with the published parameter groups and the per-epoch learning-rate schedule (docs/spec.md §6)."""

import jax
import ml_collections
import optax


def published_settings() -> ml_collections.ConfigDict:
  """The published optimiser and schedule (docs/spec.md §6), config.optim's defaults: AdamW (β = 0.9, 0.95),
  weight decay 0.05, lr 1e-3 set once per epoch, 50 warm-up epochs, ÷10 after epochs 120 and 160."""
  return ml_collections.ConfigDict(
    dict(
      lr=1e-3, warmup_epochs=50, decay_epochs=(120, 160), decay_factor=0.1, weight_decay=0.05, b1=0.9, b2=0.95, eps=1e-8
    )
  )


def learning_rate(epoch: int, optim: ml_collections.ConfigDict) -> float:
  """The rate for a whole epoch: linear warm-up from 0 (epoch 0 trains at lr 0), then the base rate, divided
  by 1/decay_factor each time epoch + 1 reaches one of `decay_epochs`. (The published docstring says cosine;
  the published code is this step schedule.)"""
  if epoch < optim.warmup_epochs:
    return optim.lr * epoch / optim.warmup_epochs
  decays = sum(epoch + 1 >= boundary for boundary in optim.decay_epochs)
  return optim.lr * optim.decay_factor**decays


def weight_decay_mask(params):
  """Decay every trainable parameter with ≥ 2 dimensions (kernels, the cls and mask tokens); not 1-D ones."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW whose learning rate is a hyperparameter in the state, set from `learning_rate(epoch)` each step."""
  return optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
    learning_rate=0.0, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay, mask=weight_decay_mask
  )
