"""Training-free adaptation to a new domain from K normal images of it (docs/adaptation.md has the method, its
figures and its limits).

MMR scores a position by how far the student's reconstruction is from the teacher: per scale, 1 − cos(t, s) = |d|²/2
with d = t/|t| − s/|s| (Eq. 2). Under a domain shift, normal parts the student never saw (a new background, a new
view) get large d too. The adaptation keeps a memory of the discrepancy vectors d of every position of the K normal
images ("shots") of the new domain, plus the zero vector (MMR's own notion of normal), and scores a position by the
squared distance of its d to the nearest memory entry, halved:

    A_s(x) = min_{m ∈ M_s} |d_s(x) − m|² / 2  ≤  |d_s(x)|² / 2 = 1 − cos(t, s)   (the zero vector is in M_s)

What the shots show to be a normal discrepancy (the wood texture's, the turned outline's) stops counting; a defect's
discrepancy, unlike any in the memory, still does. The rest of Eq. 2 is unchanged (upsampling, sum, Gaussian, max).
Nothing is trained and nothing random is drawn: the same shots give the same memory and the same scores.

Each shot enters the memory at the four phases of the coarsest feature grid's half cell (`shifted_phases`): a new
image of the domain places its content anywhere relative to the patch grid, and the features of a stride-16 grid
change with that placement, so one shot seen at one phase covers its own textures only partly. Shifts by half a
cell change no content, unlike flips or rotations (a mirrored part can be a defect: MVTec's flipped metal nut).

Pure jnp, for one student (no seed axis): `scoring.Scorer` vmaps it over the seeds and compiles it on the mesh.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST
EPS = 1e-8  # As the cosine distance of Eq. 1 and 2 (objectives.cosine_distance).
# Memory entries compared at once: bounds the (images × positions × entries) distance block of one step.
CHUNK = 512
ZERO_OWNER, PADDING_OWNER = -1, -2
# What this module computes, recorded beside a saved adaptation: one saved by another method is not reused.
METHOD = "discrepancy memory, 4 half-cell phases"
SHIFTS = ((0, 1), (1, 0), (1, 1))  # (down, right) in half cells: with the shot itself, the four phases.


class Memory(NamedTuple):
  """One scale's memory: `entries` (M, C) discrepancy vectors, `owners` (M,) the shot each came from (ZERO_OWNER
  for the zero vector, PADDING_OWNER for rows that pad M to a multiple of CHUNK)."""

  entries: jax.Array
  owners: jax.Array


def discrepancy(teacher: jax.Array, student: jax.Array) -> jax.Array:
  """d = t/|t| − s/|s| along the channels (norms clamped at EPS as in the cosine distance): |d|²/2 = 1 − cos."""
  t, s = teacher.astype(jnp.float32), student.astype(jnp.float32)
  unit = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), EPS)
  return unit(t) - unit(s)


def shifted_phases(images: jax.Array, coarsest_grid: int) -> jax.Array:
  """The shots (K, H, W, 3) at the other three phases of the coarsest feature grid's half cell, (3K, H, W, 3):
  shifted right, down, and both by H / (2 · coarsest_grid) pixels, the edge they uncover filled by reflection."""
  _, height, width, _ = images.shape
  step = max(1, height // (2 * coarsest_grid))
  padded = jnp.pad(images, ((0, 0), (step, 0), (step, 0), (0, 0)), mode="reflect")
  top_left = [(step * (1 - down), step * (1 - right)) for down, right in SHIFTS]
  return jnp.concatenate([padded[:, y : y + height, x : x + width] for y, x in top_left])


def build_memory(
  teacher: Sequence[jax.Array], student: Sequence[jax.Array], owners_of_images: jax.Array
) -> tuple[Memory, ...]:
  """Per scale, the memory of the shots' features (n, h, w, C): the zero vector, then every position of every image,
  owned by the shot it shows (`owners_of_images` (n,): its index among the shots)."""
  memories = []
  for t, s in zip(teacher, student):
    d = discrepancy(t, s)
    n, h, w, c = d.shape
    entries = jnp.concatenate([jnp.zeros((1, c), jnp.float32), d.reshape(n * h * w, c)])
    owners = jnp.concatenate(
      [jnp.full((1,), ZERO_OWNER, jnp.int32), jnp.repeat(owners_of_images.astype(jnp.int32), h * w)]
    )
    pad = -len(entries) % CHUNK
    entries = jnp.pad(entries, ((0, pad), (0, 0)))
    owners = jnp.pad(owners, (0, pad), constant_values=PADDING_OWNER)
    memories.append(Memory(entries, owners))
  return tuple(memories)


def nearest_distance(d: jax.Array, memory: Memory, exclude: jax.Array | None = None) -> jax.Array:
  """min over the memory of |d − m|²/2 at every position of d (B, h, w, C) → (B, h, w). `exclude` (B,): per image,
  the shot whose entries are left out (its own, for leave-one-out scores)."""
  b, h, w, c = d.shape
  queries = d.reshape(b, h * w, c)
  # |d − m|² = |d|² + (|m|² − 2 d·m): the minimum is taken over the bracket, |d|² added once at the end. Padding
  # rows get |m|² = ∞ and never win.
  norms = jnp.where(memory.owners == PADDING_OWNER, jnp.inf, jnp.sum(memory.entries * memory.entries, axis=-1))

  def step(best, chunk):
    entries, entry_norms, owners = chunk
    partial = entry_norms - 2.0 * jnp.einsum("bqc,mc->bqm", queries, entries, precision=HIGHEST)
    if exclude is not None:
      partial = jnp.where((owners[None, :] == exclude[:, None])[:, None, :], jnp.inf, partial)
    return jnp.minimum(best, jnp.min(partial, axis=-1)), None

  chunks = (memory.entries.reshape(-1, CHUNK, c), norms.reshape(-1, CHUNK), memory.owners.reshape(-1, CHUNK))
  best, _ = jax.lax.scan(step, jnp.full((b, h * w), jnp.inf), chunks)
  distance = jnp.sum(queries * queries, axis=-1) + best
  return (0.5 * jnp.maximum(distance, 0.0)).reshape(b, h, w)  # The expansion can go a rounding below 0.


def adapted_distances(
  teacher: Sequence[jax.Array],
  student: Sequence[jax.Array],
  memories: Sequence[Memory],
  exclude: jax.Array | None = None,
) -> list[jax.Array]:
  """The per-scale maps A_s (B, h, w) that replace 1 − cos(t, s) in Eq. 2 (module docstring)."""
  return [nearest_distance(discrepancy(t, s), m, exclude) for t, s, m in zip(teacher, student, memories)]
