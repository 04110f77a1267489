"""Where inference arrays live, read off the params themselves.

Params placed on a mesh (sharded by the logical-axis rules, as in training) carry their
`NamedSharding`; scoring and generation ask `of(params)` how to place each batch and how to bring
results back, so the same code runs on one device, on a mesh of one process and on a mesh that
spans processes:

- `put(x)`: a host batch becomes a global array whose rows are spread over the mesh's batch axes
  (`data` x `fsdp`), or replicated when the rows do not divide among them (a last, short batch).
  Every process passes the same whole batch (evaluation runs the same deterministic loop on every
  process), and each keeps only the rows its devices own.
- `get(x)`: a result as numpy on every process; arrays that span processes are all-gathered,
  which is a collective, so every process calls it in the same order.

`Placement` on a single device is jax's default behaviour: no copies, no collectives.
"""
from __future__ import annotations

import contextlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from surveylm_jax import multihost

BATCH_AXES = ("data", "fsdp")


class Placement:
  """One device (or whatever jax's default placement does): host arrays in, numpy out."""

  mesh = None

  def context(self):
    """The context programs for this placement are traced in (a mesh: see MeshPlacement)."""
    return contextlib.nullcontext()

  def put(self, x, batch: bool = True):
    del batch
    return jax.numpy.asarray(x)

  def get(self, x) -> np.ndarray:
    return np.asarray(x)


class MeshPlacement(Placement):
  """Params sharded on `mesh`; batches spread over its batch axes; results gathered."""

  def __init__(self, mesh: Mesh, rules=()):
    self.mesh = mesh
    self.rules = tuple(rules)
    self.batch_axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    self.batch_shards = int(np.prod([mesh.shape[a] for a in self.batch_axes])) if self.batch_axes else 1

  def sharding_for(self, shape, batch: bool = True) -> NamedSharding:
    if batch and shape and self.batch_shards > 1 and shape[0] % self.batch_shards == 0:
      return NamedSharding(self.mesh, PartitionSpec(self.batch_axes, *([None] * (len(shape) - 1))))
    return NamedSharding(self.mesh, PartitionSpec())

  def context(self):
    """Traced under the mesh, so a kernel XLA cannot partition (Pallas splash attention) is run
    per device through shard_map over it."""
    return self.mesh

  def put(self, x, batch: bool = True):
    x = np.asarray(x)
    sharding = self.sharding_for(x.shape, batch)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  def get(self, x) -> np.ndarray:
    return multihost.host_copy(x)


def of(params) -> Placement:
  """The placement params were put in: a mesh of more than one device, else the default."""
  for leaf in jax.tree_util.tree_leaves(params):
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
      return MeshPlacement(sharding.mesh)
    if sharding is not None:
      return Placement()
  return Placement()
