"""One run per workdir (and one prediction per --out folder): an flock'd WORKDIR/.lock, released by the OS when
the process ends however it ends (a SIGKILLed run leaves no stale lock). The holder's pid and host are written into
the file for the message."""

import fcntl
import os
import pathlib
import socket

from mmr_jax import errors
from mmr_jax import files


class WorkdirLocked(errors.RunError):
  """Another process is running in this workdir."""


class WorkdirLock:
  """Held from `acquire()` until `release()` or the end of the process."""

  def __init__(self, workdir: pathlib.Path, flag: str = "--workdir"):
    self.path = pathlib.Path(workdir) / files.LOCK
    self.flag = flag  # How the user named the folder, for the message.
    self._file = None

  def acquire(self) -> "WorkdirLock":
    self.path.parent.mkdir(parents=True, exist_ok=True)
    handle = self.path.open("a+")
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      handle.close()
      raise WorkdirLocked(
        f"{self.path.parent} is in use by {holder}: wait for it to end (or stop it), or use another {self.flag}"
      ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    self._file = handle
    return self

  def release(self) -> None:
    if self._file is not None:
      self._file.close()  # Closing the descriptor releases the flock.
      self._file = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
