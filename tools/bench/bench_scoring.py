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
"""
from __future__ import annotations

import argparse
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
  parser.add_argument("--out", default="runs/bench/scoring.json")
  args = parser.parse_args(argv)
  _set_threads(args.threads)

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
    run()
    warmup_s += time.time() - t0
    t0 = time.time()
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
          f"{done / generate_s:.2f} rec/s, ratio {generate_s / scoring_s:.1f}x", flush=True)

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
                  "first_pass_seconds_incl_compile": warmup_s, "batch_size": args.batch_size,
                  "pack_length": args.pack_length, "pack_rows": args.pack_rows,
                  "length_step": args.length_step, "slice": args.slice,
                  "prefix_groups": len(set(keys)), "tokens": plan_tokens},
      "generate": {"records_per_s": len(records) / generate_s, "seconds": generate_s,
                   "max_new_tokens": args.max_new_tokens, "parse": tally.summary()},
      "ratio_records_per_s": generate_s / scoring_s,
      "ratio_incl_compile": generate_s / warmup_s,
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
  print(f"ratio {result['ratio_records_per_s']:.1f}x, agreement {result['agreement']:.1%} (first letter "
        f"{result['first_letter_agreement']:.1%}) -> {args.out}")
  return 0


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
