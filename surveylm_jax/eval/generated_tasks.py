"""Tasks 1-3 (role inference, interview answers, stance) through generate-then-parse.

Their targets are free text or JSON, so the read-out is KV-cache generation (greedy) and the
parsers of answer_parsing; every parse failure is counted per task and scored as wrong.
"""
from __future__ import annotations

from surveylm_jax.cli import ConfigError
from surveylm_jax.data import InterviewRecord, RoleInferenceRecord, StanceRecord
from surveylm_jax.eval import answer_parsing, judge, task_metrics, text_metrics
from surveylm_jax.inference.length_buckets import GenerationStats, generate_bucketed
from surveylm_jax.inference.scoring import ProgressLine

GENERATED_TASKS = {"task1": RoleInferenceRecord, "task2": InterviewRecord, "task3": StanceRecord}

# Generation limits per task, from `python -m tools.answer_lengths` on the release sample
# (SmolLM2 tokenizer, tokens of the reference answer + EOS). Tasks 2 and 3 take the smallest of
# 32..1024 that cuts <= 1% of references; task 1's answers are short, 64 is room to spare.
#   task1 (240 refs): median 12, max 13 tokens; 0 cut at 32.
#   task2 (632 refs): median 67, p90 300, p99 771, max 1224; cut 19 at 512, 7 at 768, 3 at 1024.
#   task3 (160 refs): median 154, p90 275, p99 391, max 479; cut 2 at 384, 0 at 512.
DEFAULT_MAX_NEW_TOKENS = {"task1": 64, "task2": 1024, "task3": 512}


def chat_prompt(tokenizer, text: str) -> str:
  return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)


def generate_texts(model, params, tokenizer, prompts, batch_size: int, max_new_tokens: int,
                   label: str, stats: GenerationStats | None = None,
                   max_prompt_len: int | None = None) -> list[str]:
  """Greedy continuations of user prompts (chat template applied), decoded without specials.

  Prompts are padded to length buckets in batches of a fixed size (`inference.length_buckets`),
  so few programs compile; pass `stats` to read the shapes used and which outputs were cut at
  `max_new_tokens` (no end-of-sequence token).
  """
  token_rows = tokenizer([chat_prompt(tokenizer, p) for p in prompts],
                         add_special_tokens=False)["input_ids"] if prompts else []
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  new = generate_bucketed(model, params, token_rows, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, pad_id=pad_id,
                          max_prompt_len=max_prompt_len, stats=stats,
                          on_batch=ProgressLine(label))
  return [tokenizer.decode(row, skip_special_tokens=True) for row in new]


def record_id(record) -> str:
  """'task3/group/test.json#4': the file's last three path parts and the record's index, so
  records of different tasks' same-named files stay apart in predictions.jsonl."""
  parts = str(record.source.path).replace("\\", "/").split("/")
  return "/".join(parts[-3:]) + f"#{record.source.index}"


def max_new_tokens_per_task(overrides) -> dict:
  """The measured defaults, with each task's positive config value in its place."""
  overrides = dict(overrides or {})
  unknown = sorted(set(overrides) - set(DEFAULT_MAX_NEW_TOKENS))
  if unknown:
    raise ConfigError(f"config.eval.max_new_tokens_task has unknown tasks {unknown}; "
                     f"valid: {sorted(DEFAULT_MAX_NEW_TOKENS)}")
  return {t: int(overrides.get(t) or 0) or d for t, d in DEFAULT_MAX_NEW_TOKENS.items()}


def evaluate_generated(model, params, tokenizer, records, batch_size: int, max_new_tokens: dict,
                       judge_config=None) -> tuple[dict, list]:
  """Metrics per task for task 1/2/3 records, and one prediction row per record, generating at
  most `max_new_tokens[task]` tokens. Each task's metrics carry `generation` (compiled shapes,
  answers cut at the limit: counted, and flagged on their rows). Task 2 answers also go to the
  LLM judge when `judge_config.enabled`."""
  metrics, rows = {}, []
  for task, cls in GENERATED_TASKS.items():
    recs = [r for r in records if isinstance(r, cls)]
    if not recs:
      continue
    stats = GenerationStats()
    texts = generate_texts(model, params, tokenizer, [r.prompt for r in recs], batch_size,
                           max_new_tokens[task], task, stats=stats)
    tally = answer_parsing.ParseTally()
    if task == "task1":
      parsed = [tally.add(answer_parsing.parse_values(t, r.allowed_values), t) for r, t in zip(recs, texts)]
      metrics[task] = task_metrics.role_inference_metrics(
          [r.field for r in recs], [r.target_values for r in recs], [p.value for p in parsed])
    elif task == "task2":
      parsed = [tally.add(answer_parsing.Parsed(t.strip() or None, "empty", "text"), t) for t in texts]
      metrics[task] = text_metrics.text_generation_metrics([p.value for p in parsed], [r.answer for r in recs])
      if judge_config is not None and judge_config.enabled:
        metrics[task]["judge"] = judge.judge_answers(judge_config, [r.prompt for r in recs],
                                                     [r.answer for r in recs], [p.value for p in parsed])
    else:
      parsed = [tally.add(answer_parsing.parse_stance(t), t) for t in texts]
      metrics[task] = task_metrics.stance_metrics([r.stance for r in recs], [p.value for p in parsed],
                                                  [r.reason for r in recs])
    metrics[task]["parse"] = tally.summary()
    metrics[task]["generation"] = {"max_new_tokens": max_new_tokens[task], **stats.summary()}
    for r, t, p, cut in zip(recs, texts, parsed, stats.cut):
      rows.append({"id": record_id(r), "task": task, "respondent_id": r.respondent_id,
                   "target": r.output, "generated": t, "cut_at_max_new_tokens": bool(cut),
                   "parsed": list(p.value) if isinstance(p.value, tuple) else p.value,
                   "parse_failure": None if p.ok else p.reason})
  return metrics, rows
