"""Device mesh, logical-axis rules, and sharded creation of params and optimizer state.

Params carry logical axis names (`embed`, `heads`, `mlp`, ...); one rules table (config
`sharding_rules`) maps each name to mesh axes (`data`, `fsdp`, `tensor`). Changing parallelism
means changing the mesh sizes or the rules, never the code.

Sharded creation: `jax.eval_shape` gives shapes and names without allocating anything, then a
`jit` with `out_shardings` materialises every array directly in its shards, so no device ever
holds a full unsharded copy.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def initialize_distributed() -> None:
  """Multi-host setup from the environment; a no-op for one process.

  On TPU VMs and Slurm, `jax.distributed.initialize()` discovers everything itself. Elsewhere
  (e.g. several processes on one machine) set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID.
  """
  if jax.distributed.is_initialized():
    return
  coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if coordinator:
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
        local_device_ids=None)
  elif os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()
  elif os.environ.get("TPU_WORKER_HOSTNAMES") and "," in os.environ["TPU_WORKER_HOSTNAMES"]:
    jax.distributed.initialize()


def mesh_shape(sizes: dict, num_devices: int) -> Tuple[int, ...]:
  """Resolves the one `-1` axis; checks the product equals the device count."""
  shape = [int(sizes[a]) for a in MESH_AXES]
  free = [i for i, s in enumerate(shape) if s == -1]
  if len(free) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, shape))}")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh: sizes must be positive or -1, got {dict(zip(MESH_AXES, shape))}")
  fixed = math.prod(s for s in shape if s != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(f"mesh: {num_devices} devices not divisible by fixed axes product {fixed}")
    shape[free[0]] = num_devices // fixed
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                     f"{num_devices} available")
  return tuple(shape)


def make_mesh(sizes: dict, devices: Optional[Sequence[Any]] = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(sizes, len(devices))
  try:
    arr = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # noqa: BLE001 - non-physical topologies (CPU) fall back to a plain reshape
    arr = np.asarray(devices).reshape(shape)
  return Mesh(arr, MESH_AXES)


def rules_tuple(rules) -> Tuple[Tuple[str, Any], ...]:
  """Normalises config rules (lists from the command line) into flax's tuple form."""
  out = []
  for name, target in rules:
    if isinstance(target, list):
      target = tuple(target)
    out.append((name, target))
  return tuple(out)


def logical_to_sharding(logical_specs, mesh: Mesh, rules):
  """Maps a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
  rules = rules_tuple(rules)

  def one(spec):
    return NamedSharding(mesh, nn.logical_to_mesh_axes(spec, rules))
  return jax.tree_util.tree_map(one, logical_specs,
                                is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Batch arrays are split over data x fsdp on their leading axis."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def create_sharded(init_fn: Callable[[], Any], mesh: Mesh, rules):
  """Runs `init_fn` (returning a pytree possibly boxed with logical names) straight into shards.

  Returns (unboxed sharded pytree, its NamedShardings).
  """
  abstract = jax.eval_shape(init_fn)
  specs = nn.get_partition_spec(abstract)
  shardings = logical_to_sharding(specs, mesh, rules)
  with mesh, nn.logical_axis_rules(rules_tuple(rules)):
    value = jax.jit(lambda: nn.meta.unbox(init_fn()), out_shardings=shardings)()
  return value, shardings


def shard_host_batch(batch: dict, mesh: Mesh) -> dict:
  """Turns this process's slice of the global batch into global jax.Arrays on `mesh`.

  Every process passes its own rows (leading axis = global rows / process count).
  """
  def one(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, x.ndim)
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)
  return {k: one(v) for k, v in batch.items()}
