"""The adaptation's pure parts (mmr_jax/adaptation.py): the shots' half-cell phases and the per-shot coreset. The
adapted model end to end is tested in tests/test_inference.py."""

import jax
import numpy as np

from mmr_jax import adaptation


def test_the_phases_shift_by_half_the_coarsest_cell_and_reflect_the_uncovered_edge():
  image = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
  right, down, both = np.split(np.asarray(adaptation.shifted_phases(image, coarsest_grid=2)), 3)  # Half cell: 2 px.
  np.testing.assert_array_equal(right[:, :, 2:], image[:, :, :-2])
  np.testing.assert_array_equal(right[:, :, :2], image[:, :, 2:0:-1])
  np.testing.assert_array_equal(down[:, 2:], image[:, :-2])
  np.testing.assert_array_equal(down[:, :2], image[:, 2:0:-1])
  np.testing.assert_array_equal(both[:, 2:, 2:], image[:, :-2, :-2])


def test_the_coreset_is_a_farthest_point_traversal_from_zero_that_covers_every_entry():
  """Each kept row was the farthest from zero and the rows kept before it, so the kept rows (and zero) are at least
  the covering radius apart, and every row lies within that radius of one of them."""
  entries = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
  kept, radius = jax.jit(adaptation.coreset, static_argnums=1)(entries, 40)
  kept, radius = np.asarray(kept), float(radius)
  assert len(set(kept.tolist())) == 40 and kept[0] == np.argmax(np.sum(entries**2, axis=1))
  centres = np.concatenate([np.zeros((1, 6), np.float32), entries[kept]])
  squared = np.sum((entries[:, None] - centres[None]) ** 2, axis=-1)
  np.testing.assert_allclose(squared.min(axis=1).max(), radius, rtol=1e-5)
  between = np.sum((centres[:, None] - centres[None]) ** 2, axis=-1) + np.diag(np.full(len(centres), np.inf))
  assert between.min() >= radius * (1 - 1e-5)
  # A larger coreset starts with the same rows (the traversal does not depend on where it stops) and covers closer.
  more, closer = adaptation.coreset(entries, 80)
  np.testing.assert_array_equal(np.asarray(more)[:40], kept)
  assert float(closer) < radius


def test_the_memory_holds_each_shots_coreset_of_its_positions_at_every_phase():
  """Features of 3 shots at 2 phases, phase major: each shot's entries are its own discrepancies (at both phases),
  as many per shot as the fraction asks, and with the fraction 1 all of them."""
  rng = np.random.default_rng(1)
  teacher, student = rng.normal(size=(2, 6, 4, 4, 5)).astype(np.float32)  # (phases · shots, h, w, C)
  d = np.asarray(adaptation.discrepancy(teacher, student)).reshape(2, 3, 16, 5)
  for fraction, size in ((1.0, 32), (0.25, 8)):
    (memory,) = adaptation.build_memory([teacher], [student], phases=2, fraction=fraction)
    entries, owners = np.asarray(memory.entries), np.asarray(memory.owners)
    assert adaptation.coreset_size(32, fraction) == size and len(entries) % adaptation.CHUNK == 0
    np.testing.assert_array_equal(entries[0], 0.0)
    assert owners[0] == adaptation.ZERO_OWNER and np.all(owners[1 + 3 * size :] == adaptation.PADDING_OWNER)
    for shot in range(3):
      own = entries[owners == shot]
      candidates = d[:, shot].reshape(32, 5)
      assert len(own) == size
      assert all(np.any(np.all(candidates == row, axis=1)) for row in own)
      if fraction == 1.0:
        np.testing.assert_array_equal(np.sort(own, axis=0), np.sort(candidates, axis=0))
