"""safetensors reading (validated, one slice at a time) and writing, local or remote.

A file is checked against its own header when it is opened: every tensor's byte range must
match its dtype and shape, ranges must not overlap, and the file must be long enough to hold
them. A truncated download then fails at once naming the file and the first tensor it cuts,
instead of as a reshape error deep inside a load.

Reads take a box (a start/stop range per axis) so a sharded load fetches only the slice a
device owns. Local files go through `np.memmap`, mapped per read and dropped afterwards, so
the pages touched do not stay resident for the rest of the load. Remote files (`gs://`, any
epath URI) are read with ranged reads (`seek` + `readinto`) in chunks of whole leading-axis
rows, so memory stays at the box plus one chunk. bfloat16 and float8 come from `ml_dtypes`.
"""
from __future__ import annotations

import json
import math
import os
import struct
import uuid
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import ml_dtypes
import numpy as np

from surveylm_jax import paths

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
# A header larger than this is not a safetensors header (the format caps it at 100 MB).
_MAX_HEADER_BYTES = 100 * 1024 ** 2
# Remote reads fetch whole leading-axis rows in requests of about this size.
REMOTE_CHUNK_BYTES = 64 * 1024 ** 2

Box = Tuple[Tuple[int, int], ...]   # (start, stop) per axis


class SafetensorsError(ValueError):
  """A safetensors file or index that is unreadable, inconsistent or incomplete."""


def _named(path, name: Optional[str] = None) -> str:
  return f"{os.fspath(path)}: tensor {name!r}" if name is not None else os.fspath(path)


