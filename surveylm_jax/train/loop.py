"""One training stage, top to bottom: mesh, data, model + LoRA, sharded state, step,
checkpoint, loop, export.

    metrics = train_and_evaluate(config, workdir)

Resuming is automatic: a workdir holding checkpoints continues from the latest (state, data
iterator and step), so the losses after a resume equal those of an uninterrupted run.
"""
from __future__ import annotations

import json
import math
import time
from typing import Dict, Optional

import jax
import optax

from surveylm_jax import lora as lora_lib
from surveylm_jax import models, multihost, paths, sharding
from surveylm_jax.train import checkpointing, loss_positions, lower_cache, setup
from surveylm_jax.train import data as train_data
from surveylm_jax.train.metrics_log import MetricsLogger
from surveylm_jax.train.step import init_state


class NonFiniteLossError(FloatingPointError):
  pass


def _host_metrics(metrics) -> Dict[str, float]:
  # The steps return metrics fully replicated (out_shardings), so every process reads its own
  # copy: no gather, no collective per step.
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def train_and_evaluate(config, workdir: str) -> Dict[str, float]:
  sharding.initialize_distributed()
  paths.makedirs(workdir)
  config_dict = json.loads(config.to_json_best_effort())
  if multihost.is_writer():
    paths.write_text(paths.join(workdir, "config.json"), json.dumps(config_dict, indent=2))

  # ---------------------------------------------------------------- mesh
  mesh = sharding.make_mesh(config.mesh.to_dict())
  rules = config.sharding_rules

  # ---------------------------------------------------------------- data
  data = train_data.TrainData(config)
  total_steps = data.total_steps
  train_iter = data.train_iterator()

  # ---------------------------------------------------------------- model + LoRA
  model = models.Transformer(setup.model_config(config))
  fns = setup.make_step_fns(config, model, total_steps)
  cache_count = lower_cache.check_config(config, fns.split_layer)
  rng = jax.random.PRNGKey(config.seed)
  with setup.rules_context(config, mesh):
    params, frozen_sh = setup.load_params(config, model, mesh, rules)
    lcfg = fns.lora_cfg
    if lcfg is not None:
      if config.lora.init_from:
        params, lora_params, lcfg = lora_lib.stack_stages(
            config.lora.stacking, config.lora.init_from, params, lcfg, jax.random.fold_in(rng, 1))
        fns = setup.StepFns(**{**fns.__dict__, "lora_cfg": lcfg})
        params = jax.device_put(params, frozen_sh)
      else:
        lora_params = lora_lib.init(params, lcfg, jax.random.fold_in(rng, 1))
      trainable_sh = setup.lora_shardings(model, lora_params, mesh, rules)
      trainable = jax.device_put(lora_params, trainable_sh)
      frozen = params
    else:
      trainable, trainable_sh, frozen, frozen_sh = params, frozen_sh, None, None

    # -------------------------------------------------------------- sharded state
    # Recorded so a run shows where its adapter started (fresh: B = 0; Stage II: Stage I's).
    start_record = {"init_trainable_norm": float(optax.global_norm(trainable))}
    if lcfg is not None:
      start_record["init_lora_b_norm"] = float(optax.global_norm(
          jax.tree_util.tree_map_with_path(
              lambda p, x: x if jax.tree_util.keystr(p).endswith("['b']") else 0.0 * x,
              trainable)))
    abstract_trainable = jax.eval_shape(lambda t: t, trainable)
    state_sh = setup.state_shardings(fns, trainable_sh, abstract_trainable, mesh)
    state = jax.jit(lambda t: init_state(t, fns.optimizer), out_shardings=state_sh)(trainable)
    del trainable
    if jax.process_count() > 1 and multihost.is_writer():
      print(sharding.describe_split(mesh, frozen=frozen, trainable=state.trainable), flush=True)

    # -------------------------------------------------------------- step
    batch_sh = setup.batch_shardings(data.batch_shapes, mesh)
    step_batch_sh = batch_sh
    if cache_count:
      residual_shape = data.batch_shapes["input_ids"] + (model.config.hidden_size,)
      step_batch_sh = dict(batch_sh, **setup.batch_shardings(
          {lower_cache.LOWER_RESIDUAL: residual_shape}, mesh))
    train_step = setup.jit_train_step(fns, state_sh, frozen_sh, step_batch_sh, mesh)
    eval_step = setup.jit_eval_step(fns, trainable_sh, frozen_sh, batch_sh, mesh)

    # -------------------------------------------------------------- checkpoint
    ckpt = checkpointing.Checkpointer(workdir, keep=config.checkpoint.keep,
                                      async_save=config.checkpoint.async_save)
    # With a lower-layer cache the batch order is a function of the step (the cache is rebuilt
    # from the start of the stream), so the data iterator is neither saved nor restored.
    saved_iter = None if cache_count else train_iter
    start = ckpt.latest_step()
    if start is not None:
      state = ckpt.restore(start, checkpointing.abstract_like(state), saved_iter, config_dict)
      print(f"resumed from {ckpt.directory}/{start}", flush=True)
    cache = None
    if cache_count:
      residual_fn = jax.jit(fns.lower_residual, in_shardings=(trainable_sh, frozen_sh, batch_sh),
                            out_shardings=step_batch_sh[lower_cache.LOWER_RESIDUAL])
      trainable_now = state.trainable

      def prepare(i, host):   # once per cached batch, not once per pass
        if fns.loss_positions:
          loss_positions.check_rows(host, fns.loss_positions, where=f"cached train batch {i + 1}",
                                    tokens=fns.reads_tokens)
        return sharding.shard_host_batch(host, mesh)
      cache = lower_cache.LowerLayerCache.build(
          (data.local_rows(b) for b in train_iter), cache_count,
          lambda batch: residual_fn(trainable_now, frozen, batch), seed=config.seed,
          prepare=prepare)
      print(f"lower-layer cache: {len(cache)} batches ({cache.answer_slots} answer slots), "
            f"layers 0..{fns.split_layer - 1} run once ({cache.nbytes() / 2**20:.0f} MiB of "
            "residual streams)", flush=True)

    # -------------------------------------------------------------- loop
    log = MetricsLogger(workdir, total_steps)
    step = int(state.step)
    if start is None:
      log.write(0, dict(start_record, init_from=config.lora.init_from or "fresh"))
    last_good = start
    window_tokens, window_start = 0.0, time.time()
    final: Dict[str, float] = {}
    try:
      while step < total_steps:
        if cache:
          batch = cache.batch(step)
        else:
          batch = data.local_rows(next(train_iter))
          if fns.loss_positions:
            loss_positions.check_rows(batch, fns.loss_positions, where=f"train batch {step + 1}",
                                      tokens=fns.reads_tokens)
          batch = sharding.shard_host_batch(batch, mesh)
        state, metrics = train_step(state, frozen, batch, rng)
        step += 1
        host = _host_metrics(metrics)
        if not math.isfinite(host["loss"]):
          raise NonFiniteLossError(
              f"step {step}: loss is {host['loss']}; stopping. The last good checkpoint "
              f"(step {last_good}) in {ckpt.directory} is intact; lower train.lr or check "
              f"the data")
        window_tokens += host["tokens"]
        if step % config.train.log_every == 0 or step == total_steps:
          elapsed = max(time.time() - window_start, 1e-9)
          host["tokens_per_second"] = window_tokens / elapsed
          log.write(step, host)
          log.progress(step, host)
          window_tokens, window_start = 0.0, time.time()
        if config.train.eval_every and step % config.train.eval_every == 0 and step < total_steps:
          log.write(step, evaluate(data, eval_step, state.trainable, frozen, mesh, config,
                                   fns.reads_tokens), prefix="val_")
        if step % config.checkpoint.every_steps == 0 or step == total_steps:
          ckpt.save(step, state, saved_iter, config_dict, force=True)
          last_good = step
        final = host
      ckpt.wait()
      val = evaluate(data, eval_step, state.trainable, frozen, mesh, config, fns.reads_tokens)
      if val:
        log.write(step, val, prefix="val_")
        final.update({"val_" + k: v for k, v in val.items()})
    finally:
      ckpt.close()
      log.close()

  # ---------------------------------------------------------------- export
  # With FSDP across processes no process holds a whole array: every process takes part in the
  # gather (a collective: one process skipping it would hang the others), then one writes.
  if lcfg is not None:
    adapter = multihost.host_copy(state.trainable)
    # This adapter sits on the merged Stage I base: keep that base beside it for serving.
    keep_base = bool(config.lora.init_from) and config.lora.stacking == "merge_then_fresh"
    merged_base = multihost.host_copy(frozen) if keep_base else None
    if multihost.is_writer():
      lora_lib.save_peft(paths.join(workdir, "adapter"), adapter, lcfg,
                         base_model_name_or_path=config.model.path)
      if merged_base is not None:
        models.save_pretrained(paths.join(workdir, "merged_base"), model, merged_base,
                               tokenizer_from=data.tokenizer_path)
  return final


def evaluate(data: "train_data.TrainData", eval_step, trainable, frozen, mesh,
             config, reads_tokens: bool = True) -> Optional[Dict[str, float]]:
  """Mean validation loss (and option accuracy when batches carry answer slots)."""
  batches = data.eval_batches(config.train.eval_batches)
  if not batches:
    return None
  sums: Dict[str, float] = {}
  for i, raw in enumerate(batches):
    rows = data.local_rows(raw)
    if config.train.loss_positions:
      loss_positions.check_rows(rows, config.train.loss_positions, where=f"eval batch {i + 1}",
                                tokens=reads_tokens)
    out = _host_metrics(eval_step(trainable, frozen, sharding.shard_host_batch(rows, mesh)))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + v
  result = {"loss": sums["loss"] / len(batches), "batches": float(len(batches))}
  if sums.get("option_count"):
    result["option_accuracy"] = sums["option_accuracy_sum"] / sums["option_count"]
  return result

