"""What one writer needs from arrays that may span processes.

On one process every array is fully addressable and `host_copy` is `jax.device_get`. With FSDP
across processes (a multi-host TPU slice or GPU cluster) no process holds a whole parameter, so
the arrays are all-gathered first; that is a collective, so *every* process must call
`host_copy` with the same tree, and then only `is_writer()` writes.
"""
from __future__ import annotations

import jax
import numpy as np


def is_writer() -> bool:
  """The one process that writes files meant once per run (process 0)."""
  return jax.process_index() == 0


def host_copy(tree):
  """Numpy copy of `tree` on every process; gathers arrays that span processes (collective)."""
  leaves = jax.tree_util.tree_leaves(tree)
  spans = any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves)
  if not spans:
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
  from jax.experimental import multihost_utils
  return jax.tree_util.tree_map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
