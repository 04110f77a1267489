"""Host-local numpy batches -> global jax.Arrays sharded over a mesh's data axes."""
from __future__ import annotations

import jax
from jax.sharding import NamedSharding, PartitionSpec


def make_global_batch(batch: dict, mesh: jax.sharding.Mesh, data_axes=("data",)) -> dict:
  """Each process passes its own rows; the global batch is their concatenation along axis 0."""
  sharding = NamedSharding(mesh, PartitionSpec(tuple(data_axes)))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
