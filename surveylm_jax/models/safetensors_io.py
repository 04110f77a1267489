"""Minimal safetensors reading (memory-mapped, one tensor at a time) and writing.

Reading through `np.memmap` means a tensor's bytes are touched only when it is converted, so a
sharded 7B checkpoint never needs two full copies in host memory. bfloat16 is handled through
`ml_dtypes`, which numpy alone cannot represent.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, Iterable, Iterator, Tuple

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
  pass


class SafetensorsFile:
  """Lazy view of one .safetensors file: `names()`, `shape(name)`, `get(name)`."""

  def __init__(self, path: str):
    self.path = path
    with open(path, "rb") as f:
      raw = f.read(8)
      if len(raw) != 8:
        raise SafetensorsError(f"{path}: truncated file (no header)")
      (header_len,) = struct.unpack("<Q", raw)
      try:
        self._header = json.loads(f.read(header_len))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SafetensorsError(f"{path}: unreadable safetensors header ({e})")
    self._header.pop("__metadata__", None)
    self._data_start = 8 + header_len
    self._mmap = None

  def names(self):
    return list(self._header)

  def shape(self, name: str) -> Tuple[int, ...]:
    return tuple(self._header[name]["shape"])

  def get(self, name: str) -> np.ndarray:
    info = self._header[name]
    if info["dtype"] not in _DTYPES:
      raise SafetensorsError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
    start, end = info["data_offsets"]
    buf = self._mmap[self._data_start + start:self._data_start + end]
    return buf.view(_DTYPES[info["dtype"]]).reshape(info["shape"])


class CheckpointTensors:
  """All tensors of an HF model folder: `model.safetensors` or a sharded set with an index."""

  def __init__(self, folder: str):
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    self._where: Dict[str, SafetensorsFile] = {}
    if os.path.exists(index):
      with open(index, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
      files = {}
      for name, shard in weight_map.items():
        if shard not in files:
          shard_path = os.path.join(folder, shard)
          if not os.path.exists(shard_path):
            raise SafetensorsError(f"{index}: shard {shard!r} listed for {name!r} is missing")
          files[shard] = SafetensorsFile(shard_path)
        self._where[name] = files[shard]
    elif os.path.exists(single):
      st = SafetensorsFile(single)
      self._where = {n: st for n in st.names()}
    else:
      raise SafetensorsError(
          f"{folder}: no weights found (expected model.safetensors or "
          f"model.safetensors.index.json)")

  def names(self):
    return set(self._where)

  def shape(self, name: str):
    return self._where[name].shape(name)

  def get(self, name: str) -> np.ndarray:
    return self._where[name].get(name)


def write_safetensors(path: str, tensors: Iterable[Tuple[str, np.ndarray]]) -> None:
  """Writes (name, array) pairs; arrays are taken in order and written once."""
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
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for _, arr in tensors:
      f.write(arr.tobytes())


def write_sharded(folder: str, tensors: Iterator[Tuple[str, np.ndarray]],
                  max_shard_bytes: int) -> None:
  """Writes model.safetensors, or shards + index when the total exceeds `max_shard_bytes`.

  Tensors are streamed: a shard is written as soon as it is full, so at most one shard's worth
  of converted arrays is held at a time.
  """
  written, current, size = [], [], 0

  def flush():
    tmp = os.path.join(folder, f".shard-{len(written):05d}.tmp")
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
    os.replace(written[0][0], os.path.join(folder, "model.safetensors"))
    return
  weight_map, total = {}, 0
  for i, (tmp, entries) in enumerate(written):
    fname = f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
    os.replace(tmp, os.path.join(folder, fname))
    for name, nbytes in entries:
      weight_map[name] = fname
      total += nbytes
  with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
