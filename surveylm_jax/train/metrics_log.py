"""Run logging: WORKDIR/metrics.jsonl, TensorBoard event files and a console progress line.

Only the writer process (`multihost.is_writer`) writes; every other process keeps quiet so
multi-host logs are not duplicated. The metrics it is given are already host floats, the same on
every process (the steps return them replicated), so nothing here gathers.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, Optional

from surveylm_jax import multihost, paths


def _plain(value):
  try:
    return float(value)
  except (TypeError, ValueError):
    return value


class MetricsLogger:
  def __init__(self, workdir: str, total_steps: int, *, stream=None, tensorboard: bool = True):
    self.total_steps = total_steps
    self.active = multihost.is_writer()
    self.stream = stream or sys.stderr
    self._start = time.time()
    self._start_step: Optional[int] = None
    self._jsonl = None
    self._tb = None
    if self.active:
      paths.makedirs(workdir)
      # Appends locally; on gs:// (no append there) rewrites the object, at most every 30 s.
      self._jsonl = paths.AppendFile(paths.join(workdir, "metrics.jsonl"))
      if tensorboard:
        from tensorboardX import SummaryWriter
        # tensorboardX writes gs:// itself (google-cloud-storage); a str, not an epath.
        self._tb = SummaryWriter(os.fspath(paths.join(workdir, "tensorboard")))

  def write(self, step: int, metrics: Dict[str, float], prefix: str = "") -> None:
    if not self.active:
      return
    record = {"step": int(step)}
    record.update({prefix + k: _plain(v) for k, v in metrics.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in record.items():
        if k != "step" and isinstance(v, float):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()

  def progress(self, step: int, metrics: Dict[str, float]) -> None:
    """One console line: step, loss, lr, throughput and ETA."""
    if not self.active:
      return
    now = time.time()
    if self._start_step is None:
      self._start_step, self._start = step, now
      eta = "?"
    else:
      rate = (step - self._start_step) / max(now - self._start, 1e-9)
      remaining = (self.total_steps - step) / rate if rate > 0 else float("inf")
      eta = f"{remaining:5.0f}s"
    parts = [f"step {step}/{self.total_steps}"]
    for key in ("loss", "learning_rate", "grad_norm", "tokens_per_second"):
      if key in metrics:
        parts.append(f"{key} {float(metrics[key]):.4g}")
    parts.append(f"eta {eta}")
    print(" | ".join(parts), file=self.stream, flush=True)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()
