"""Option scoring (JAX, prefix key/value reuse, batched) vs generate-then-parse (transformers
`generate`, one prompt at a time, greedy, as the reference pipeline does) on the same model and
prompts.

    python -m tools.bench.bench_scoring --data=data/gss2018/task4/individual/test.json \
        --records=200 --threads=2 --out=runs/bench/scoring.json

Both paths run in this one process with the same thread count, alternating slice by slice so both
see the same machine load (slices end at a respondent boundary, as a real evaluation never splits
one respondent's questions). Reported: records/s of each (the scoring path after a warm-up pass per
slice that compiles its shapes; that time is reported too), the ratio, and how often the two
read-outs give the same answer (parse failures of the generated text count as disagreements and
are reported by reason).

Compilation vs the persistent compile cache (`surveylm_jax/compile_cache.py`): with
`--compile_cache DIR` the scoring side's programs are written to DIR (every size and compile
time), and a second run of the bench in another process with the same DIR loads them instead of
compiling. What each run pays before its shapes are warm is reported: the warm-up pass's seconds
(which also score every record once), split by jax's own timers into tracing, lowering, XLA
compilation and cache reads, with the cache hits and misses. `ratio_counting_compile` compares
generate-then-parse with that whole first pass (compilation or cache loads + scoring each record
once) -- what an evaluation that starts in a fresh process pays:

    python -m tools.bench.bench_scoring --compile_cache=/tmp/bench_cc --out=runs/bench/scoring_cold.json
    python -m tools.bench.bench_scoring --compile_cache=/tmp/bench_cc --out=runs/bench/scoring_warm.json
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import sys
import time


def _set_threads(n: int):
  # Must happen before jax / torch start their thread pools.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={n}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ["OMP_NUM_THREADS"] = str(n)
  os.environ["TOKENIZERS_PARALLELISM"] = "false"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="checkpoints/smollm2-135m-instruct")
  parser.add_argument("--data", default="data/gss2018/task4/individual/test.json")
  parser.add_argument("--records", type=int, default=200)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--pack_length", type=int, default=256,
                      help="question tokens per packed row (scoring.score_options)")
  parser.add_argument("--pack_rows", type=int, default=8, help="packed rows per forward pass")
  parser.add_argument("--length_step", type=int, default=16, help="padding step of row lengths")
  parser.add_argument("--slice", type=int, default=100, help="records per alternation of the two read-outs")
  parser.add_argument("--max_new_tokens", type=int, default=8)
  parser.add_argument("--compile_cache", default="",
                      help="persistent compile cache folder for the scoring side ('' = none)")
  parser.add_argument("--out", default="runs/bench/scoring.json")
  args = parser.parse_args(argv)
  _set_threads(args.threads)
  load_at_start = os.getloadavg()
  from surveylm_jax import compile_cache
  # Every program is written, however small or quick to compile: the second run should pay none.
  cache_dir = compile_cache.enable(args.compile_cache, min_compile_secs=0.0, min_entry_size_bytes=0)
  entries_before = _cache_entries(cache_dir)
  compile_timers = _CompileTimers()

  import numpy as np
  import torch
  import transformers
  from surveylm_jax import models
  from surveylm_jax.data import read_alignsurvey
  from surveylm_jax.eval.answer_parsing import ParseTally, parse_option_answer
  from surveylm_jax.data.prefix_packing import prefix_key
  from surveylm_jax.eval.runner import chat_prompt
  from surveylm_jax.inference import prefix_plan, scoring
  torch.set_num_threads(args.threads)

  records = list(read_alignsurvey(args.data))[:args.records]
  tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
  texts = [chat_prompt(tokenizer, r.prompt) for r in records]
  ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
  print(f"{len(records)} prompts, mean {np.mean([len(i) for i in ids]):.0f} tokens, {args.threads} threads",
        flush=True)

  # Both read-outs run slice by slice, alternating, so both see the same machine load (CPUs here
  # are shared); each slice is scored once untimed first so compilation stays out of the timing.
  model, params = models.load_pretrained(args.model, dtype="float32")
  torch_model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
  letters = sorted({o.letter for r in records for o in r.options})
  letter_ids = dict(zip(letters, scoring.letter_token_ids(tokenizer, letters)))
  option_ids = [[letter_ids[o.letter] for o in r.options] for r in records]
  keys = [prefix_key(r) for r in records]
  plan_tokens = prefix_plan.make_plan(ids, keys, args.pack_length).token_counts()
  print(f"tokens: {plan_tokens['whole_prompts']} in the whole prompts, {plan_tokens['computed']} "
        f"computed with prefix reuse", flush=True)
  tally = ParseTally()
  scores, generated = [], []
  warmup_s = scoring_s = generate_s = 0.0
  for sl in _slices(keys, args.slice):
    run = lambda: scoring.score_options(model, params, ids[sl], option_ids[sl], prefix_keys=keys[sl],
                                        batch_size=args.batch_size, length_step=args.length_step,
                                        pack_length=args.pack_length, pack_rows=args.pack_rows)
    t0 = time.time()
    with compile_timers.counting("warmup"):
      run()
    warmup_s += time.time() - t0
    t0 = time.time()
    with compile_timers.counting("timed"):   # expected empty: every shape is warm by now
      scores.extend(run())
    scoring_s += time.time() - t0
    t0 = time.time()
    with torch.no_grad():
      for r, prompt_ids in zip(records[sl], ids[sl]):
        x = torch.tensor([prompt_ids])
        out = torch_model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.max_new_tokens,
                                   do_sample=False, pad_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(out[0, len(prompt_ids):], skip_special_tokens=True)
        generated.append((text, tally.add(parse_option_answer(text, r.options), text)))
    generate_s += time.time() - t0
    done = len(scores)
    print(f"[bench] {done}/{len(records)}: scoring {done / scoring_s:.2f} rec/s, generate "
          f"{done / generate_s:.2f} rec/s, ratio {generate_s / scoring_s:.1f}x "
          f"({generate_s / warmup_s:.1f}x counting the warm-up pass, {warmup_s:.1f} s)", flush=True)

  agree = sum(p.ok and p.value == s.predicted_index for (_, p), s in zip(generated, scores))
  # The generated text often names one letter and another option's text ("A. too much"): the
  # strict parser rejects those; here only the first option letter written is compared.
  letter_agree = 0
  for (text, _), s, r in zip(generated, scores, records):
    letters = [o.letter for o in r.options]
    m = re.search(r"\b(" + "|".join(map(re.escape, letters)) + r")\b", text)
    letter_agree += bool(m) and letters.index(m.group(1)) == s.predicted_index
  parsed = [(p, s) for (_, p), s in zip(generated, scores) if p.ok]
  result = {
      "model": args.model, "data": args.data, "records": len(records), "threads": args.threads,
      "mean_prompt_tokens": float(np.mean([len(i) for i in ids])),
      "scoring": {"records_per_s": len(records) / scoring_s, "seconds": scoring_s,
                  "first_pass_seconds_incl_compile": warmup_s,
                  "compile_overhead_seconds": warmup_s - scoring_s,
                  "warmup_jax": compile_timers.summary("warmup"),
                  "timed_pass_jax": compile_timers.summary("timed"),
                  "batch_size": args.batch_size,
                  "pack_length": args.pack_length, "pack_rows": args.pack_rows,
                  "length_step": args.length_step, "slice": args.slice,
                  "prefix_groups": len(set(keys)), "tokens": plan_tokens},
      "generate": {"records_per_s": len(records) / generate_s, "seconds": generate_s,
                   "max_new_tokens": args.max_new_tokens, "parse": tally.summary()},
      "ratio_records_per_s": generate_s / scoring_s,
      # The warm-up pass scores every record once and pays compilation (or cache loads) and
      # tracing: a fresh process's whole cost on the scoring side, model loading aside.
      "ratio_counting_compile": generate_s / warmup_s,
      "compile_cache": {"dir": cache_dir, "entries_before": entries_before,
                        "entries_after": _cache_entries(cache_dir)},
      "load_average": {"start": load_at_start, "end": os.getloadavg()},
      "agreement": agree / len(records),
      "first_letter_agreement": letter_agree / len(records),
      "agreement_where_parsed": (sum(p.value == s.predicted_index for p, s in parsed) / len(parsed)
                                 if parsed else None),
      "examples": [{"generated": t, "parsed": p.value, "scored": s.predicted_index}
                   for (t, p), s in list(zip(generated, scores))[:5]],
  }
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1, ensure_ascii=False)
  warm = result["scoring"]["warmup_jax"]
  print(f"ratio {result['ratio_records_per_s']:.1f}x on warm shapes, "
        f"{result['ratio_counting_compile']:.1f}x counting the warm-up pass ({warmup_s:.1f} s: "
        f"trace {warm['trace_s']:.1f} s, lower {warm['lower_s']:.1f} s, XLA compile or cache load "
        f"{warm['backend_compile_s']:.1f} s (of which cache reads {warm['cache_read_s']:.1f} s); cache hits "
        f"{warm['cache_hits']}, misses {warm['cache_misses']}); agreement {result['agreement']:.1%} "
        f"(first letter {result['first_letter_agreement']:.1%}); load average "
        f"{load_at_start[0]:.1f} -> {result['load_average']['end'][0]:.1f} -> {args.out}")
  return 0


def _cache_entries(folder) -> int | None:
  if not folder:
    return None
  from surveylm_jax import paths
  return sum(1 for p in paths.as_path(folder).iterdir() if p.name.endswith("-cache"))


class _CompileTimers:
  """jax's own compile-path timers (`jax.monitoring`), summed per phase of the bench."""

  DURATIONS = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
               "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
               "/jax/core/compile/backend_compile_duration": "backend_compile_s",  # incl. cache reads
               "/jax/compilation_cache/cache_retrieval_time_sec": "cache_read_s"}
  EVENTS = {"/jax/compilation_cache/cache_hits": "cache_hits",
            "/jax/compilation_cache/cache_misses": "cache_misses"}

  def __init__(self):
    import jax.monitoring
    self.phase = None
    self.totals = collections.defaultdict(collections.Counter)
    jax.monitoring.register_event_duration_secs_listener(self._duration)
    jax.monitoring.register_event_listener(self._event)

  def _duration(self, event, duration, **kwargs):
    if self.phase and event in self.DURATIONS:
      self.totals[self.phase][self.DURATIONS[event]] += duration

  def _event(self, event, **kwargs):
    if self.phase and event in self.EVENTS:
      self.totals[self.phase][self.EVENTS[event]] += 1

  @contextlib.contextmanager
  def counting(self, phase: str):
    self.phase = phase
    try:
      yield
    finally:
      self.phase = None

  def summary(self, phase: str) -> dict:
    got = self.totals[phase]
    return {**{name: round(got[name], 3) for name in self.DURATIONS.values()},
            **{name: got[name] for name in self.EVENTS.values()}}


def _slices(keys, size: int):
  """Consecutive slices of about `size` records, each ending where the prefix key changes."""
  start = 0
  while start < len(keys):
    stop = min(start + size, len(keys))
    while stop < len(keys) and keys[stop] is not None and keys[stop] == keys[stop - 1]:
      stop += 1
    yield slice(start, stop)
    start = stop


if __name__ == "__main__":
  sys.exit(main())
