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

The four phases repeat much of each shot, so each shot's entries are thinned to a greedy farthest-point coreset
(`coreset`, a fraction CORESET_FRACTION of them), each shot on its own: every dropped entry stays within the
coreset's covering radius of a kept one, the memory and the scoring cost shrink by that fraction, and the memory of
the other shots, which gives a shot its leave-one-out score, is exactly what adapting to them alone would build.

Pure jnp, for one student (no seed axis): `scoring.Scorer` vmaps it over the seeds and compiles it on the mesh.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST
EPS = 1e-8  # As the cosine distance of Eq. 1 and 2 (objectives.cosine_distance).
# Memory entries compared at once: bounds the (images × positions × entries) distance block of one step.
CHUNK = 512
ZERO_OWNER, PADDING_OWNER = -1, -2
SHIFTS = ((0, 1), (1, 0), (1, 1))  # (down, right) in half cells: with the shot itself, the four phases.
# Of each shot's entries (its positions at the four phases), the share kept (docs/adaptation.md has the figures).
CORESET_FRACTION = 0.25
# What this module computes, recorded beside a saved adaptation: one saved by another method is not reused.
METHOD = f"discrepancy memory, 4 half-cell phases, per-shot coreset {CORESET_FRACTION:g}"


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


def coreset(entries: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
  """Greedy farthest-point selection of `size` rows of `entries` (N, C), starting from the zero vector (always in
  the memory): each step keeps the row farthest from everything kept so far. Returns the kept rows' indices (size,)
  and the covering radius, squared: every row is within it of a kept row or of zero. Deterministic (ties go to the
  first row)."""
  entries = jnp.asarray(entries, jnp.float32)

  def keep_farthest(i, state):
    distance, kept = state
    farthest = jnp.argmax(distance)
    to_farthest = jnp.sum(jnp.square(entries - entries[farthest]), axis=-1)
    return jnp.minimum(distance, to_farthest), kept.at[i].set(farthest)

  initial = (jnp.sum(jnp.square(entries), axis=-1), jnp.zeros((size,), jnp.int32))
  distance, kept = jax.lax.fori_loop(0, size, keep_farthest, initial)
  return kept, jnp.max(distance)


def coreset_size(entries_per_shot: int, fraction: float = CORESET_FRACTION) -> int:
  """How many of a shot's entries (its positions at every phase) its coreset keeps."""
  return max(1, math.ceil(fraction * entries_per_shot))


def per_shot(features: jax.Array, phases: int) -> jax.Array:
  """(phases · K, h, w, C) features, phase major (the K shots, then the K shots at the next phase, ...) →
  (K, phases · h · w, C): each shot's positions at every phase, the rows its coreset is chosen from."""
  n, h, w, c = features.shape
  return features.reshape(phases, n // phases, h * w, c).transpose(1, 0, 2, 3).reshape(n // phases, -1, c)


def build_memory(
  teacher: Sequence[jax.Array], student: Sequence[jax.Array], phases: int, fraction: float = CORESET_FRACTION
) -> tuple[Memory, ...]:
  """Per scale, the memory of K shots seen at `phases` phases, from their features (phases · K, h, w, C), phase
  major (`per_shot`): the zero vector, then each shot's coreset of its positions at every phase (`fraction` of
  them; 1 keeps them all), owned by the shot's index."""
  memories = []
  for t, s in zip(teacher, student):
    d = discrepancy(t, s)
    by_shot = per_shot(d, phases)
    shots, positions, c = by_shot.shape
    size = coreset_size(positions, fraction)
    if size < positions:
      kept, _ = jax.vmap(lambda entries: coreset(entries, size))(by_shot)
      by_shot = jnp.take_along_axis(by_shot, kept[..., None], axis=1)
    entries = jnp.concatenate([jnp.zeros((1, c), jnp.float32), by_shot.reshape(shots * size, c)])
    owners = jnp.concatenate(
      [jnp.full((1,), ZERO_OWNER, jnp.int32), jnp.repeat(jnp.arange(shots, dtype=jnp.int32), size)]
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
