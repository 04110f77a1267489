"""Many passes over a fixed set of batches without re-running the frozen layers below the trained
ones (`train.cache_lower_layers = N`, with `lora.train_top_layers`).

When only the top layers' adapters train, the layers below them compute the same residual stream
for a batch at every step (their params and adapters never change, and LoRA dropout is off).
On a CPU the lower layers' forward pass is most of a top-layer step, so re-running it for every
pass over a small training set wastes most of the budget. The first N batches of the training
stream therefore go through the lower layers once; the steps then cycle over those N batches in
a seeded order that is reshuffled every pass, each batch carrying its residual stream under
`step.LOWER_RESIDUAL`, and the jitted step runs the upper layers only.

The order is a function of the step number alone, so a resumed run rebuilds the cache from the
start of the (deterministic) training stream and continues with exactly the batches an
uninterrupted run would have seen.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator, List

import jax
import numpy as np

from surveylm_jax.train.step import LOWER_RESIDUAL


class LowerCacheError(ValueError):
  pass


def check_config(config, split_layer: int) -> int:
  """The number of batches to cache (0 = off); raises where caching would change the result."""
  count = int(config.train.cache_lower_layers)
  if count <= 0:
    return 0
  if not split_layer:
    raise LowerCacheError(
        f"train.cache_lower_layers={count} needs lora.train_top_layers between 1 and the "
        f"model's layers - 1 (frozen layers below the trained ones); it is "
        f"{config.lora.train_top_layers}")
  if float(config.lora.dropout) > 0:
    raise LowerCacheError(
        f"train.cache_lower_layers={count} needs lora.dropout=0 (the frozen layers would "
        f"otherwise draw new dropout masks every step); it is {config.lora.dropout}")
  return count


class LowerLayerCache:
  """Step-ready batches with their lower-layer residual streams, replayed in a per-pass shuffled
  order."""

  def __init__(self, batches: List[dict], residuals: list, seed: int, answer_slots: int = 0):
    if not batches or len(batches) != len(residuals):
      raise LowerCacheError(f"{len(batches)} batches but {len(residuals)} residual streams")
    self.batches, self.residuals, self.seed = batches, residuals, int(seed)
    self.answer_slots = int(answer_slots)

  @classmethod
  def build(cls, stream: Iterator[dict], count: int, residual_fn: Callable[[dict], object],
            seed: int, prepare: Callable[[int, dict], dict] = lambda i, b: b, printer=print,
            every: float = 10.0) -> "LowerLayerCache":
    """Takes `count` host batches from `stream`; each is prepared once (`prepare(i, host)`:
    checked and placed on the devices) and run through `residual_fn` once."""
    batches, residuals, slots = [], [], 0
    start = last = time.time()
    for i in range(count):
      try:
        host = next(stream)
      except StopIteration:
        raise LowerCacheError(f"train.cache_lower_layers={count}: the training stream ended "
                              f"after {i} batches") from None
      if "option_positions" in host:
        slots += int(np.sum(np.asarray(host["option_positions"]) >= 0))
      batch = prepare(i, host)
      batches.append(batch)
      # Wait for each result: the progress line should time the work, not its dispatch.
      residuals.append(jax.block_until_ready(residual_fn(batch)))
      now = time.time()
      if now - last >= every or i + 1 == count:
        last = now
        rate = (i + 1) / max(now - start, 1e-9)
        printer(f"[lower-layer cache] {i + 1}/{count} batches, ~{(count - i - 1) / rate:.0f}s "
                "left", flush=True)
    return cls(batches, residuals, seed, slots)

  def __len__(self) -> int:
    return len(self.batches)

  def index(self, step: int) -> int:
    """Which cached batch step `step` (0-based) trains on: passes are seeded permutations."""
    n = len(self.batches)
    order = np.random.default_rng([self.seed, step // n]).permutation(n)
    return int(order[step % n])

  def batch(self, step: int) -> dict:
    """The batch of step `step` with its residual stream under `LOWER_RESIDUAL`."""
    i = self.index(step)
    return dict(self.batches[i], **{LOWER_RESIDUAL: self.residuals[i]})

  def nbytes(self) -> int:
    return int(sum(np.prod(r.shape) * r.dtype.itemsize for r in self.residuals))
