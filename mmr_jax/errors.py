"""What a user can get wrong ends in one of these: a message that says what to do, and an exit code per kind.

The entry points (train.py, evaluate.py) print such an error as one line, without a traceback (`--verbose` shows
it), and exit with its code; anything else is a bug in the project and keeps its traceback.
"""

import sys
from typing import Callable


class UserError(Exception):
  """A problem with the user's config, data, weights, workdir or checkpoints, not with the code. Exit codes:
  2 config, 3 data, 4 weights, 6 workdir and checkpoints."""

  exit_code = 2


class RunError(UserError):
  """The workdir cannot serve this run: a checkpoint trained with another config, a lock held by another run."""

  exit_code = 6


def exit_on_user_error(body: Callable[[], None], verbose: bool = False) -> None:
  """Runs an entry point's body; a UserError ends the process with its message on one line (its traceback only
  when `verbose`) and its exit code."""
  try:
    body()
  except UserError as error:
    if verbose:
      raise
    print(f"error: {error}", file=sys.stderr)
    sys.exit(error.exit_code)
