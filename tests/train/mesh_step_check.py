"""Runs one train step of the tiny config on several meshes of 8 simulated CPU devices and
prints the loss and LoRA params per mesh as JSON (a subprocess, since the device count is fixed
at JAX start-up)."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import tiny  # noqa: E402
from surveylm_jax import lora as lora_lib  # noqa: E402
from surveylm_jax import sharding  # noqa: E402
from surveylm_jax.train import setup, step as step_lib  # noqa: E402


def synthetic_batch(rows=8, length=32, vocab=512, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(3, vocab, (rows, length)).astype(np.int32)
  seg = np.ones((rows, length), np.int32)
  seg[:, 20:] = 2
  seg[::2, 28:] = 0
  pos = np.concatenate([np.arange(20), np.arange(length - 20)])[None].repeat(rows, 0)
  mask = np.zeros((rows, length), np.int32)
  mask[:, 10:20] = 1
  mask[:, 24:] = 1
  mask[seg == 0] = 0
  targets = np.where(seg[:, 1:] == seg[:, :-1], ids[:, 1:], 0)
  targets = np.concatenate([targets, np.zeros((rows, 1), np.int32)], axis=1)
  return dict(input_ids=ids, targets=targets.astype(np.int32), segment_ids=seg,
              position_ids=pos.astype(np.int32), loss_mask=mask,
              attention_mask=(seg > 0).astype(np.int32))


def run(mesh_sizes, devices):
  config = tiny.get_config()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh_sizes
  config.model.random_init.vocab_size = 512   # small vocab: compile time, not coverage
  # Adam divides by sqrt(v) + eps: for entries whose true gradient is near eps, float32
  # reduction-order noise between meshes is amplified by ~lr/eps. eps=1e-6 and the recipe's
  # lr=1e-4 keep that amplified noise below 1e-6, while entries with real gradients still move
  # by ~lr = 1e-4, ten times the 1e-5 tolerance, so a wrong sharding cannot pass.
  config.train.adam_eps = 1e-6
  config.train.lr = 1e-4
  mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
  rules = config.sharding_rules
  model = setup.models.Transformer(setup.model_config(config))
  fns = setup.make_step_fns(config, model, total_steps=10)
  with setup.rules_context(config, mesh):
    params, frozen_sh = setup.load_params(config, model, mesh, rules)
    lcfg = setup.lora_config(config)
    shapes = jax.eval_shape(lambda: lora_lib.init(params, lcfg, jax.random.PRNGKey(1)))
    lora_sh = setup.lora_shardings(model, shapes, mesh, rules)
    trainable = jax.jit(lambda: lora_lib.init(params, lcfg, jax.random.PRNGKey(1)),
                        out_shardings=lora_sh)()
    # B starts at zero; make it non-zero so the step exercises the whole LoRA path.
    trainable = jax.tree_util.tree_map(lambda x: x + 0.01, trainable)
    initial = jax.device_get(trainable)
    state_sh = setup.state_shardings(fns, lora_sh, shapes, mesh)
    state = jax.jit(lambda t: step_lib.init_state(t, fns.optimizer),
                    out_shardings=state_sh)(trainable)
    batch = synthetic_batch()
    batch_sh = setup.batch_shardings({k: v.shape for k, v in batch.items()}, mesh)
    step = setup.jit_train_step(fns, state_sh, frozen_sh, batch_sh, mesh)
    sharded = sharding.shard_host_batch(batch, mesh)
    losses = []
    for _ in range(2):   # two steps: the second Adam update is no longer sign-like
      state, metrics = step(state, params, sharded, jax.random.PRNGKey(0))
      losses.append(float(metrics["loss"]))
  leaves = [np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(state.trainable)]
  start = [np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(initial)]
  moved = float(np.abs(np.concatenate(leaves) - np.concatenate(start)).max())
  return np.asarray(losses), np.concatenate(leaves), moved


if __name__ == "__main__":
  import json
  devices = jax.devices()
  assert len(devices) == 8, devices
  results = {}
  ref_loss, ref_params, moved = run((1, 1, 1), devices[:1])
  for sizes in [(8, 1, 1), (1, 8, 1), (2, 2, 2)]:
    loss, params, _ = run(sizes, devices)
    results[str(sizes)] = dict(loss_diff=float(np.abs(loss - ref_loss).max()),
                               param_diff=float(np.abs(params - ref_params).max()))
  json.dump(dict(ref_loss=ref_loss.tolist(), max_param_change=moved, meshes=results), sys.stdout)
