"""Pipeline throughput and packing efficiency on the GSS 2018 task 4 data.

  python -m tools.bench.bench_pipeline --data /tmp/gss2018 --seq-len 1024 2048

--data is a converter output folder (`python -m tools.survey_to_alignsurvey --codebook
configs/surveys/gss2018_spending.yaml --out /tmp/gss2018`); without it the codebook is converted in
memory first. Reports, per sequence length: records, tokens per second through the whole pipeline
(template, tokenize, mask, pack, batch) and the share of non-pad tokens in the packed rows.
Two packers are measured: first-fit of whole examples (`plain`), capped by how many examples fit
in a row (GSS task 4 examples are ~190 tokens: five fit in 1024, a sixth never does, so the share
stays near 5 x 190 / 1024), and shared-prefix packing (`shared_prefix`, `data.share_prefixes`):
a respondent's background once per row followed by their questions, rows filled in stream order,
so rows end within one question of full. For it `tokens_per_record` shows the compute per record
(background counted once per row) and `record_tokens_per_second` the unpacked-equivalent rate.
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


def run(records, tokenizer, seq_len: int, batch_size: int, num_rows: int, share: bool) -> dict:
  config = gp.PipelineConfig(seq_len=seq_len, batch_size=batch_size, num_packing_rows=num_rows,
                             process_index=0, process_count=1, drop_remainder=False,
                             share_prefixes=share)
  start = time.perf_counter()
  iterator = iter(gp.build_dataset(records, tokenizer, config))
  batches = sum(1 for _ in iterator)
  seconds = time.perf_counter() - start
  counts = gp.pipeline_counts(iterator)
  unpacked = counts["tokens"] + counts.get("shared_tokens_saved", 0)
  return {"packer": "shared_prefix" if share else "plain", "seq_len": seq_len, "records": len(records),
          "batches": batches, "seconds": round(seconds, 2),
          "tokens_per_second": round(counts["tokens"] / seconds),
          "record_tokens_per_second": round(unpacked / seconds), "examples": counts["examples"],
          "truncated": counts["truncated"], "dropped": counts["dropped"], "rows": counts["rows"],
          "mean_tokens_per_example": round(unpacked / max(counts["examples"], 1), 1),
          "tokens_per_record": round(counts["tokens"] / max(counts["examples"], 1), 1),
          "non_pad_share": round(counts["tokens"] / counts["slots"], 4)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", default=None)
  parser.add_argument("--model", default=os.path.join(REPO, "checkpoints/smollm2-135m-instruct"))
  parser.add_argument("--seq-len", type=int, nargs="+", default=[1024, 2048])
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--packing-rows", type=int, default=16)
  parser.add_argument("--limit", type=int, default=None, help="first N records only")
  parser.add_argument("--packer", nargs="+", default=["plain", "shared_prefix"],
                      choices=["plain", "shared_prefix"])
  args = parser.parse_args()
  tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
  records = _records(args.data, args.limit)
  for seq_len in args.seq_len:
    for packer in args.packer:
      print(json.dumps(run(records, tokenizer, seq_len, args.batch_size, args.packing_rows,
                           packer == "shared_prefix")), flush=True)


if __name__ == "__main__":
  main()
