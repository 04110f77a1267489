"""LoRA train step vs full fine-tune step (JAX), and JAX LoRA vs PyTorch+PEFT LoRA, in one run.

    python -m tools.bench.bench_lora --configs=tiny,smollm2 --batch=4 --seq=128 --threads=2 \
        --out=runs/bench/lora.json

Four train steps per model, on the same weights, batch (random token ids, no padding), sequence
length and thread count: JAX LoRA (x·W + s·(x·a)·b, gradients for the adapter only), JAX full
fine-tune, PEFT LoRA and PyTorch full fine-tune. Every step is forward + token cross-entropy +
backward + AdamW (lr 1e-4, no weight decay), LoRA r/alpha on q/k/v/o/gate/up/down, float32.

Timing: JAX steps compiled ahead of time (compile time reported apart), warm-up steps excluded; then `--repeats`
rounds, each timing one step of every variant in turn, so a change of load from other processes
hits all variants alike; medians are reported. Threads: the process is pinned to `--threads`
CPUs (sched_setaffinity, which sizes XLA's CPU thread pool) and torch gets the same
`set_num_threads`. PyTorch uses transformers' default attention (SDPA).

The first-step losses of the JAX and PyTorch LoRA steps are printed as a check that both compute
the same thing (B = 0 at init, so both equal the base model's loss).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

TINY = dict(model_type="llama", vocab_size=4096, hidden_size=256, intermediate_size=688,
            num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4, head_dim=32,
            max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=True)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VARIANTS = ("jax_lora", "jax_full", "torch_lora", "torch_full")


def _pin_threads(n: int):
  """Restricts this process (and the thread pools jax and torch will start) to n CPUs."""
  cpus = sorted(os.sched_getaffinity(0))
  if n > len(cpus):
    raise SystemExit(f"--threads={n} but only {len(cpus)} CPUs are available")
  os.sched_setaffinity(0, cpus[:n])
  os.environ["OMP_NUM_THREADS"] = str(n)
  os.environ["MKL_NUM_THREADS"] = str(n)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  if n == 1:   # XLA's own switch for single-threaded Eigen kernels
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"


# --- models ------------------------------------------------------------------------------------

def _load(config_name: str, model_path: str):
  """(jax model, jax params, a function making a fresh torch model with the same weights)."""
  import jax
  import numpy as np
  import torch
  import transformers
  from surveylm_jax import models

  if config_name == "smollm2":
    model, params = models.load_pretrained(model_path, dtype="float32")

    def make_torch():
      return transformers.AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    return model, params, make_torch
  if config_name != "tiny":
    raise SystemExit(f"unknown config {config_name!r}; valid: tiny, smollm2")
  hf_config = transformers.AutoConfig.for_model(**TINY)
  torch.manual_seed(0)
  reference = transformers.AutoModelForCausalLM.from_config(hf_config).float()
  state = {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()}
  cfg = models.config_from_hf_dict(hf_config.to_dict())
  params = models.params_from_tensors(models.hf_io.DictTensors(state), cfg)

  def make_torch():
    fresh = transformers.AutoModelForCausalLM.from_config(hf_config).float()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return fresh
  return models.Transformer(cfg), jax.tree_util.tree_map(np.asarray, params), make_torch


# --- steps -------------------------------------------------------------------------------------

def _jax_steps(model, params, ids, mask, lora_cfg, lr):
  """(lora_step, state, n) and (full_step, state, n); a jitted step maps state -> (state, loss)
  and n counts the trainable parameters."""
  import jax
  import jax.numpy as jnp
  import optax
  from surveylm_jax import lora

  def token_loss(logits):
    logp = jax.nn.log_softmax(logits[:, :-1])
    target = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    weights = mask[:, 1:].astype(jnp.float32)
    return -(target * weights).sum() / weights.sum()

  optimizer = optax.adamw(lr, weight_decay=0.0)
  frozen = jax.tree_util.tree_map(jnp.asarray, params)

  # The frozen params are an argument, not a closure: closed-over arrays would be baked into
  # the compiled program as constants.
  def lora_step(state, frozen):
    lora_params, opt_state = state
    def loss_fn(lp):
      return token_loss(lora.apply(model, frozen, lp, lora_cfg, ids, attention_mask=mask))
    loss, grads = jax.value_and_grad(loss_fn)(lora_params)
    updates, opt_state = optimizer.update(grads, opt_state, lora_params)
    return (optax.apply_updates(lora_params, updates), opt_state), loss

  def full_step(state):
    full_params, opt_state = state
    def loss_fn(p):
      return token_loss(model.apply({"params": p}, ids, attention_mask=mask))
    loss, grads = jax.value_and_grad(loss_fn)(full_params)
    updates, opt_state = optimizer.update(grads, opt_state, full_params)
    return (optax.apply_updates(full_params, updates), opt_state), loss

  lora_params = lora.init(frozen, lora_cfg, jax.random.PRNGKey(0))
  full_params = jax.tree_util.tree_map(jnp.array, params)      # its own copy: it is donated
  lora_state = (lora_params, optimizer.init(lora_params))
  full_state = (full_params, optimizer.init(full_params))
  # Compiled ahead of time: the compile time is reported apart, and XLA's cost analysis gives
  # each step's FLOP count, a load-independent account of what LoRA saves.
  start = time.perf_counter()
  lora_compiled = jax.jit(lora_step, donate_argnums=0).lower(lora_state, frozen).compile()
  lora_compile_s = time.perf_counter() - start
  start = time.perf_counter()
  full_compiled = jax.jit(full_step, donate_argnums=0).lower(full_state).compile()
  full_compile_s = time.perf_counter() - start
  return ((lambda state: lora_compiled(state, frozen), lora_state, lora.num_params(lora_params),
           _flops(lora_compiled), lora_compile_s),
          (full_compiled, full_state, sum(x.size for x in jax.tree_util.tree_leaves(full_params)),
           _flops(full_compiled), full_compile_s))


def _flops(compiled):
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):      # older jax: one dict per device
    cost = cost[0]
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _torch_steps(make_torch, ids, mask, lora_cfg, lr):
  """(lora_step, full_step) closures over their own models and AdamW optimizers."""
  import peft
  import torch

  ids_t = torch.from_numpy(ids.astype("int64"))
  mask_t = torch.from_numpy(mask.astype("int64"))

  def token_loss(logits):
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = logp.gather(-1, ids_t[:, 1:, None])[..., 0]
    weights = mask_t[:, 1:].float()
    return -(target * weights).sum() / weights.sum()

  def make_step(model):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()

    def step():
      optimizer.zero_grad(set_to_none=True)
      loss = token_loss(model(input_ids=ids_t, attention_mask=mask_t).logits)
      loss.backward()
      optimizer.step()
      return loss.item()
    return step, sum(p.numel() for p in params)

  peft_model = peft.get_peft_model(make_torch(), peft.LoraConfig(
      r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=0.0,
      target_modules=list(lora_cfg.targets), task_type="CAUSAL_LM"))
  return make_step(peft_model), make_step(make_torch())


# --- timing ------------------------------------------------------------------------------------

class _Runner:
  """Uniform interface over a JAX step (functional state) and a torch step (stateful)."""

  def __init__(self, kind, fn, state=None):
    self.kind, self.fn, self.state = kind, fn, state
    self.losses = []

  def __call__(self):
    start = time.perf_counter()
    if self.kind == "jax":
      import jax
      self.state, loss = self.fn(self.state)
      loss = float(jax.block_until_ready(loss))
    else:
      loss = self.fn()
    self.losses.append(loss)
    return time.perf_counter() - start


def bench_config(config_name, args):
  import numpy as np
  from surveylm_jax import lora

  model, params, make_torch = _load(config_name, args.model)
  vocab = model.config.vocab_size
  rng = np.random.RandomState(0)
  ids = rng.randint(3, vocab, (args.batch, args.seq)).astype(np.int32)
  mask = np.ones_like(ids)
  lora_cfg = lora.LoraConfig(rank=args.rank, alpha=args.alpha, targets=TARGETS)

  ((jax_lora, lora_state, n_lora, lora_flops, lora_compile_s),
   (jax_full, full_state, n_full, full_flops, full_compile_s)) = _jax_steps(
       model, params, ids, mask, lora_cfg, args.lr)
  (torch_lora, n_torch_lora), (torch_full, n_torch_full) = _torch_steps(
      make_torch, ids, mask, lora_cfg, args.lr)
  if n_lora != n_torch_lora:
    raise SystemExit(f"trainable parameter counts differ: jax {n_lora} vs peft {n_torch_lora}")
  runners = {"jax_lora": _Runner("jax", jax_lora, lora_state),
             "jax_full": _Runner("jax", jax_full, full_state),
             "torch_lora": _Runner("torch", torch_lora),
             "torch_full": _Runner("torch", torch_full)}
  warmup = {}
  for name, run in runners.items():          # compile + warm caches, one variant at a time
    warmup[name] = [run() for _ in range(args.warmup)]
    print(f"  {config_name} {name}: warm-up {', '.join(f'{t:.3f}s' for t in warmup[name])}",
          flush=True)
  times = {name: [] for name in runners}
  for _ in range(args.repeats):              # interleaved: load changes hit every variant alike
    for name, run in runners.items():
      times[name].append(run())
  med = {name: statistics.median(t) for name, t in times.items()}
  tokens = args.batch * args.seq
  result = {
      "model": config_name,
      "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
      "vocab": vocab,
      "trainable_params": {"lora": n_lora, "full": n_full},
      "variants": {name: {"median_s": med[name], "min_s": min(times[name]),
                          "times_s": times[name], "warmup_s": warmup[name],
                          "tokens_per_s": tokens / med[name],
                          "first_loss": runners[name].losses[0]}
                   for name in runners},
      "jax_compile_s": {"lora": lora_compile_s, "full": full_compile_s},
      "jax_step_gflops": {"lora": lora_flops / 1e9, "full": full_flops / 1e9},
      "ratios": {
          "jax_full_over_jax_lora_flops": full_flops / lora_flops,
          "jax_full_over_jax_lora": med["jax_full"] / med["jax_lora"],
          "torch_lora_over_jax_lora": med["torch_lora"] / med["jax_lora"],
          "torch_full_over_jax_full": med["torch_full"] / med["jax_full"],
          "torch_full_over_torch_lora": med["torch_full"] / med["torch_lora"],
      },
      "first_loss_abs_diff_jax_vs_peft": abs(runners["jax_lora"].losses[0]
                                             - runners["torch_lora"].losses[0]),
  }
  return result


def _table(results, args):
  lines = [f"batch {args.batch} x seq {args.seq}, {args.threads} threads, r={args.rank} "
           f"alpha={args.alpha}, {args.repeats} timed rounds (median)", "",
           f"{'model':<8} {'variant':<11} {'s/step':>8} {'tokens/s':>9} {'trainable':>11} "
           f"{'first loss':>10}"]
  for r in results:
    for name in VARIANTS:
      v = r["variants"][name]
      trainable = r["trainable_params"]["lora" if name.endswith("lora") else "full"]
      lines.append(f"{r['model']:<8} {name:<11} {v['median_s']:>8.4f} {v['tokens_per_s']:>9.0f} "
                   f"{trainable:>11,} {v['first_loss']:>10.5f}")
  lines.append("")
  lines.append("time ratios (higher = the second is faster); FLOPs from XLA's cost analysis")
  lines.append(f"{'model':<8} {'full/LoRA (JAX)':>16} {'FLOPs full/LoRA':>16} "
               f"{'PEFT/JAX (LoRA)':>16} {'torch/JAX (full)':>17} {'full/LoRA (torch)':>18}")
  for r in results:
    q = r["ratios"]
    lines.append(f"{r['model']:<8} {q['jax_full_over_jax_lora']:>16.2f} "
                 f"{q['jax_full_over_jax_lora_flops']:>16.2f} "
                 f"{q['torch_lora_over_jax_lora']:>16.2f} {q['torch_full_over_jax_full']:>17.2f} "
                 f"{q['torch_full_over_torch_lora']:>18.2f}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--configs", default="tiny,smollm2", help="comma list of tiny, smollm2")
  parser.add_argument("--model", default="checkpoints/smollm2-135m-instruct",
                      help="HF folder used for the smollm2 config")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--rank", type=int, default=8)
  parser.add_argument("--alpha", type=float, default=16.0)
  parser.add_argument("--lr", type=float, default=1e-4)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default="runs/bench/lora.json")
  args = parser.parse_args(argv)
  _pin_threads(args.threads)

  import jax
  import peft
  import torch
  import transformers
  torch.set_num_threads(args.threads)
  torch.set_num_interop_threads(1)

  load_before = os.getloadavg()
  results = []
  for name in args.configs.split(","):
    print(f"benchmarking {name} ...", flush=True)
    results.append(bench_config(name.strip(), args))
  table = _table(results, args)
  print(table)
  report = {
      "settings": vars(args),
      "machine": {"cpus_pinned": sorted(os.sched_getaffinity(0)), "platform": platform.platform(),
                  "python": sys.version.split()[0], "load_avg_before": load_before,
                  "load_avg_after": os.getloadavg()},
      "versions": {"jax": jax.__version__, "torch": torch.__version__, "peft": peft.__version__,
                   "transformers": transformers.__version__},
      "results": results,
      "table": table,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
