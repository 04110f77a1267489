"""Merge a PEFT LoRA adapter into its base model and write a complete HF model folder.

python -m tools.merge_lora --base checkpoints/smollm2-135m-instruct \
    --adapter runs/stage1/adapter --out runs/stage1/merged [--dtype bfloat16]

The result loads with `transformers.AutoModelForCausalLM.from_pretrained` (and vLLM) without
PEFT. The tokenizer files of the base folder are copied alongside, so the output is a whole
model folder. `--base` and `--out` may be remote (`gs://...`).
"""
from __future__ import annotations

import argparse
import json
import sys

from surveylm_jax import lora, models, paths
from surveylm_jax.models import hf_io


def _stored_dtype(folder: str) -> str:
  """The dtype the base checkpoint declares (float32 when it declares none we can write)."""
  hf = json.loads(paths.join(folder, "config.json").read_text(encoding="utf-8"))
  dtype = hf.get("dtype") or hf.get("torch_dtype")
  return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--base", required=True, help="HF model folder the adapter was trained on")
  parser.add_argument("--adapter", required=True, help="PEFT adapter folder")
  parser.add_argument("--out", required=True, help="where to write the merged model folder")
  parser.add_argument("--tokenizer", default=None,
                      help="folder (or hub id) whose tokenizer files go into --out (default: "
                      "the base folder's)")
  parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                      help="dtype of the written weights (default: the one the base "
                      "config.json declares)")
  args = parser.parse_args(argv)
  # Merge in float32 whatever the storage dtype, so W + scale·a·b is rounded once.
  model, params = models.load_pretrained(args.base, dtype="float32")
  lora_params, cfg = lora.load_peft(args.adapter, params)
  tokenizer = args.tokenizer or (args.base if hf_io.has_tokenizer(args.base) else None)
  if tokenizer is None:
    print(f"warning: {args.base} has no tokenizer files and --tokenizer was not given: "
          f"{args.out} gets weights and config only", file=sys.stderr)
  lora.save_merged(args.out, model, params, lora_params, cfg,
                   dtype=args.dtype or _stored_dtype(args.base), tokenizer_from=tokenizer)
  print(f"merged {', '.join(cfg.targets)} (r={cfg.rank}, scale={cfg.scale:g}) into {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
