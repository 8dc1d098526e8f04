"""Errors of weight import: each one carries a message that says what went wrong and what to do."""

from mmr_jax import errors


class WeightsError(errors.UserError, ValueError):
  """A checkpoint could not be read, fetched or mapped onto the model."""

  exit_code = 4


class ChecksumMismatch(WeightsError):
  """A downloaded or hand-placed file is not the published file."""


class DownloadFailed(WeightsError):
  """A catalog file could not be downloaded (no network, bad URL, timeout)."""


class FixedTableMismatch(WeightsError):
  """A checkpoint's position table is not the fixed sin-cos table that the model computes."""
