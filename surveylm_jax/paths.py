"""One path type for everything the project reads or writes: `etils.epath.Path`.

Local paths and `gs://` (and the other schemes epath knows) go through the same calls, so a
workdir, a model folder or a data file on a bucket works wherever a local one does. Code takes
`str | os.PathLike` from configs and turns it into a Path with `as_path` at the boundary.

Three things differ on an object store and are handled here rather than at every call site:
* there are no folders: `makedirs` does nothing remotely (fsspec's gcs `makedirs` would create a
  *bucket* for a mistyped name);
* an object is published whole when its writer closes: there is no append (gcsfs quietly turns
  mode "a" into "w") and nothing is visible while a file is open; `AppendFile` covers logs;
* some libraries take local file names only (matplotlib takes a file object, but pyreadstat,
  `transformers` tokenizers and numpy memmaps want a name): `local_copy` gives them one.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from typing import Collection, Iterator, Optional, Union

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


def absolute(path: PathLike) -> epath.Path:
  """A local path made absolute against the working directory; a URI unchanged (os.path.abspath
  would turn `gs://b/x` into `<cwd>/gs:/b/x`)."""
  return as_path(path) if is_remote(path) else epath.Path(os.path.abspath(os.fspath(path)))


def makedirs(path: PathLike) -> epath.Path:
  """Creates a local folder and its parents; nothing for an object store, which has no folders
  (an object's name is its whole path) and where creating one could create a bucket."""
  folder = as_path(path)
  if not is_remote(folder):
    folder.mkdir(parents=True, exist_ok=True)
  return folder


def read_text(path: PathLike) -> str:
  """The file's text as UTF-8 on every backend (fsspec's text mode decodes with the locale's
  encoding, and survey text is often not ASCII)."""
  return as_path(path).read_bytes().decode("utf-8")


def write_text(path: PathLike, text: str) -> epath.Path:
  """Writes `text` as UTF-8 on every backend (see `read_text`)."""
  path = as_path(path)
  path.write_bytes(text.encode("utf-8"))
  return path


def write_atomic(path: PathLike, data: Union[str, bytes]) -> epath.Path:
  """Writes a whole file so that a reader never sees part of it: locally a temporary file beside
  it, renamed over it; remotely a plain write, since an object appears only once its upload is
  complete (a rename there would be a second copy)."""
  path = as_path(path)
  data = data.encode("utf-8") if isinstance(data, str) else data
  if is_remote(path):
    path.write_bytes(data)
    return path
  tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
  try:
    tmp.write_bytes(data)
    tmp.replace(path)
  finally:
    tmp.unlink(missing_ok=True)
  return path


class AppendFile:
  """A text file that lines are appended to and that readers see as it grows: a log.

  Locally an ordinary file in append mode. On an object store, where there is no append and an
  object appears only when closed, the text so far (what the object already held, then the new
  lines) is kept and the whole object rewritten on `flush` — at most every `min_interval_s`
  seconds, so a log written every step does not upload every step — and always on `close`.
  """

  def __init__(self, path: PathLike, min_interval_s: float = 30.0):
    self.path = as_path(path)
    self.remote = is_remote(self.path)
    self.min_interval_s = min_interval_s
    if self.remote:
      self._text = [read_text(self.path)] if self.path.exists() else []
      self._dirty, self._uploaded_at = False, 0.0
    else:
      makedirs(self.path.parent)
      self._file = self.path.open("a", encoding="utf-8")

  def write(self, text: str) -> None:
    if self.remote:
      self._text.append(text)
      self._dirty = True
    else:
      self._file.write(text)

  def flush(self, force: bool = False) -> None:
    if not self.remote:
      self._file.flush()
    elif self._dirty and (force or time.time() - self._uploaded_at >= self.min_interval_s):
      write_text(self.path, "".join(self._text))
      self._dirty, self._uploaded_at = False, time.time()

  def close(self) -> None:
    if self.remote:
      self.flush(force=True)
    else:
      self._file.close()


def copy_file(src: PathLike, dst: PathLike) -> epath.Path:
  """Copies one file, across filesystems if need be (local -> gs://, gs:// -> local, ...)."""
  src, dst = as_path(src), as_path(dst)
  if is_remote(src) or is_remote(dst):
    with src.open("rb") as fin, dst.open("wb") as fout:
      shutil.copyfileobj(fin, fout, 1 << 20)
  else:
    shutil.copyfile(os.fspath(src), os.fspath(dst))
  return dst


def _download(src: epath.Path, dst: str, names: Optional[Collection[str]] = None) -> None:
  if src.is_dir():
    os.makedirs(dst, exist_ok=True)
    for child in src.iterdir():
      if names is None or child.name in names:
        _download(child, os.path.join(dst, child.name))
  else:
    copy_file(src, dst)


@contextlib.contextmanager
def local_copy(path: PathLike, *, names: Optional[Collection[str]] = None) -> Iterator[str]:
  """A local name for `path` (a file or a folder) while the block runs, for libraries that only
  open local names: the path itself when local, else a temporary download, removed after.
  `names` limits a folder's download to those entries (a model folder's tokenizer files, not
  its weights)."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  src = as_path(path)
  with tempfile.TemporaryDirectory(prefix="surveylm-") as tmp:
    local = os.path.join(tmp, src.name)
    _download(src, local, None if names is None else frozenset(names))
    yield local


def check_writable(path: PathLike, what: str) -> epath.Path:
  """Creates `path` (a folder) if needed and writes/removes a probe file in it; an
  UnwritableLocationError naming `what` and the path otherwise. Called at start by every
  `launch/` main for its outputs, so a bad location fails in seconds, not after training."""
  folder = as_path(path)
  probe = folder / f".write-probe-{uuid.uuid4().hex[:8]}"
  try:
    makedirs(folder)
    probe.write_text("ok")
    probe.unlink()
  except Exception as e:  # noqa: BLE001 - every backend raises its own type; all mean "not writable"
    raise UnwritableLocationError(f"{what} {os.fspath(folder)!s} cannot be written: "
                                  f"{type(e).__name__}: {e}") from None
  return folder
