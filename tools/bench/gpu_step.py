"""The project's LoRA train step and option-scoring forward pass at Qwen2.5-1.5B and Qwen2.5-7B
shapes on one accelerator, per attention implementation (`config.model.attention`): compile
time, step time (median of timed steps), tokens/s and MFU against the chip's datasheet peak.
Written for a GPU lent for a few minutes: one run prints everything, writes the JSON after every
item (a run stopped at its time limit still leaves what it measured), gives each (model,
attention, program) its own try/except, and skips an item that would end past `--budget_s`
(judged by the longest earlier item of the same program). Defaults take about 7-8 minutes.

On a GPU host with requirements-gpu.txt installed:

    python -m tools.bench.gpu_step --out runs/bench/gpu_step.json

On the lent H200 (its image's python3 3.12 and jax with the CUDA plugin; no package registry
there, so the six packages of our import chain the image lacks travel as wheels in `.whl/`,
ignored by git, fetched here first with
`pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl grain==0.2.18
array-record==0.8.6 ott-jax==0.6.0 jaxopt==0.8.5 ml-collections==1.1.0 portpicker==1.6.0`,
4.9 MB; carry `.whl`, timeout_s 570):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 -m tools.bench.gpu_step --out $OUT/gpu_step.json

Here (CPU, under a minute; a tiny random model, the same code path):

    JAX_PLATFORMS=cpu python -m tools.bench.gpu_step --quick --attention xla

What runs, per model (random init, bfloat16 params and compute, created on the device by a jit
with out_shardings -- never built on the host; 1.5B first, each model freed before the next):
  train  `surveylm_jax.train.setup`: make_step_fns -> jit_train_step, the step `launch.train`
         runs (LoRA rank 8 / alpha 16 on all seven projections as configs/base.py and the
         SurveyLM recipe set them, AdamW, token CE at every position), on `--rows` x `--seq`
         tokens packed by `data.packing.assemble_row` as the data pipeline packs them
         (`--segments` examples per row). `--remat full` by default, as the 7B recipe
         (configs/surveylm_qwen25_7b.py) uses: XLA's buffer plan for the step, compiled on a
         CPU, needs 39 GiB (1.5B, 8 x 2048) and 56 GiB (7B, 4 x 2048) with it, 230 and 271 GiB
         without it.
  score  `inference.scoring._score_full`, the plain option-scoring program `eval.runner` runs
         and `inference.aot.compile_scoring` plans: one forward pass over right-padded
         prompts, the LM head at the answer position only, on `--rows` x `--seq` tokens.

FLOPs are model FLOPs (what the step must do; remat's recompute not counted), see
`lora_train_flops` and `scoring_flops`; MFU = FLOPs / median step time / peak. The peak comes
from `PEAK_BF16_TFLOPS` by `jax.devices()[0].device_kind` (or `--peak_tflops`); an unknown
device gets MFU null. Which attention kernel really ran is read from the compiled HLO's custom
calls (`attention_kernel`), and the model's own log lines about attention are kept per item.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import statistics
import sys
import time
import weakref
import numpy as np

from tools.bench.tpu_memory_plan import MODELS as TPU_PLAN_MODELS

# Published HF config.json of Qwen/Qwen2.5-1.5B(-Instruct); the 7B one is tpu_memory_plan's.
QWEN25_1P5B = dict(model_type="qwen2", vocab_size=151936, hidden_size=1536,
                   intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                   num_key_value_heads=2, rope_theta=1e6, rms_norm_eps=1e-6,
                   tie_word_embeddings=True)
# A few-second stand-in with the same code path (`--quick`, the test).
TINY = dict(model_type="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6,
            rms_norm_eps=1e-6, tie_word_embeddings=True)

# name -> (HF config dict, default rows, default seq). Rows sized for one H200 (141 GB) with
# full remat (XLA's buffer plan of the train step, compiled on a CPU: 39 and 56 GiB).
MODEL_RUNS = {
    "qwen2.5-1.5b": (QWEN25_1P5B, 8, 2048),
    "qwen2.5-7b": (TPU_PLAN_MODELS["qwen2.5-7b"], 4, 2048),
    "tiny": (TINY, 2, 64),
}

# Dense (no sparsity) bf16 tensor-core peak per chip, TFLOP/s, matched against
# `device_kind` in order (first match wins; word boundaries, so GH200 matches nothing here).
# NVIDIA datasheets print "with sparsity" figures; dense is half of those.
PEAK_BF16_TFLOPS = (
    # H200 datasheet: H200 NVL 1,671 TFLOPS bf16 with sparsity -> 835 dense.
    (r"\bH200 NVL\b", 835.0, "NVIDIA H200 NVL datasheet (1,671 sparse)"),
    # H200 datasheet: H200 SXM 1,979 TFLOPS bf16 with sparsity -> 989 dense (= H100 SXM).
    (r"\bH200\b", 989.0, "NVIDIA H200 SXM datasheet (1,979 sparse)"),
    # H100 datasheet: NVL 1,671 / PCIe 1,513 / SXM 1,979 TFLOPS bf16 with sparsity.
    (r"\bH100 NVL\b", 835.0, "NVIDIA H100 NVL datasheet (1,671 sparse)"),
    (r"\bH100 PCIe\b", 756.0, "NVIDIA H100 PCIe datasheet (1,513 sparse)"),
    (r"\bH100\b", 989.0, "NVIDIA H100 SXM datasheet (1,979 sparse)"),   # "NVIDIA H100 80GB HBM3"
    # A100 datasheet: 312 TFLOPS bf16 dense (624 with sparsity), SXM and PCIe alike.
    (r"\bA100\b", 312.0, "NVIDIA A100 datasheet (624 sparse)"),
    # L40S datasheet: 362.05 dense (733 with sparsity); L4 datasheet: 242 with sparsity.
    (r"\bL40S\b", 362.0, "NVIDIA L40S datasheet (733 sparse)"),
    (r"\bL4\b", 121.0, "NVIDIA L4 datasheet (242 sparse)"),
    # Cloud TPU system architecture pages: bf16 peak per chip.
    (r"^TPU v4$", 275.0, "Cloud TPU v4 docs"),
    (r"^TPU v5 lite$", 197.0, "Cloud TPU v5e docs"),
    (r"^TPU v5p?$", 459.0, "Cloud TPU v5p docs"),
    (r"^TPU v6 lite$", 918.0, "Cloud TPU v6e (Trillium) docs"),
)

ATTENTION_LOG = re.compile(r"attention|cudnn|splash|flash|fall.?back|fused", re.I)


def peak_tflops(device_kind: str):
  """(dense bf16 TFLOP/s, source) for a device kind, or (None, None) when it is not in the table."""
  for pattern, tflops, source in PEAK_BF16_TFLOPS:
    if re.search(pattern, device_kind):
      return tflops, source
  return None, None


# ---------------------------------------------------------------------------------------------
# FLOPs

def matmul_weights(cfg) -> int:
  """Frozen matmul weights one token passes through: q,k,v,o, gate,up,down of every layer and
  the LM head (tied or not, it is one e x vocab product; the embedding lookup is no matmul)."""
  h, kv, d, e, i = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                    cfg.hidden_size, cfg.intermediate_size)
  per_layer = 2 * e * h * d + 2 * e * kv * d + 3 * e * i
  return cfg.num_hidden_layers * per_layer + e * cfg.vocab_size


def attention_flops_per_token(cfg, visible_keys: float) -> float:
  """Forward QK^T and PV of every layer for a query that sees `visible_keys` keys (causal rows of
  length s: s/2 on average, as `models.flops` counts), 2 FLOPs per multiply-add."""
  return cfg.num_hidden_layers * 2 * 2 * cfg.num_attention_heads * cfg.head_dim * visible_keys


def lora_train_flops(cfg, tokens: int, visible_keys: float, adapter_params: int) -> float:
  """Model FLOPs of one LoRA train step (base frozen, adapters trained, logits everywhere).

  Per token, with W = `matmul_weights`, A = `attention_flops_per_token`, P = adapter params:
    forward                       2W + A + 2P
    backward, activation grads    2W + 2A + 2P   (every frozen matmul passes dX back; attention's
                                                  backward is 4 products: dQ, dK, dV, dP)
    backward, weight grads        2P only        (frozen kernels get none: LoRA skips that 2W)
    total                         4W + 3A + 6P
  Full fine-tuning would be 6W + 3A. Not counted: remat's recomputed forward (hardware FLOPs,
  not model FLOPs), norms, softmax, RoPE, the loss and AdamW on the adapters (elementwise).
  """
  w = matmul_weights(cfg)
  a = attention_flops_per_token(cfg, visible_keys)
  return float(tokens) * (4.0 * w + 3.0 * a + 6.0 * adapter_params)


def scoring_flops(cfg, rows: int, seq: int) -> float:
  """Model FLOPs of one option-scoring pass: every prompt token through the layers (2 per
  weight plus causal attention, s/2 keys on average), the LM head at one position per row."""
  head = cfg.hidden_size * cfg.vocab_size
  per_token = 2.0 * (matmul_weights(cfg) - head) + attention_flops_per_token(cfg, seq / 2)
  return rows * seq * per_token + rows * 2.0 * head


# ---------------------------------------------------------------------------------------------
# Config, batches, evidence

def bench_config(hf: dict, attention: str, remat: str):
  """The TPU plan's bfloat16 random-init config (tpu_memory_plan.plan_config) on one device."""
  from tools.bench.tpu_memory_plan import plan_config
  c = plan_config(hf)
  c.model.attention = attention
  c.model.remat_policy = remat
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
  c.train.warmup_fraction = 0.0
  return c


