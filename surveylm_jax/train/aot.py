"""Ahead-of-time compilation of the train step from abstract shapes (no weights, no devices
needed): lets this CPU machine compile for real TPU slices described by
`jax.experimental.topologies`, and read per-chip memory and FLOPs before renting them.
"""
from __future__ import annotations

from typing import Dict, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from surveylm_jax import lora as lora_lib
from surveylm_jax import models, sharding
from surveylm_jax.data.packing import batch_shapes as data_batch_shapes
from surveylm_jax.train import setup
from surveylm_jax.train.step import init_state


def topology_devices(name: str) -> Sequence:
  """Devices of a TPU slice such as 'v5e:2x4' (needs the libtpu wheel; JAX_PLATFORMS=cpu)."""
  from jax.experimental import topologies
  return topologies.get_topology_desc(name, "tpu").devices


def _with_sharding(abstract, shardings):
  return jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def compile_train_step(config, devices: Sequence, *, batch_rows: int, seq_len: int):
  """Lowers and compiles `train_step` for `devices` on the config's mesh. Returns the compiled
  executable (use `.memory_analysis()` and `.cost_analysis()`)."""
  mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
  rules = config.sharding_rules
  # Traced for the devices' kind (a fused attention kernel picks its TPU/GPU form).
  model = models.Transformer(setup.model_config(config).replace(
      attention_platform=devices[0].platform))
  fns = setup.make_step_fns(config, model, total_steps=max(int(config.train.steps), 1))
  with setup.rules_context(config, mesh):
    abstract_params = jax.tree_util.tree_map(
        lambda x: x.value if hasattr(x, "value") else x, models.abstract_params(model),
        is_leaf=lambda x: hasattr(x, "value"))
    frozen_sh = setup.param_shardings(model, mesh, rules)
    frozen = _with_sharding(abstract_params, frozen_sh)
    if fns.lora_cfg is not None:
      abstract_trainable = jax.eval_shape(
          lambda p: lora_lib.init(p, fns.lora_cfg, jax.random.PRNGKey(0)), abstract_params)
      trainable_sh = setup.lora_shardings(model, abstract_trainable, mesh, rules)
    else:
      abstract_trainable, trainable_sh, frozen, frozen_sh = abstract_params, frozen_sh, None, None
    state_sh = setup.state_shardings(fns, trainable_sh, abstract_trainable, mesh)
    abstract_state = _with_sharding(
        jax.eval_shape(lambda t: init_state(t, fns.optimizer), abstract_trainable), state_sh)
    batch_shapes: Dict[str, tuple] = data_batch_shapes(batch_rows, seq_len)
    batch_sh = setup.batch_shardings(batch_shapes, mesh)
    batch = {k: jax.ShapeDtypeStruct(v, jnp.float32 if k == "option_targets" else jnp.int32,
                                     sharding=batch_sh[k])
             for k, v in batch_shapes.items()}
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=NamedSharding(mesh, PartitionSpec()))
    step = setup.jit_train_step(fns, state_sh, frozen_sh, batch_sh, mesh)
    return step.lower(abstract_state, frozen, batch, rng).compile()


def summarize(compiled) -> dict:
  """Per-device memory (bytes) and XLA's FLOP count of an executable. XLA counts a scanned
  layer stack's body once: `models.flops.train_step_flops` gives the per-step total."""
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  out = {"xla_flops": float(cost.get("flops", 0.0)) if cost else 0.0}
  for field in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                "alias_size_in_bytes", "generated_code_size_in_bytes"):
    out[field] = int(getattr(mem, field, 0) or 0)
  out["peak_bytes_estimate"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                                + out["temp_size_in_bytes"] - out["alias_size_in_bytes"])
  return out
