"""Ahead-of-time compilation of the evaluation programs for a mesh of devices that need not be
here (e.g. a TPU slice described by `jax.experimental.topologies` on a CPU): option scoring (one
forward pass, the LM head at the answer position) and greedy generation (prefill and the decode
loop with its KV cache), with the params sharded by the config's rules and the rows over the
mesh's batch axes -- as `eval.runner` runs them. Per-chip memory comes from the executables."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from surveylm_jax import models, sharding
from surveylm_jax.inference import scoring
from surveylm_jax.inference.generate import _generate   # pylint: disable=protected-access
from surveylm_jax.inference.placement import MeshPlacement


def _abstract_setup(config, devices: Sequence):
  mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
  rules = sharding.rules_tuple(config.sharding_rules)
  cfg = models.config_from_hf_dict(dict(config.model.random_init), param_dtype=config.model.dtype,
                                   dtype=config.model.compute_dtype,
                                   attention=config.model.attention,
                                   # traced for the devices' kind (fused attention kernels)
                                   attention_platform=devices[0].platform)
  model = models.Transformer(cfg)
  shardings = models.param_shardings(model, mesh, rules)
  abstract = jax.tree_util.tree_map(
      lambda x: x.value if hasattr(x, "value") else x, models.abstract_params(model),
      is_leaf=lambda x: hasattr(x, "value"))
  params = jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  return model, params, MeshPlacement(mesh, rules)


def _spec(shape, dtype, where: MeshPlacement, batch: bool = True):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=where.sharding_for(shape, batch))


def compile_scoring(config, devices: Sequence, *, rows: int, seq_len: int, options: int = 8,
                    variants: int = 4):
  """The plain scoring program (`scoring._score_full`) for `rows` prompts of `seq_len` tokens."""
  model, params, where = _abstract_setup(config, devices)
  i32 = jnp.int32
  args = (_spec((rows, seq_len), i32, where), _spec((rows, seq_len), i32, where),
          _spec((rows,), i32, where), _spec((rows, options, variants), i32, where),
          _spec((rows, options, variants), jnp.bool_, where))
  with where.context():
    return scoring._score_full.lower(model, params, *args).compile()   # pylint: disable=protected-access


def compile_generation(config, devices: Sequence, *, rows: int, prompt_len: int, new_tokens: int):
  """Greedy generation (`generate._generate`: prefill + decode loop, KV cache of prompt + new)."""
  model, params, where = _abstract_setup(config, devices)
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=NamedSharding(where.mesh, PartitionSpec()))
  ids = _spec((rows, prompt_len), jnp.int32, where)
  with where.context():
    return _generate.lower(
        model, params, ids, ids, rng, max_new_tokens=new_tokens, temperature=0.0, top_k=0,
        top_p=1.0, eos_ids=tuple(model.config.eos_token_ids), pad_id=0).compile()
