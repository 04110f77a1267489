"""Device mesh, logical-axis rules, and sharded creation of params and optimizer state.

Params carry logical axis names (`embed`, `heads`, `mlp`, ...); one rules table (config
`sharding_rules`) maps each name to mesh axes (`data`, `fsdp`, `tensor`). Changing parallelism
means changing the mesh sizes or the rules, never the code.

Sharded creation: `jax.eval_shape` gives shapes and names without allocating anything, then a
`jit` with `out_shardings` materialises every array directly in its shards, so no device ever
holds a full unsharded copy.

Multi-process start: `initialize_distributed` joins the run the environment describes (hand-set
JAX_* variables, a Slurm job step, a TPU slice); the decision itself is the pure function
`distributed_mode(environ)`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from surveylm_jax.cli import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


# Set by a launcher (or by hand) to override the detection below: "off" never joins a cluster
# (one process inside a Slurm allocation, say); "tpu" asks jax to discover the TPU VM slice
# itself, which on Cloud TPU VMs it reads from the metadata server, not from the environment.
DISTRIBUTED_ENV = "SURVEYLM_DISTRIBUTED"
_EXPLICIT = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _int_var(environ: Mapping[str, str], name: str) -> int:
  value = environ[name]
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"{name}={value!r} is not an integer") from None


def _count(value: Optional[str]) -> int:
  """Entries of a comma-separated host list ('' or None: none)."""
  return len([part for part in (value or "").split(",") if part.strip()])


def _explicit(environ: Mapping[str, str]) -> dict:
  missing = [name for name in _EXPLICIT if not environ.get(name)]
  if missing:
    given = [name for name in _EXPLICIT if environ.get(name)]
    raise ConfigError(f"{', '.join(given)} set but {', '.join(missing)} not: a multi-process run "
                      f"started by hand needs all of {', '.join(_EXPLICIT)}")
  num, pid = _int_var(environ, "JAX_NUM_PROCESSES"), _int_var(environ, "JAX_PROCESS_ID")
  if num < 1 or not 0 <= pid < num:
    raise ConfigError(f"JAX_PROCESS_ID={pid} with JAX_NUM_PROCESSES={num}: the id must be in "
                      f"0..{num - 1}")
  # Everything is given: jax's own cluster detection must not override it.
  return dict(coordinator_address=environ["JAX_COORDINATOR_ADDRESS"], num_processes=num,
              process_id=pid, cluster_detection_method="deactivate")


def _slurm_tasks(environ: Mapping[str, str]) -> int:
  # The step's task count: inside a multi-task job, `srun -n1` is one process on its own.
  name = "SLURM_STEP_NUM_TASKS" if environ.get("SLURM_STEP_NUM_TASKS") else "SLURM_NTASKS"
  return _int_var(environ, name) if environ.get(name) else 1


def _slurm(environ: Mapping[str, str], tasks: int) -> dict:
  missing = [name for name in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NODELIST")
             if not environ.get(name)]
  if missing:
    raise ConfigError(f"Slurm job {environ['SLURM_JOB_ID']} has {tasks} tasks but "
                      f"{', '.join(missing)} not set: start the training with srun (see "
                      f"launch/slurm.sbatch), or set {DISTRIBUTED_ENV}=off for one process")
  kwargs = dict(num_processes=tasks, process_id=_int_var(environ, "SLURM_PROCID"))
  # jax gives each Slurm task the one GPU numbered by its local id: right when the node's tasks
  # share its GPUs one each. A task that alone holds the node, or that Slurm bound to GPUs of its
  # own (--gpus-per-task), owns every GPU it sees: name them all.
  nodes_name = next((n for n in ("SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES", "SLURM_NNODES")
                     if environ.get(n)), None)
  per_node = max(tasks // (_int_var(environ, nodes_name) if nodes_name else tasks), 1)
  visible = _count(environ.get("CUDA_VISIBLE_DEVICES"))
  if not visible and per_node == 1 and environ.get("SLURM_GPUS_ON_NODE"):
    visible = _int_var(environ, "SLURM_GPUS_ON_NODE")
  if visible and (per_node == 1 or visible < per_node):
    kwargs["local_device_ids"] = list(range(visible))
  return kwargs


def _tpu_multihost(environ: Mapping[str, str]) -> bool:
  """Whether the TPU variables jax reads name more than one process.

  GKE and multislice jobs set them; a single-host slice lists one worker (no comma) and must
  not start a coordinator. Plain Cloud TPU VMs set none of them (jax asks the metadata server),
  so `launch/tpu_vm.sh` sets SURVEYLM_DISTRIBUTED=tpu instead.
  """
  hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES")
  slices = environ.get("MEGASCALE_NUM_SLICES", "").strip()
  return (_count(hosts) > 1 or bool(environ.get("MEGASCALE_COORDINATOR_ADDRESS"))
          or (slices.isdigit() and int(slices) > 1))


def distributed_mode(environ: Mapping[str, str]) -> Tuple[Optional[str], dict]:
  """How this process joins a multi-process run, decided from the environment alone.

  Returns (mode, keyword arguments for `jax.distributed.initialize`), mode one of:
    None        one process: nothing to start (also with SURVEYLM_DISTRIBUTED=off);
    "explicit"  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (all three);
    "slurm"     a Slurm job step with more than one task (SLURM_STEP_NUM_TASKS/SLURM_NTASKS);
    "tpu"       a multi-host TPU slice (jax's own discovery, no arguments).
  Raises ConfigError for a partial or malformed setup, naming the variable.
  """
  forced = environ.get(DISTRIBUTED_ENV, "").strip().lower()
  if forced not in ("", "off", "tpu"):
    raise ConfigError(f"{DISTRIBUTED_ENV}={environ[DISTRIBUTED_ENV]!r}: expected 'off' or 'tpu'")
  if forced == "off":
    return None, {}
  if any(environ.get(name) for name in _EXPLICIT):
    return "explicit", _explicit(environ)
  if forced == "tpu":
    return "tpu", {}
  if environ.get("SLURM_JOB_ID"):
    tasks = _slurm_tasks(environ)
    if tasks > 1:
      return "slurm", _slurm(environ, tasks)
  if _tpu_multihost(environ):
    return "tpu", {}
  return None, {}


def initialize_distributed(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
  """Joins the multi-process run the environment describes (`distributed_mode`) and returns its
  mode ("initialized" when jax.distributed already was). A single process starts as before:
  nothing is initialised, None is returned. Must run before anything touches a device."""
  if jax.distributed.is_initialized():
    return "initialized"
  mode, kwargs = distributed_mode(os.environ if environ is None else environ)
  if mode is not None:
    jax.distributed.initialize(**kwargs)
  return mode


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


def held_fraction(x: jax.Array) -> float:
  """The share of `x`'s elements this process holds (1.0 unless it is split across processes)."""
  if x.is_fully_addressable or x.is_fully_replicated:
    return 1.0
  blocks = {}   # replicas of one block (same index on several local devices) count once
  for shard in x.addressable_shards:
    key = tuple((s.start, s.stop, s.step) if isinstance(s, slice) else s for s in shard.index)
    blocks[key] = shard.data.size
  return sum(blocks.values()) / max(x.size, 1)


def describe_split(mesh: Mesh, **trees) -> str:
  """One line for multi-process logs: the mesh, and how many arrays of each tree this process
  does not hold whole (those FSDP really spreads across hosts)."""
  parts = []
  for name, tree in trees.items():
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if isinstance(x, jax.Array)]
    split = sum(held_fraction(x) < 1.0 for x in leaves)
    parts.append(f"{name} {split}/{len(leaves)}")
  axes = " ".join(f"{a}={n}" for a, n in mesh.shape.items())
  return (f"mesh {axes} over {jax.process_count()} processes; arrays split across processes: "
          + ", ".join(parts))
