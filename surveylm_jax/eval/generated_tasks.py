"""Tasks 1-3 (role inference, interview answers, stance) through generate-then-parse.

Their targets are free text or JSON, so the read-out is KV-cache generation (greedy) and the
parsers of answer_parsing; every parse failure is counted per task and scored as wrong.
"""
from __future__ import annotations

from surveylm_jax.data import InterviewRecord, RoleInferenceRecord, StanceRecord
from surveylm_jax.eval import answer_parsing, judge, task_metrics, text_metrics
from surveylm_jax.inference import generate
from surveylm_jax.inference.scoring import ProgressLine

GENERATED_TASKS = {"task1": RoleInferenceRecord, "task2": InterviewRecord, "task3": StanceRecord}


def chat_prompt(tokenizer, text: str) -> str:
  return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)


def generate_texts(model, params, tokenizer, prompts, batch_size: int, max_new_tokens: int,
                   label: str) -> list[str]:
  """Greedy continuations of user prompts (chat template applied), decoded without specials."""
  tokenizer.padding_side = "left"
  progress = ProgressLine(label)
  # Similar lengths side by side: less left padding per batch.
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  texts = [None] * len(prompts)
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    enc = tokenizer([chat_prompt(tokenizer, prompts[i]) for i in idx], return_tensors="np",
                    padding=True, add_special_tokens=False)
    new = generate(model, params, enc["input_ids"], enc["attention_mask"],
                   max_new_tokens=max_new_tokens, return_prompt=False)
    for i, row in zip(idx, new):
      texts[i] = tokenizer.decode(row, skip_special_tokens=True)
    progress(min(start + batch_size, len(order)), len(order))
  return texts


def evaluate_generated(model, params, tokenizer, records, batch_size: int, max_new_tokens: int,
                       judge_config=None) -> tuple[dict, list]:
  """Metrics per task for task 1/2/3 records, and one prediction row per record. Task 2 answers
  also go to the LLM judge when `judge_config.enabled`."""
  metrics, rows = {}, []
  for task, cls in GENERATED_TASKS.items():
    recs = [r for r in records if isinstance(r, cls)]
    if not recs:
      continue
    texts = generate_texts(model, params, tokenizer, [r.prompt for r in recs], batch_size,
                           max_new_tokens, task)
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
    for r, t, p in zip(recs, texts, parsed):
      rows.append({"id": f"{r.source.path}#{r.source.index}", "task": task, "respondent_id": r.respondent_id,
                   "target": r.output, "generated": t,
                   "parsed": list(p.value) if isinstance(p.value, tuple) else p.value,
                   "parse_failure": None if p.ok else p.reason})
  return metrics, rows
