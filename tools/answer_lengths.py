"""How long the reference answers of tasks 1-3 are in model tokens, and what a limit would cut.

Generation stops at `max_new_tokens`; an answer that needs more is cut and usually fails to parse
(a JSON stance without its closing brace) or loses text (an interview answer). This tool measures
the released references with the model's tokenizer so the per-task defaults in
`eval.generated_tasks.DEFAULT_MAX_NEW_TOKENS` rest on numbers. A reference needs its tokens plus
one end-of-sequence token; it counts as cut at a limit below that, the same rule the generation
stats use (no EOS within the limit).

    python -m tools.answer_lengths --samples ../shared/alignsurvey_sample \
        --tokenizer checkpoints/smollm2-135m-instruct
"""
import argparse
import json
import os

import numpy as np

TASKS = ("task1", "task2", "task3")
LIMITS = (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def answer_lengths(tokenizer, outputs) -> np.ndarray:
  """Tokens each reference answer needs when generated, its end-of-sequence token included."""
  return np.array([len(tokenizer.encode(text, add_special_tokens=False)) + 1 for text in outputs])


def length_summary(lengths: np.ndarray, limits=LIMITS) -> dict:
  """Median / p90 / p99 / max, and per limit how many answers it would cut."""
  return {"n": int(lengths.size), "median": float(np.median(lengths)),
          "p90": float(np.percentile(lengths, 90)), "p99": float(np.percentile(lengths, 99)),
          "max": int(lengths.max()), "cut": {int(k): int(np.sum(lengths > k)) for k in limits}}


def smallest_limit(lengths: np.ndarray, limits=LIMITS, max_cut_share: float = 0.01):
  """The smallest candidate limit cutting at most `max_cut_share` of the answers (None: none)."""
  for k in sorted(limits):
    if np.sum(lengths > k) <= max_cut_share * lengths.size:
      return int(k)
  return None


def _table(summaries: dict, limits) -> str:
  head = ["task", "n", "median", "p90", "p99", "max"] + [f"cut@{k}" for k in limits]
  lines = [" | ".join(head), " | ".join("---" for _ in head)]
  for task, s in summaries.items():
    row = [task, str(s["n"]), f"{s['median']:.0f}", f"{s['p90']:.0f}", f"{s['p99']:.0f}",
           str(s["max"])] + [str(s["cut"][k]) for k in limits]
    lines.append(" | ".join(row))
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--samples", default=os.path.join("..", "shared", "alignsurvey_sample"),
                      help="folder with task1.json, task2.json, task3.json")
  parser.add_argument("--tokenizer", default=os.path.join("checkpoints", "smollm2-135m-instruct"))
  parser.add_argument("--limits", default=",".join(str(k) for k in LIMITS))
  parser.add_argument("--max-cut-share", type=float, default=0.01)
  parser.add_argument("--json", help="also write the summaries here")
  args = parser.parse_args(argv)
  import transformers
  from surveylm_jax.data import read_alignsurvey
  tokenizer = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
  limits = tuple(int(k) for k in args.limits.split(","))
  summaries = {}
  for task in TASKS:
    records = read_alignsurvey(os.path.join(args.samples, f"{task}.json"))
    lengths = answer_lengths(tokenizer, [r.output for r in records])
    summaries[task] = length_summary(lengths, limits)
    summaries[task]["smallest_limit"] = smallest_limit(lengths, limits, args.max_cut_share)
  print(_table(summaries, limits))
  print(f"\nsmallest limit cutting <= {args.max_cut_share:.0%} of references (EOS included):")
  for task, s in summaries.items():
    print(f"  {task}: {s['smallest_limit']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(summaries, f, indent=2)
  return summaries


if __name__ == "__main__":
  main()
