"""The project's LoRA train step (surveylm_jax.train) on SmolLM2-135M, against PyTorch+PEFT on
the same model, batch, sequence length and thread count, plus achieved FLOP/s against this
machine's measured large-matmul rate. Rounds alternate JAX / PyTorch / matmul so both sides see
the same machine load; medians are reported.

python -m tools.bench.bench_train_step --out runs/bench/train_step.json

`--top-layers N --loss-positions R` measure the survey-training setting on both sides: adapters
on the top N layers only (PEFT `layers_to_transform`; neither side runs a backward pass below
them) and logits at R positions per row (transformers `logits_to_keep`), the loss on those.

Each side's forward pass alone (the loss value on the same batch, no gradients: jitted in JAX,
`torch.no_grad` in PyTorch) is timed in the same rounds, so the cost of the backward pass is
reported as (step - forward) / forward.
"""
import argparse
import json
import os
import statistics
import time


def _pin_threads(n: int) -> None:
  """Same CPUs and thread count for both frameworks (set before either starts its pools)."""
  from tools.bench.bench_lora import _pin_threads as pin
  pin(n)
  import torch
  torch.set_num_threads(n)


def _batch(tokenizer_vocab: int, rows: int, seq: int, loss_positions: int = 0):
  import numpy as np
  rng = np.random.RandomState(0)
  ids = rng.randint(3, tokenizer_vocab, (rows, seq)).astype(np.int32)
  targets = np.concatenate([ids[:, 1:], np.zeros((rows, 1), np.int32)], axis=1)
  loss_mask = np.zeros((rows, seq), np.int32)
  if loss_positions:
    loss_mask[:, seq - loss_positions:-1] = 1
  else:
    loss_mask[:, seq // 2:-1] = 1
  ones = np.ones((rows, seq), np.int32)
  return dict(input_ids=ids, targets=targets, loss_mask=loss_mask, segment_ids=ones,
              position_ids=np.broadcast_to(np.arange(seq, dtype=np.int32), (rows, seq)).copy(),
              attention_mask=ones)


def jax_step(model_path: str, batch: dict, lr: float, top_layers: int = 0,
             loss_positions: int = 0, with_forward: bool = False):
  """(run_one_step, analytic flops per step) for the real jitted train step on one device; with
  `with_forward`, also a run of the forward pass alone (the loss value, no gradients)."""
  import jax
  from configs import base
  from surveylm_jax import lora as lora_lib
  from surveylm_jax import models, sharding
  from surveylm_jax.train import setup
  from surveylm_jax.train.step import init_state
  config = base.get_config()
  config.model.path = model_path
  config.train.lr, config.train.warmup_fraction = lr, 0.0
  config.mesh.data = 1
  config.lora.train_top_layers, config.train.loss_positions = top_layers, loss_positions
  mesh = sharding.make_mesh(config.mesh.to_dict(), jax.devices()[:1])
  model = models.Transformer(setup.model_config(config))
  fns = setup.make_step_fns(config, model, total_steps=1000)
  with setup.rules_context(config, mesh):
    params, frozen_sh = setup.load_params(config, model, mesh, config.sharding_rules)
    trainable = lora_lib.init(params, fns.lora_cfg, jax.random.PRNGKey(0))
    trainable_sh = setup.lora_shardings(model, trainable, mesh, config.sharding_rules)
    state_sh = setup.state_shardings(fns, trainable_sh, trainable, mesh)
    state = jax.jit(lambda t: init_state(t, fns.optimizer), out_shardings=state_sh)(trainable)
    shapes = {k: v.shape for k, v in batch.items()}
    step = setup.jit_train_step(fns, state_sh, frozen_sh, setup.batch_shardings(shapes, mesh),
                                mesh)
    device_batch = sharding.shard_host_batch(batch, mesh)
    rng = jax.random.PRNGKey(1)
    compiled = step.lower(state, params, device_batch, rng).compile()
    # The step's own forward (the same model, LoRA and loss functions), without the gradient.
    forward = jax.jit(lambda trainable, frozen, b: fns.loss_fn(*fns.forward(
        trainable, frozen, b, deterministic=True))[0]).lower(
            state.trainable, params, device_batch).compile()
  rows, seq = batch["input_ids"].shape
  flops = models.flops.train_step_flops(model.config, rows * seq, seq, lora=True)
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], params, device_batch, rng)
    return float(metrics["loss"])

  def run_forward():
    return float(forward(holder["state"].trainable, params, device_batch))
  return (run, flops, run_forward) if with_forward else (run, flops)


