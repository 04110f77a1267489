"""Pipeline throughput and packing efficiency on the GSS 2018 task 4 data.

  python -m tools.bench.bench_pipeline --data /tmp/gss2018 --seq-len 1024 2048

--data is a converter output folder (`python -m tools.survey_to_alignsurvey --codebook
configs/surveys/gss2018_spending.yaml --out /tmp/gss2018`); without it the codebook is converted in
memory first. Reports, per sequence length: records, tokens per second through the whole pipeline
(template, tokenize, mask, pack, batch) and the share of non-pad tokens in the packed rows.
Whole examples are never split across rows, so the share is capped by how many examples fit in a
row: with GSS task 4 examples of ~190 tokens, five fit in 1024 (a sixth never does), capping it
near 5 x 190 / 1024; longer rows (4096) are not capped this way.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import transformers

from surveylm_jax.data import grain_pipeline as gp
from surveylm_jax.data import read_alignsurvey
from surveylm_jax.data.codebook import load_codebook
from surveylm_jax.data.survey_converter import convert_survey, write_conversion

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _records(data_dir: str | None, limit: int | None):
  if data_dir is None:
    data_dir = tempfile.mkdtemp(prefix="gss2018_")
    write_conversion(convert_survey(load_codebook(os.path.join(REPO, "configs/surveys/gss2018_spending.yaml"))),
                     data_dir)
  records = list(read_alignsurvey(os.path.join(data_dir, "task4/individual/train.json")))
  records += list(read_alignsurvey(os.path.join(data_dir, "task4/group/train.json")))
  return records[:limit] if limit else records


def run(records, tokenizer, seq_len: int, batch_size: int, num_rows: int) -> dict:
  config = gp.PipelineConfig(seq_len=seq_len, batch_size=batch_size, num_packing_rows=num_rows,
                             process_index=0, process_count=1, drop_remainder=False)
  start = time.perf_counter()
  iterator = iter(gp.build_dataset(records, tokenizer, config))
  batches = sum(1 for _ in iterator)
  seconds = time.perf_counter() - start
  counts = gp.pipeline_counts(iterator)
  return {"seq_len": seq_len, "records": len(records), "batches": batches, "seconds": round(seconds, 2),
          "tokens_per_second": round(counts["tokens"] / seconds), "examples": counts["examples"],
          "truncated": counts["truncated"], "dropped": counts["dropped"], "rows": counts["rows"],
          "mean_tokens_per_example": round(counts["tokens"] / max(counts["examples"], 1), 1),
          "non_pad_share": round(counts["tokens"] / counts["slots"], 4)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", default=None)
  parser.add_argument("--model", default=os.path.join(REPO, "checkpoints/smollm2-135m-instruct"))
  parser.add_argument("--seq-len", type=int, nargs="+", default=[1024, 2048])
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--packing-rows", type=int, default=16)
  parser.add_argument("--limit", type=int, default=None, help="first N records only")
  args = parser.parse_args()
  tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
  records = _records(args.data, args.limit)
  for seq_len in args.seq_len:
    print(json.dumps(run(records, tokenizer, seq_len, args.batch_size, args.packing_rows)))


if __name__ == "__main__":
  main()
