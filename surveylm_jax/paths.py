"""One path type for everything the project reads or writes: `etils.epath.Path`.

Local paths and `gs://` (and the other schemes epath knows) go through the same calls, so a
workdir, a model folder or a data file on a bucket works wherever a local one does. Code takes
`str | os.PathLike` from configs and turns it into a Path with `as_path` at the boundary.
"""
from __future__ import annotations

import os
import uuid
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike, epath.Path]


class UnwritableLocationError(OSError):
  """An output location that cannot be written, found before any work starts."""


def as_path(path: PathLike) -> epath.Path:
  return path if isinstance(path, epath.Path) else epath.Path(path)


def is_remote(path: PathLike) -> bool:
  """True for URI paths (`gs://...`, a registered scheme), False for the local filesystem."""
  return "://" in os.fspath(path)


def join(path: PathLike, *parts: str) -> epath.Path:
  return as_path(path).joinpath(*parts)


def check_writable(path: PathLike, what: str) -> epath.Path:
  """Creates `path` (a folder) if needed and writes/removes a probe file in it; an
  UnwritableLocationError naming `what` and the path otherwise. Called at start by every
  `launch/` main for its outputs, so a bad location fails in seconds, not after training."""
  folder = as_path(path)
  probe = folder / f".write-probe-{uuid.uuid4().hex[:8]}"
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # noqa: BLE001 - every backend raises its own type; all mean "not writable"
    raise UnwritableLocationError(f"{what} {os.fspath(folder)!s} cannot be written: "
                                  f"{type(e).__name__}: {e}") from None
  return folder