def train_batch(vocab: int, rows: int, seq: int, segments: int, seed: int = 0) -> dict:
  """Rows packed by the data pipeline's own `assemble_row`: `segments` examples of seq/segments
  tokens per row, the loss on the second half of each (the answer), no option slots."""
  from surveylm_jax.data.packing import assemble_row
  if segments < 1 or seq % segments:
    raise ValueError(f"--segments {segments} must divide --seq {seq}")
  rng = np.random.RandomState(seed)
  n = seq // segments
  mask = np.zeros(n, np.int32)
  mask[n // 2:] = 1
  out = []
  for _ in range(rows):
    examples = [{"input_ids": rng.randint(3, vocab, n).astype(np.int32), "loss_mask": mask}
                for _ in range(segments)]
    out.append(assemble_row(examples, seq))
  return {k: np.stack([r[k] for r in out]) for k in out[0]}


def custom_calls(compiled) -> list:
  """Distinct custom-call targets in the optimised HLO: says which kernels really ran (e.g.
  `__cudnn$fmha...` for cuDNN flash attention, `tpu_custom_call` for Pallas/splash)."""
  try:
    text = compiled.as_text()
  except Exception:  # noqa: BLE001 - evidence only
    return []
  return sorted(set(re.findall(r'custom_call_target="([^"]+)"', text or "")))


def attention_kernel(calls) -> str:
  if any("fmha" in c or "flash" in c.lower() for c in calls):
    return "cudnn-fmha"
  if any("tpu_custom_call" in c or "mosaic" in c.lower() for c in calls):
    return "pallas"
  return "xla"


class _LogCapture(logging.Handler):
  """Log lines about attention (the model logs its fallbacks) during one item."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []

  def emit(self, record):
    try:
      msg = record.getMessage()
    except Exception:  # noqa: BLE001
      return
    if ATTENTION_LOG.search(msg) and msg not in self.lines:
      self.lines.append(msg[:300])


def selected_kernels(hf: dict, attentions, remat: str, seq: int, capture) -> tuple:
  """({attention: the kernel object `models.attention.select` picks for a training pass, or
  None}, {attention: what select logged}). Two options with equal kernels compile the same
  program (e.g. `auto` is `cudnn` on a GPU), so only the first is measured."""
  from surveylm_jax.train import setup
  kernels, logs = {}, {}
  for a in attentions:
    capture.lines = []
    try:
      from surveylm_jax.models import attention as attention_lib
      kernels[a] = attention_lib.select(setup.model_config(bench_config(hf, a, remat)),
                                        length=seq, prefix=True)
    except Exception:  # noqa: BLE001 - no dedupe then: each option is measured
      kernels[a] = None
    logs[a] = list(capture.lines)   # select logs a fallback once per process: keep it here
  return kernels, logs


def _memory(compiled, device) -> dict:
  out = {}
  try:
    from surveylm_jax.train import aot
    out.update(aot.summarize(compiled))   # xla_flops counts a scanned stack's body once
  except Exception:  # noqa: BLE001 - some backends give no analysis
    pass
  try:
    stats = device.memory_stats() or {}
    out["device_peak_bytes_so_far"] = stats.get("peak_bytes_in_use")
    out["device_bytes_limit"] = stats.get("bytes_limit")
  except Exception:  # noqa: BLE001
    pass
  return out


def matmul_tflops(device, n: int, reps: int = 10) -> float:
  """Achieved bf16 TFLOP/s of one n x n x n matmul on `device` (median of `reps`): the ceiling
  this chip reaches in practice, beside the datasheet peak."""
  import jax
  import jax.numpy as jnp
  a, b = (jax.device_put(jax.random.normal(jax.random.PRNGKey(i), (n, n), jnp.bfloat16), device)
          for i in (0, 1))
  f = jax.jit(lambda x, y: x @ y)
  _, times = _time_steps(lambda: f(a, b), reps, 3)
  return 2.0 * n ** 3 / statistics.median(times) / 1e12


def _time_steps(run, steps: int, warmup: int):
  """(first output, step seconds) with every call waited for (`block_until_ready`)."""
  import jax
  first = None
  for _ in range(warmup):
    out = jax.block_until_ready(run())
    first = out if first is None else first
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    out = jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
    first = out if first is None else first
  return first, times


# ---------------------------------------------------------------------------------------------
# The two programs

def train_item(config, mesh, params, frozen_sh, batch, steps, warmup) -> dict:
  import jax
  from surveylm_jax import lora as lora_lib
  from surveylm_jax import models, sharding
  from surveylm_jax.train import setup
  from surveylm_jax.train.step import init_state
  model = models.Transformer(setup.model_config(config))
  fns = setup.make_step_fns(config, model, total_steps=1000)
  with setup.rules_context(config, mesh):
    trainable = lora_lib.init(params, fns.lora_cfg, jax.random.PRNGKey(0))
    adapter_params = lora_lib.num_params(trainable)
    trainable_sh = setup.lora_shardings(model, trainable, mesh, config.sharding_rules)
    state_sh = setup.state_shardings(fns, trainable_sh, trainable, mesh)
    state = jax.jit(lambda t: init_state(t, fns.optimizer), out_shardings=state_sh)(trainable)
    del trainable
    shapes = {k: v.shape for k, v in batch.items()}
    step = setup.jit_train_step(fns, state_sh, frozen_sh, setup.batch_shardings(shapes, mesh),
                                mesh)
    device_batch = sharding.shard_host_batch(batch, mesh)
    rng = jax.random.PRNGKey(1)
    start = time.perf_counter()
    compiled = step.lower(state, params, device_batch, rng).compile()
    compile_s = time.perf_counter() - start
  holder = {"state": state}
  del state

  def run():
    holder["state"], metrics = compiled(holder["state"], params, device_batch, rng)
    return metrics["loss"]
  loss, times = _time_steps(run, steps, warmup)
  rows, seq = batch["input_ids"].shape
  segments = int(batch["segment_ids"].max())
  flops = lora_train_flops(model.config, rows * seq, seq / segments / 2, adapter_params)
  calls = custom_calls(compiled)
  out = dict(compile_s=compile_s, step_s=times, loss=float(loss), adapter_params=adapter_params,
             flops=flops, flops_models_flops_py=models.flops.train_step_flops(
                 model.config, rows * seq, seq, lora=True) if segments == 1 else None,
             custom_calls=calls, attention_kernel=attention_kernel(calls),
             memory=_memory(compiled, mesh.devices.flat[0]))
  del holder, compiled, device_batch
  return out


def score_item(config, mesh, params, rows, seq, steps, warmup) -> dict:
  import jax
  from surveylm_jax import models, sharding
  from surveylm_jax.inference import scoring
  from surveylm_jax.train import setup
  model = models.Transformer(setup.model_config(config))
  rng = np.random.RandomState(1)
  host = (rng.randint(3, model.config.vocab_size, (rows, seq)).astype(np.int32),
          np.ones((rows, seq), np.int32),
          np.full((rows,), seq - 1, np.int32),
          rng.randint(3, model.config.vocab_size, (rows, 8, 4)).astype(np.int32),
          np.ones((rows, 8, 4), bool))
  args = [jax.device_put(x, sharding.batch_sharding(mesh, x.ndim)) for x in host]
  start = time.perf_counter()
  with setup.rules_context(config, mesh):
    # pylint: disable-next=protected-access
    compiled = scoring._score_full.lower(model, params, *args).compile()
  compile_s = time.perf_counter() - start
  log_probs, times = _time_steps(lambda: compiled(params, *args), steps, warmup)
  calls = custom_calls(compiled)
  out = dict(compile_s=compile_s, step_s=times,
             output_finite=bool(np.isfinite(np.asarray(log_probs, np.float32)).all()),
             flops=scoring_flops(model.config, rows, seq), custom_calls=calls,
             attention_kernel=attention_kernel(calls),
             memory=_memory(compiled, mesh.devices.flat[0]))
  del compiled, args
  return out


# ---------------------------------------------------------------------------------------------
# Driver

def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="qwen2.5-1.5b,qwen2.5-7b",
                 help=f"comma separated, run in this order; of: {', '.join(MODEL_RUNS)}")
  p.add_argument("--attention", default="xla,cudnn,auto",
                 help="config.model.attention values, comma separated (xla, splash, cudnn, auto)")
  p.add_argument("--programs", default="train,score", help="train, score (comma separated)")
  p.add_argument("--rows", type=int, default=0, help="rows per step (0 = the model's default)")
  p.add_argument("--seq", type=int, default=0, help="tokens per row (0 = the model's default)")
  p.add_argument("--segments", type=int, default=1,
                 help="packed examples per training row (1 = one causal sequence per row)")
  p.add_argument("--remat", default="full", help="config.model.remat_policy of the train step")
  p.add_argument("--steps", type=int, default=5, help="timed steps per item (median reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
  p.add_argument("--peak_tflops", type=float, default=0.0,
                 help="peak bf16 TFLOP/s per chip for MFU (0 = from the device kind table)")
  p.add_argument("--budget_s", type=float, default=420.0,
                 help="seconds for the whole run: an item is skipped when the longest earlier "
                      "item of its program would end past this (a running item is not stopped)")
  p.add_argument("--matmul_n", type=int, default=8192,
                 help="size of the bf16 matmul timed first as the practical ceiling (0 = skip; "
                      "at most 256 on a CPU)")
  p.add_argument("--quick", action="store_true",
                 help="the tiny model at its tiny shape, 2 timed steps: the path end to end")
  p.add_argument("--out", default="runs/bench/gpu_step.json")
  args = p.parse_args(argv)
  if args.quick:
    args.models, args.steps, args.warmup = "tiny", min(args.steps, 2), min(args.warmup, 1)
  from surveylm_jax.models.config import ATTENTION_IMPLEMENTATIONS
  args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
  args.attention_list = [a.strip() for a in args.attention.split(",") if a.strip()]
  args.program_list = [a.strip() for a in args.programs.split(",") if a.strip()]
  for name, given, valid in (("--models", args.model_list, MODEL_RUNS),
                             ("--attention", args.attention_list, ATTENTION_IMPLEMENTATIONS),
                             ("--programs", args.program_list, ("train", "score"))):
    bad = [x for x in given if x not in valid]
    if bad or not given:
      p.error(f"{name}: unknown {bad or 'empty'}; valid: {', '.join(valid)}")
  for m in args.model_list:
    seq = args.seq or MODEL_RUNS[m][2]
    if args.segments < 1 or seq % args.segments:
      p.error(f"--segments {args.segments} must divide the sequence length {seq} ({m})")
  return args


def _table(results) -> str:
  head = ("model", "attention", "program", "status", "rows x seq", "compile s", "step s",
          "tokens/s", "TFLOP/s", "MFU", "kernel")
  lines = []
  for r in results:
    ok = r["status"] == "ok"
    lines.append((
        r["model"], r["attention"], r["program"], r["status"], f"{r['rows']} x {r['seq']}",
        f"{r['compile_s']:.1f}" if ok else "", f"{r['step_s_median']:.4f}" if ok else "",
        f"{r['tokens_per_s']:,.0f}" if ok else "",
        f"{r['achieved_tflops']:.1f}" if ok else "",
        (f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "unknown") if ok else "",
        r.get("attention_kernel", "") if ok else (r.get("error") or r.get("reason") or "")[:60]))
  widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
  fmt = "  ".join(f"{{:{w}}}" for w in widths)
  return "\n".join([fmt.format(*head)] + [fmt.format(*map(str, row)) for row in lines])


def main(argv=None) -> dict:
  args = _parse(argv)
  if os.environ.get("JAX_PLATFORMS") != "cpu":
    # More of the card for XLA's pool than jax's default 75% (the 7B step with its logits).
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.90")
  t0 = time.monotonic()
  import jax
  from surveylm_jax import paths, sharding
  from surveylm_jax.train import setup
  device = jax.devices()[0]
  kind = device.device_kind
  peak, source = ((args.peak_tflops, "--peak_tflops") if args.peak_tflops
                  else peak_tflops(kind))
  try:
    env = jax.print_environment_info(return_string=True)
  except Exception:  # noqa: BLE001
    env = None
  report = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device_kind": kind,
            "platform": device.platform, "device_count": jax.device_count(),
            "jax_version": jax.__version__, "python": sys.version.split()[0],
            "peak_tflops_bf16": peak, "peak_source": source,
            "xla_flags": os.environ.get("XLA_FLAGS"),
            "mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
            "settings": {k: v for k, v in vars(args).items() if not k.endswith("_list")},
            "environment": env, "results": [], "total_s": None}
  out_path = paths.as_path(args.out)
  paths.makedirs(out_path.parent)
  print(f"device: {kind} ({device.platform}); peak bf16 "
        f"{f'{peak:g} TFLOP/s ({source})' if peak else 'unknown: MFU not computed'}", flush=True)
  n = min(args.matmul_n, 256) if device.platform == "cpu" else args.matmul_n   # seconds on a CPU
  if n:
    try:
      report["matmul_bf16_tflops"], report["matmul_n"] = matmul_tflops(device, n), n
      print(f"bf16 {n}^3 matmul: {report['matmul_bf16_tflops']:.1f} TFLOP/s", flush=True)
    except Exception as e:  # noqa: BLE001 - the ceiling is context, not a result
      report["matmul_error"] = f"{type(e).__name__}: {str(e)[:300]}"
  ceiling = report.get("matmul_bf16_tflops")

  def save():
    report["total_s"] = time.monotonic() - t0
    paths.write_text(out_path, json.dumps(report, indent=2))

  took = {}   # program -> longest item so far (s): what the next one is expected to take

  def fits(program):
    return time.monotonic() - t0 + took.get(program, 0.0) <= args.budget_s

  capture = _LogCapture()
  root = logging.getLogger()
  old_level = root.level
  root.addHandler(capture)
  root.setLevel(min(old_level, logging.INFO) if old_level else logging.INFO)
  logging.captureWarnings(True)
  try:
    for name in args.model_list:
      hf, default_rows, default_seq = MODEL_RUNS[name]
      rows, seq = args.rows or default_rows, args.seq or default_seq
      items = [(a, p) for a in args.attention_list for p in args.program_list]

      def record(attention, program, **fields):
        r = dict(model=name, attention=attention, program=program, rows=rows, seq=seq,
                 tokens=rows * seq, **fields)
        report["results"].append(r)
        save()
        return r

      if not any(fits(p) for p in args.program_list):
        for a, p in items:
          record(a, p, status="skipped", reason=f"time budget {args.budget_s:g} s")
        continue
      # One set of params per model (the attention option changes no param).
      gc.collect()
      # Weak references: arrays of earlier work that die meanwhile must not make the count < 0.
      arrays_before = [weakref.ref(a) for a in jax.live_arrays()]
      config = bench_config(hf, "xla", args.remat)
      mesh = sharding.make_mesh(config.mesh.to_dict(), [device])
      try:
        from surveylm_jax import models
        start = time.perf_counter()
        with setup.rules_context(config, mesh):
          params, frozen_sh = setup.load_params(
              config, models.Transformer(setup.model_config(config)), mesh, config.sharding_rules)
        jax.block_until_ready(params)
        n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
        print(f"{name}: {n_params:,} params initialised on {kind} in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
      except Exception as e:  # noqa: BLE001 - e.g. out of memory: the next model may still fit
        for a, p in items:
          record(a, p, status="error", error=f"init: {type(e).__name__}: {str(e)[:500]}")
        print(f"{name}: init failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
        continue
      batch = train_batch(hf["vocab_size"], rows, seq, args.segments)
      kernels, select_logs = selected_kernels(hf, args.attention_list, args.remat, seq, capture)
      for attention, program in items:
        earlier = args.attention_list[:args.attention_list.index(attention)]
        same = next((b for b in earlier if kernels[b] is not None
                     and kernels[b] == kernels[attention]), None)
        if same:
          record(attention, program, status="skipped", same_as=same,
                 attention_log=select_logs[attention],
                 reason=f"same kernel as {same} here ({kernels[same].name}): measured there")
          continue
        if not fits(program):
          record(attention, program, status="skipped", reason=f"time budget {args.budget_s:g} s")
          continue
        config = bench_config(hf, attention, args.remat)
        capture.lines = []
        started = time.monotonic()
        try:
          if program == "train":
            got = train_item(config, mesh, params, frozen_sh, batch, args.steps, args.warmup)
          else:
            got = score_item(config, mesh, params, rows, seq, args.steps, args.warmup)
        except Exception as e:  # noqa: BLE001 - an OOM or unsupported option is a result too
          took[program] = max(took.get(program, 0.0), time.monotonic() - started)
          r = record(attention, program, status="error",
                     attention_log=select_logs[attention] + capture.lines,
                     error=f"{type(e).__name__}: {str(e)[:1000]}")
          print(f"{name} {attention} {program}: {r['error'][:300]}", flush=True)
          continue
        took[program] = max(took.get(program, 0.0), time.monotonic() - started)
        med = statistics.median(got["step_s"])
        achieved = got["flops"] / med
        r = record(attention, program, status="ok", step_s_median=med,
                   tokens_per_s=rows * seq / med, achieved_tflops=achieved / 1e12,
                   mfu=achieved / (peak * 1e12) if peak else None,
                   fraction_of_matmul=achieved / (ceiling * 1e12) if ceiling else None,
                   attention_log=select_logs[attention] + capture.lines,
                   remat=args.remat if program == "train" else None,
                   segments=args.segments if program == "train" else None, **got)
        mfu = "unknown" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print(f"{name} {attention} {program}: compile {got['compile_s']:.1f} s, step "
              f"{med:.4f} s, {r['tokens_per_s']:,.0f} tokens/s, {r['achieved_tflops']:.1f} "
              f"TFLOP/s, MFU {mfu}, kernel {got['attention_kernel']}"
              + (f"; log: {' | '.join(r['attention_log'])}" if r["attention_log"] else ""),
              flush=True)
      # Free this model before the next one is built.
      del params, frozen_sh, batch
      gc.collect()
      jax.clear_caches()
      gc.collect()
      still_alive = {id(r()) for r in arrays_before if r() is not None}
      report.setdefault("arrays_left_after_free", {})[name] = sum(
          id(a) not in still_alive for a in jax.live_arrays())
  finally:
    root.removeHandler(capture)
    root.setLevel(old_level)
    logging.captureWarnings(False)
  save()
  print(_table(report["results"]))
  print(f"wrote {out_path} ({report['total_s']:.0f} s)")
  return report


if __name__ == "__main__":
  main()