def torch_step(model_path: str, batch: dict, lr: float, top_layers: int = 0,
               loss_positions: int = 0):
  """(run_one_step, run_forward): PEFT's train step, and its forward + loss under no_grad."""
  import peft
  import torch
  import transformers
  model = transformers.AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
  layers = model.config.num_hidden_layers
  model = peft.get_peft_model(model, peft.LoraConfig(
      r=8, lora_alpha=16, lora_dropout=0.0, target_modules=[
          "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
      layers_to_transform=list(range(layers - top_layers, layers)) if top_layers else None))
  model.train()
  opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                          weight_decay=0.0)
  ids = torch.tensor(batch["input_ids"], dtype=torch.long)
  targets = torch.tensor(batch["targets"], dtype=torch.long)
  mask = torch.tensor(batch["loss_mask"], dtype=torch.float32)
  keep = 0
  if loss_positions:   # the same positions in every row of this batch
    keep = torch.arange(ids.shape[1] - loss_positions, ids.shape[1])
    targets, mask = targets[:, keep], mask[:, keep]

  def loss_of():
    logits = model(input_ids=ids, logits_to_keep=keep).logits
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                            reduction="none").view_as(mask)
    return (nll * mask).sum() / mask.sum()

  def run():
    opt.zero_grad(set_to_none=True)
    loss = loss_of()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    return float(loss)

  def run_forward():
    with torch.no_grad():
      return float(loss_of())
  return run, run_forward


def matmul_rate(n: int = 2048):
  """(run, flops) of one float32 n x n matmul: the machine's practical peak for dense math."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  return (lambda: f(a, b).block_until_ready()), 2.0 * n ** 3


def _time(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="checkpoints/smollm2-135m-instruct")
  parser.add_argument("--rows", type=int, default=4)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--top-layers", type=int, default=0,
                      help="adapters on the top N layers only (0 = every layer)")
  parser.add_argument("--loss-positions", type=int, default=0,
                      help="logits at the last R positions of each row only (0 = all)")
  parser.add_argument("--out", default="runs/bench/train_step.json")
  args = parser.parse_args()
  _pin_threads(args.threads)
  batch = _batch(49152, args.rows, args.seq, args.loss_positions)
  jax_run, flops, jax_forward = jax_step(args.model, batch, 1e-4, args.top_layers,
                                         args.loss_positions, with_forward=True)
  torch_run, torch_forward = torch_step(args.model, batch, 1e-4, args.top_layers,
                                        args.loss_positions)
  runs = {"jax": jax_run, "torch": torch_run, "jax_forward": jax_forward,
          "torch_forward": torch_forward}
  if args.top_layers or args.loss_positions:
    flops = None     # the analytic count assumes a full backward pass and logits everywhere
    # The same JAX step with every layer training and logits everywhere, in the same rounds.
    runs["jax_plain"], _ = jax_step(args.model, batch, 1e-4)
  mm_run, mm_flops = matmul_rate()
  first = {name: run() for name, run in runs.items()}   # warm-up (and compile), not timed
  times = {name: [] for name in runs}
  times["matmul"] = []
  loads = []     # 1-minute load average after each round: other work on the machine
  for r in range(args.rounds):
    for name, run in runs.items():
      times[name].append(_time(run))
    times["matmul"].append(min(_time(mm_run) for _ in range(5)))
    loads.append(os.getloadavg()[0])
    print(f"round {r + 1}/{args.rounds}: " + " ".join(
        f"{name} {times[name][-1]:.2f}s" for name in runs), flush=True)
  med = {k: statistics.median(v) for k, v in times.items()}
  result = {
      "settings": vars(args), "load_avg": os.getloadavg(), "load_avg_1min_per_round": loads,
      "first_step_loss": first,
      "median_seconds": med,
      "torch_over_jax": med["torch"] / med["jax"],
      "jax_step_flops": flops,
      "matmul_flops_per_s": mm_flops / med["matmul"],
  }
  for side in ("jax", "torch"):
    # The step minus its forward pass (the optimizer update is a small part of that).
    result[f"{side}_backward_over_forward"] = (med[side] - med[f"{side}_forward"]) / med[
        f"{side}_forward"]
  if "jax_plain" in med:
    result["jax_plain_over_jax"] = med["jax_plain"] / med["jax"]
  if flops:
    result["jax_achieved_flops_per_s"] = flops / med["jax"]
    result["fraction_of_matmul_rate"] = result["jax_achieved_flops_per_s"] / result[
        "matmul_flops_per_s"]
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  line = (f"JAX LoRA step {med['jax']:.2f}s, PyTorch+PEFT {med['torch']:.2f}s "
          f"(torch/jax {result['torch_over_jax']:.2f}x); forward alone JAX "
          f"{med['jax_forward']:.2f}s, PyTorch {med['torch_forward']:.2f}s (backward/forward "
          f"JAX {result['jax_backward_over_forward']:.2f}, PyTorch "
          f"{result['torch_backward_over_forward']:.2f})")
  if "jax_plain" in med:
    line += (f"; the plain JAX step (every layer, logits everywhere) {med['jax_plain']:.2f}s = "
             f"{result['jax_plain_over_jax']:.2f}x the time")
  if flops:
    line += (f"; JAX {result['jax_achieved_flops_per_s']/1e9:.1f} GFLOP/s = "
             f"{100 * result['fraction_of_matmul_rate']:.0f}% of the "
             f"{result['matmul_flops_per_s']/1e9:.1f} GFLOP/s matmul rate")
  print(line)


if __name__ == "__main__":
  main()
