"""From a config to sharded arrays and a jitted step: model, LoRA, optimizer, shardings.

Used by the training loop and, with abstract shapes only, by the ahead-of-time compilation that
plans TPU memory (`aot.py`), so both run exactly the same step.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional, Tuple

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

from surveylm_jax import lora as lora_lib
from surveylm_jax import models, sharding
from surveylm_jax.train import losses, optimizer as optimizer_lib
from surveylm_jax.train.step import StepFns, TrainState, eval_step, train_step


def model_config(config) -> models.ModelConfig:
  """The architecture: from `model.random_init` (an HF-style dict) or the HF folder."""
  overrides = dict(param_dtype=config.model.dtype, dtype=config.model.compute_dtype,
                   remat_policy=config.model.remat_policy,
                   attention=config.model.attention)
  if config.model.random_init and len(config.model.random_init):
    return models.config_from_hf_dict(dict(config.model.random_init.to_dict()),
                                      where="config.model.random_init", **overrides)
  return models.load_config(config.model.path, **overrides)


def lora_config(config) -> Optional[lora_lib.LoraConfig]:
  if config.train.full_finetune or not config.lora.enabled:
    return None
  return lora_lib.LoraConfig(rank=config.lora.rank, alpha=config.lora.alpha,
                             dropout=config.lora.dropout, targets=tuple(config.lora.targets),
                             use_rslora=config.lora.use_rslora)


def param_shardings(model: models.Transformer, mesh, rules):
  return sharding.logical_to_sharding(models.logical_axes(model), mesh, rules)


def load_params(config, model: models.Transformer, mesh, rules):
  """Real params placed straight into their shards (host numpy -> sharded device arrays)."""
  shardings = param_shardings(model, mesh, rules)
  if config.model.random_init and len(config.model.random_init):
    def init():
      return models.init_params(model, jax.random.PRNGKey(config.seed), boxed=True)
    params, _ = sharding.create_sharded(init, mesh, rules)
    return params, shardings
  # Each process reads only the slices its devices own (models/sharded_loading.py).
  tensors = models.safetensors_io.CheckpointTensors(config.model.path)
  return models.load_params(tensors, model.config, shardings, where=config.model.path), shardings


def lora_shardings(model, lora_params_shape, mesh, rules):
  axes = lora_lib.logical_axes(model, lora_params_shape)
  return sharding.logical_to_sharding(axes, mesh, rules)


def split_layer(config, model: models.Transformer) -> int:
  """First layer whose adapters train (`lora.train_top_layers`); 0 = all layers train."""
  top = int(config.lora.train_top_layers)
  layers = model.config.num_hidden_layers
  if top == 0 or top == layers:
    return 0
  if config.train.full_finetune or not config.lora.enabled:
    raise ValueError("lora.train_top_layers applies to LoRA training; it is "
                     f"{top} with full fine-tuning")
  if not 0 < top < layers:
    raise ValueError(f"lora.train_top_layers={top} must be in 0..{layers} for this "
                     f"{layers}-layer model (0 = every layer)")
  return layers - top


def make_step_fns(config, model: models.Transformer, total_steps: int) -> StepFns:
  optimizer, schedule = optimizer_lib.make_optimizer(config.train, total_steps)
  return StepFns(model=model, lora_cfg=lora_config(config),
                 loss_fn=losses.combined_loss(dict(config.loss.to_dict())),
                 optimizer=optimizer, schedule=schedule,
                 microbatches=int(config.train.microbatches),
                 split_layer=split_layer(config, model),
                 loss_positions=int(config.train.loss_positions),
                 reads_tokens=losses.reads_tokens(list(losses.active(config.loss.to_dict()))))


def state_shardings(fns: StepFns, trainable_shardings, abstract_trainable, mesh):
  """Shardings of the TrainState: optimizer moments follow their params, scalars replicate."""
  abstract_opt = jax.eval_shape(fns.optimizer.init, abstract_trainable)
  flat_params = jax.tree_util.tree_leaves_with_path(abstract_trainable)
  flat_shard = jax.tree_util.tree_leaves(trainable_shardings,
                                         is_leaf=lambda x: isinstance(x, NamedSharding))
  by_path = {jax.tree_util.keystr(p): s for (p, _), s in zip(flat_params, flat_shard)}

  def opt_leaf(path, leaf):
    # optax moment trees embed the param tree; match on the param path suffix.
    key = jax.tree_util.keystr(path)
    for param_key, s in by_path.items():
      if key.endswith(param_key):
        return s
    return NamedSharding(mesh, PartitionSpec())
  opt_shardings = jax.tree_util.tree_map_with_path(opt_leaf, abstract_opt)
  return TrainState(step=NamedSharding(mesh, PartitionSpec()), trainable=trainable_shardings,
                    opt_state=opt_shardings)


def batch_shardings(batch_shapes: Dict[str, Tuple[int, ...]], mesh):
  return {k: sharding.batch_sharding(mesh, len(v)) for k, v in batch_shapes.items()}


def jit_train_step(fns: StepFns, state_sh, frozen_sh, batch_sh, mesh):
  rep = NamedSharding(mesh, PartitionSpec())
  return jax.jit(
      lambda state, frozen, batch, rng: train_step(fns, state, frozen, batch, rng),
      in_shardings=(state_sh, frozen_sh, batch_sh, rep),
      out_shardings=(state_sh, rep),
      donate_argnums=(0,))


def jit_eval_step(fns: StepFns, trainable_sh, frozen_sh, batch_sh, mesh):
  rep = NamedSharding(mesh, PartitionSpec())
  return jax.jit(lambda trainable, frozen, batch: eval_step(fns, trainable, frozen, batch),
                 in_shardings=(trainable_sh, frozen_sh, batch_sh), out_shardings=rep)


@contextlib.contextmanager
def rules_context(config, mesh):
  """Context in which activation constraints inside the model resolve against the mesh."""
  with mesh, nn.logical_axis_rules(sharding.rules_tuple(config.sharding_rules)):
    yield