class SafetensorsFile:
  """One .safetensors file: `names()`, `shape(name)`, `dtype(name)`, `get(name)`, `read(name, box)`.

  The header is read and checked against the file size when the object is made.
  """

  def __init__(self, path: paths.PathLike):
    self.path = paths.as_path(path)
    self.remote = paths.is_remote(path)
    try:
      size = self.path.stat().length
      with self.path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
          raise SafetensorsError(f"{self.path}: truncated file ({len(raw)} bytes, no header)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(size - 8, _MAX_HEADER_BYTES):
          raise SafetensorsError(
              f"{self.path}: corrupt or truncated header (it claims {header_len} bytes, the "
              f"file has {size})")
        header_bytes = f.read(header_len)
    except FileNotFoundError:
      raise SafetensorsError(f"{self.path}: file does not exist") from None
    try:
      header = json.loads(header_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise SafetensorsError(f"{self.path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
      raise SafetensorsError(f"{self.path}: header is not a JSON object")
    header.pop("__metadata__", None)
    self._header: Dict[str, dict] = header
    self._data_start = 8 + header_len
    self._check_layout(size - self._data_start)

  def _check_layout(self, data_bytes: int) -> None:
    """Each tensor's byte range matches dtype x shape, ranges do not overlap, all fit the file."""
    spans = []
    for name, info in self._header.items():
      try:
        dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
        ok = (all(isinstance(v, int) and v >= 0 for v in (start, end, *shape))
              and isinstance(dtype, str) and start <= end)
      except (KeyError, TypeError, ValueError):
        ok = False
      if not ok:
        raise SafetensorsError(f"{_named(self.path, name)} has a malformed header entry {info!r}")
      if dtype in _DTYPES:
        need = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
        if end - start != need:
          raise SafetensorsError(
              f"{_named(self.path, name)}: header gives {end - start} bytes "
              f"(offsets {start}..{end}) but dtype {dtype} x shape {tuple(shape)} needs {need}")
      spans.append((start, end, name))
    spans.sort()
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
      if s1 < e0:
        raise SafetensorsError(f"{self.path}: tensors {n0!r} (bytes {s0}..{e0}) and {n1!r} "
                               f"(bytes {s1}..{e1}) overlap in the header")
    for start, end, name in spans:
      if end > data_bytes:
        raise SafetensorsError(
            f"{_named(self.path, name)} needs data bytes {start}..{end} but the file holds only "
            f"{data_bytes} bytes of data: the file is truncated (re-download it)")

  def names(self) -> List[str]:
    return list(self._header)

  def __contains__(self, name: str) -> bool:
    return name in self._header

  def shape(self, name: str) -> Tuple[int, ...]:
    return tuple(self._header[name]["shape"])

  def dtype(self, name: str) -> np.dtype:
    code = self._header[name]["dtype"]
    if code not in _DTYPES:
      raise SafetensorsError(f"{_named(self.path, name)} has unsupported dtype {code}")
    return np.dtype(_DTYPES[code])

  def nbytes(self, name: str) -> int:
    start, end = self._header[name]["data_offsets"]
    return end - start

  def get(self, name: str) -> np.ndarray:
    """The whole tensor (local: a read-only memory-mapped view; remote: read into memory)."""
    shape = self.shape(name)
    if self.remote:
      return self.read(name, tuple((0, n) for n in shape))
    return self._mapped(name)

  def read(self, name: str, box: Box) -> np.ndarray:
    """A fresh array holding `tensor[box]`; only the bytes the box needs are fetched."""
    shape = self.shape(name)
    if len(box) != len(shape) or any(not 0 <= a <= b <= n for (a, b), n in zip(box, shape)):
      raise SafetensorsError(f"{_named(self.path, name)}: slice {box} outside shape {shape}")
    if self.remote:
      return self._read_ranged(name, shape, box)
    # np.array copies the box out; the mapping (and its resident pages) goes with `mapped`.
    mapped = self._mapped(name)
    out = np.array(mapped[tuple(slice(a, b) for a, b in box)])
    del mapped
    return out

  def _mapped(self, name: str) -> np.ndarray:
    dtype, shape = self.dtype(name), self.shape(name)
    start, end = self._header[name]["data_offsets"]
    if end == start:
      return np.zeros(shape, dtype)
    raw = np.memmap(os.fspath(self.path), dtype=np.uint8, mode="r",
                    offset=self._data_start + start, shape=(end - start,))
    return raw.view(dtype).reshape(shape)

  def _read_ranged(self, name: str, shape, box: Box) -> np.ndarray:
    """Reads whole rows of the leading axis, a chunk at a time, and keeps the box of each."""
    dtype = self.dtype(name)
    out = np.empty(tuple(b - a for a, b in box), dtype)
    if out.size == 0:
      return out
    rows_shape = tuple(shape) if shape else (1,)     # a scalar reads as one row
    first, stop = box[0] if shape else (0, 1)
    row_bytes = math.prod(rows_shape[1:]) * dtype.itemsize
    per_chunk = max(1, REMOTE_CHUNK_BYTES // max(row_bytes, 1))
    base = self._data_start + self._header[name]["data_offsets"][0]
    keep = (slice(None),) + tuple(slice(a, b) for a, b in box[1:])
    flat_out = out.reshape((stop - first,) + out.shape[1:]) if shape else out.reshape(1)
    with self.path.open("rb") as f:
      for r0 in range(first, stop, per_chunk):
        r1 = min(stop, r0 + per_chunk)
        buf = bytearray((r1 - r0) * row_bytes)
        f.seek(base + r0 * row_bytes)
        got = f.readinto(buf) if hasattr(f, "readinto") else _read_into(f, buf)
        if got != len(buf):
          raise SafetensorsError(f"{_named(self.path, name)}: file ended {len(buf) - got} bytes "
                                 f"early while reading rows {r0}..{r1} (truncated?)")
        chunk = np.frombuffer(buf, dtype).reshape((r1 - r0,) + rows_shape[1:])
        flat_out[r0 - first:r1 - first] = chunk[keep]
    return out


def _read_into(f, buf: bytearray) -> int:
  data = f.read(len(buf))
  buf[:len(data)] = data
  return len(data)


class CheckpointTensors:
  """All tensors of an HF model folder: `model.safetensors` or shards listed by an index.

  Opening checks every file (see `SafetensorsFile`) and the index against the shards: a shard
  that is missing, or a tensor the index places in a shard that does not hold it, is an error
  naming both.
  """

  def __init__(self, folder: paths.PathLike):
    folder = paths.as_path(folder)
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    self._where: Dict[str, SafetensorsFile] = {}
    if index.exists():
      weight_map = _read_weight_map(index)
      files: Dict[str, SafetensorsFile] = {}
      for name, shard in weight_map.items():
        if shard not in files:
          shard_path = folder / shard
          if not shard_path.exists():
            raise SafetensorsError(f"{index}: shard {shard!r} listed for tensor {name!r} is "
                                   f"missing ({shard_path} does not exist)")
          files[shard] = SafetensorsFile(shard_path)
        if name not in files[shard]:
          raise SafetensorsError(f"{index}: tensor {name!r} is listed in shard {shard!r} but "
                                 f"{files[shard].path} does not contain it")
        self._where[name] = files[shard]
    elif single.exists():
      st = SafetensorsFile(single)
      self._where = {n: st for n in st.names()}
    else:
      raise SafetensorsError(
          f"{folder}: no weights found (expected model.safetensors or "
          f"model.safetensors.index.json)")

  def names(self):
    return set(self._where)

  def file(self, name: str) -> SafetensorsFile:
    return self._where[name]

  def shape(self, name: str):
    return self._where[name].shape(name)

  def get(self, name: str) -> np.ndarray:
    return self._where[name].get(name)

  def read(self, name: str, box: Box) -> np.ndarray:
    return self._where[name].read(name, box)


def _read_weight_map(index) -> Dict[str, str]:
  try:
    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
  except json.JSONDecodeError as e:
    raise SafetensorsError(f"{index}: invalid JSON at line {e.lineno} column {e.colno}: "
                           f"{e.msg}") from None
  except (KeyError, TypeError):
    raise SafetensorsError(f"{index}: no 'weight_map' object") from None
  if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
    raise SafetensorsError(f"{index}: 'weight_map' must map tensor names to file names")
  return weight_map


def _temporary_name(path) -> "paths.epath.Path":
  path = paths.as_path(path)
  return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"


def write_safetensors(path: paths.PathLike, tensors: Iterable[Tuple[str, np.ndarray]]) -> None:
  """Writes (name, array) pairs under a temporary name, then renames it to `path`."""
  tensors = [(n, np.ascontiguousarray(a)) for n, a in tensors]
  header, offset = {}, 0
  for name, arr in tensors:
    if arr.dtype not in _NAMES:
      raise SafetensorsError(f"cannot write {name!r}: dtype {arr.dtype} not supported")
    header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                    "data_offsets": [offset, offset + arr.nbytes]}
    offset += arr.nbytes
  header["__metadata__"] = {"format": "pt"}
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)   # keep tensor data 8-byte aligned
  tmp = _temporary_name(path)
  with tmp.open("wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for _, arr in tensors:
      f.write(memoryview(arr.reshape(-1).view(np.uint8)))
  tmp.replace(paths.as_path(path))


def write_sharded(folder: paths.PathLike, tensors: Iterator[Tuple[str, np.ndarray]],
                  max_shard_bytes: int) -> None:
  """Writes model.safetensors, or shards + index when the total exceeds `max_shard_bytes`.

  Tensors are streamed: a shard is written as soon as it is full, so at most one shard's worth
  of converted arrays is held at a time.
  """
  folder = paths.as_path(folder)
  written: List[Tuple["paths.epath.Path", List[Tuple[str, int]]]] = []
  current: List[Tuple[str, np.ndarray]] = []
  size = 0

  def flush():
    tmp = folder / f".shard-{len(written):05d}-{uuid.uuid4().hex[:8]}.safetensors.tmp"
    write_safetensors(tmp, current)
    written.append((tmp, [(n, a.nbytes) for n, a in current]))

  for name, arr in tensors:
    arr = np.asarray(arr)
    if current and size + arr.nbytes > max_shard_bytes:
      flush()
      current, size = [], 0
    current.append((name, arr))
    size += arr.nbytes
  if current or not written:
    flush()
  if len(written) == 1:
    written[0][0].replace(folder / "model.safetensors")
    return
  weight_map, total = {}, 0
  for i, (tmp, entries) in enumerate(written):
    fname = f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
    tmp.replace(folder / fname)
    for name, nbytes in entries:
      weight_map[name] = fname
      total += nbytes
  index = folder / "model.safetensors.index.json"
  tmp = _temporary_name(index)
  tmp.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                            indent=2), encoding="utf-8")
  tmp.replace(index)


def box_of(index: Sequence[slice], shape: Sequence[int]) -> Box:
  """(start, stop) per axis from a tuple of unit-step slices (as jax hands to a callback)."""
  out = []
  for s, n in zip(index, shape):
    start, stop, step = s.indices(n)
    if step != 1:
      raise ValueError(f"strided slice {s} is not a shard")
    out.append((start, max(start, stop)))
  return tuple(out)
