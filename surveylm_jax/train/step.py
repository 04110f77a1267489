"""The jitted train and eval steps: pure functions of (state, batch) -> (state, metrics).

`TrainState` holds what changes during training: the step, the trainable tree (LoRA params, or
all params for full fine-tuning) and the optimizer state, which therefore exists only for the
trainable leaves. Frozen base params travel beside it and are never differentiated.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from surveylm_jax import lora as lora_lib
from surveylm_jax.models import layer_split
from surveylm_jax.models.transformer import Transformer
from surveylm_jax.train import loss_positions as loss_positions_lib
from surveylm_jax.train.losses import option_distribution


# Batch key of the residual stream after the frozen lower layers (see train/lower_cache.py).
LOWER_RESIDUAL = "lower_residual"


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  trainable: Any
  opt_state: Any


def init_state(trainable, optimizer) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), trainable=trainable,
                    opt_state=optimizer.init(trainable))


@dataclasses.dataclass(frozen=True)
class StepFns:
  """Everything a step needs besides arrays; hashable so it can close over jit."""
  model: Transformer
  lora_cfg: Optional[lora_lib.LoraConfig]     # None = full fine-tuning
  loss_fn: Callable
  optimizer: Any
  schedule: Callable
  microbatches: int = 1
  # > 0: layers below this index run forward only (their adapters are not trained), so the
  # backward pass stops there (`lora.train_top_layers`).
  split_layer: int = 0
  # > 0: logits only at this many positions per row that a loss reads (`train.loss_positions`).
  loss_positions: int = 0
  # Whether a configured loss reads answer tokens (else only answer slots need logits).
  reads_tokens: bool = True

  def _model(self, trainable, frozen):
    if self.lora_cfg is None:
      return self.model, {"params": trainable}
    return lora_lib.lora_model(self.model, self.lora_cfg), {"params": frozen, "lora": trainable}

  @staticmethod
  def _inputs(batch, deterministic: bool) -> dict:
    return dict(position_ids=batch.get("position_ids"), segment_ids=batch.get("segment_ids"),
                attention_mask=batch.get("attention_mask"), deterministic=deterministic,
                prefix_segment_ids=batch.get("prefix_segment_ids"))

  def forward(self, trainable, frozen, batch, *, deterministic: bool, rng=None):
    """(logits, batch the losses read). With `loss_positions` the logits are [B, R, V] and the
    batch is re-indexed to those R positions; otherwise both are as given. A batch carrying
    `LOWER_RESIDUAL` (the frozen layers' output, `train.cache_lower_layers`) runs the layers
    from `split_layer` up only."""
    kwargs = self._inputs(batch, deterministic)
    if self.loss_positions:
      kwargs["logit_positions"], batch = loss_positions_lib.select(batch, self.loss_positions,
                                                                   tokens=self.reads_tokens)
    rngs = {"dropout": rng} if rng is not None and not deterministic else {}
    model, variables = self._model(trainable, frozen)
    if LOWER_RESIDUAL in batch:
      if not self.split_layer:
        raise ValueError(f"a batch with {LOWER_RESIDUAL!r} needs split_layer > 0")
      logits = layer_split.apply_upper(model, variables, batch["input_ids"],
                                       batch[LOWER_RESIDUAL], split=self.split_layer, rngs=rngs,
                                       **kwargs)
    elif self.split_layer:
      logits = layer_split.apply_split(model, variables, batch["input_ids"],
                                       split=self.split_layer, rngs=rngs, **kwargs)
    else:
      logits = model.apply(variables, batch["input_ids"], rngs=rngs, **kwargs)
    return logits, batch

  def lower_residual(self, trainable, frozen, batch):
    """The residual stream after the frozen layers [0, split_layer) (no dropout)."""
    model, variables = self._model(trainable, frozen)
    return layer_split.apply_lower(model, variables, batch["input_ids"], split=self.split_layer,
                                   **self._inputs(batch, deterministic=True))


def _split_microbatches(batch, n: int):
  def one(x):
    if x.shape[0] % n:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into {n} microbatches")
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])
  return jax.tree_util.tree_map(one, batch)


def train_step(fns: StepFns, state: TrainState, frozen, batch, rng):
  """One optimizer update; gradients averaged over `fns.microbatches` microbatches."""
  rng = jax.random.fold_in(rng, state.step)

  def loss_of(trainable, mb, mb_rng):
    logits, read = fns.forward(trainable, frozen, mb, deterministic=False, rng=mb_rng)
    return fns.loss_fn(logits, read)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)
  if fns.microbatches == 1:
    (loss, aux), grads = grad_fn(state.trainable, batch, rng)
  else:
    mbs = _split_microbatches(batch, fns.microbatches)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.trainable)

    def body(carry, xs):
      acc, i = carry
      (loss, aux), g = grad_fn(state.trainable, xs, jax.random.fold_in(rng, i))
      acc = jax.tree_util.tree_map(jnp.add, acc, g)
      return (acc, i + 1), (loss, aux)
    (grads, _), (losses, auxes) = jax.lax.scan(body, (zeros, 0), mbs)
    grads = jax.tree_util.tree_map(lambda g: g / fns.microbatches, grads)
    loss = jnp.mean(losses)
    aux = jax.tree_util.tree_map(jnp.mean, auxes)
    if "target_tokens" in aux:
      aux["target_tokens"] = aux["target_tokens"] * fns.microbatches
  updates, opt_state = fns.optimizer.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  metrics = dict(aux)
  metrics.update(loss=loss, grad_norm=optax.global_norm(grads),
                 learning_rate=fns.schedule(state.step),
                 tokens=jnp.sum(batch["segment_ids"] > 0) if "segment_ids" in batch
                 else jnp.asarray(batch["input_ids"].size))
  return TrainState(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics


def eval_step(fns: StepFns, trainable, frozen, batch):
  """Loss on a held-out batch, plus option accuracy when the batch carries answer slots."""
  logits, batch = fns.forward(trainable, frozen, batch, deterministic=True)
  loss, aux = fns.loss_fn(logits, batch)
  metrics = dict(aux, loss=loss)
  if "option_positions" in batch:
    probs, valid = option_distribution(logits, batch)
    hit = jnp.argmax(probs, -1) == jnp.argmax(batch["option_targets"], -1)
    metrics["option_accuracy_sum"] = jnp.sum(hit & valid)
    metrics["option_count"] = jnp.sum(valid)
  return metrics
