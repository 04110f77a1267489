"""`evaluate(config, workdir)`: a model (base, PEFT adapter or trained params) on AlignSurvey
task-4 test files, beside the baselines, written as DIR/eval/{metrics.json, predictions.jsonl,
report.md, plots/}.

Reads top to bottom: data, model, read-out, individual metrics, group metrics, fairness, position
bias, report. Test files may mix individual and group records (comma-separated paths).
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from surveylm_jax.data import (GroupDistributionRecord, SurveyResponseRecord, read_alignsurvey)
from surveylm_jax.data.option_shuffle import reorder_options
from surveylm_jax.data.prefix_packing import prefix_key
from surveylm_jax.eval import (answer_parsing, baselines, fairness, groups, position_bias, report,
                               task_metrics)
from surveylm_jax.eval.generated_tasks import GENERATED_TASKS, chat_prompt, evaluate_generated, generate_texts
from surveylm_jax.inference import scoring


def _paths(spec: str) -> list[str]:
  return [p.strip() for p in str(spec).split(",") if p.strip()]


def read_records(spec: str, lenient: bool, max_records: int = -1):
  """All records of the comma-separated files, and their read reports."""
  records, reports = [], []
  for path in _paths(spec):
    got = read_alignsurvey(path, lenient=lenient)
    reports.append(got.report.summary())
    records.extend(got)
  if max_records and max_records > 0:
    records = records[:max_records]
  return records, reports


def sample_respondents(records, count: int, seed: int):
  """All records of `count` respondents drawn at random (seeded), in file order, and a note."""
  ids = list(dict.fromkeys(r.respondent_id for r in records))
  if any(i is None for i in ids):
    raise ValueError("config.eval.max_respondents needs a respondent id on every record")
  if count >= len(ids):
    return records, None
  keep = set(np.random.default_rng(seed).choice(len(ids), size=count, replace=False).tolist())
  chosen = {ids[i] for i in keep}
  kept = [r for r in records if r.respondent_id in chosen]
  return kept, f"{count} of {len(ids)} test respondents sampled (seed {seed}): {len(kept)} of {len(records)} records"


def load_model(config):
  """(model, params, tokenizer): HF folder or random tiny config, plus an optional PEFT adapter
  (merged into the params: scoring then runs at the base model's speed)."""
  import transformers
  from surveylm_jax import models
  if config.model.random_init:
    cfg = models.config_from_hf_dict(dict(config.model.random_init))
    model = models.Transformer(cfg)
    params = models.init_params(model, jax.random.PRNGKey(config.seed))
  else:
    model, params = models.load_pretrained(config.model.path, dtype=config.model.dtype,
                                           compute_dtype=config.model.compute_dtype)
  tokenizer = transformers.AutoTokenizer.from_pretrained(config.model.tokenizer or config.model.path)
  if config.eval.adapter:
    from surveylm_jax import lora
    lora_params, lora_cfg = lora.load_peft(config.eval.adapter, params)
    params = lora.merge(params, lora_params, lora_cfg)
  return model, params, tokenizer


def score_records(model, params, tokenizer, records, config, label: str):
  """Option scoring read-out: per record (probs over its options, option-letter mass)."""
  texts = [chat_prompt(tokenizer, r.prompt) for r in records]
  ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
  letters = sorted({o.letter for r in records for o in r.options})
  letter_ids = dict(zip(letters, scoring.letter_token_ids(tokenizer, letters)))
  option_ids = [[letter_ids[o.letter] for o in r.options] for r in records]
  keys = [prefix_key(r) for r in records] if config.eval.prefix_reuse else None
  out = scoring.score_options(model, params, ids, option_ids, prefix_keys=keys,
                              batch_size=config.eval.batch_size, length_step=config.eval.length_step,
                              pack_length=config.eval.pack_length, pack_rows=config.eval.pack_rows,
                              progress=scoring.ProgressLine(label))
  return [s.probs for s in out], [s.option_mass for s in out]


def generate_records(model, params, tokenizer, records, config, label: str):
  """Generate-then-parse read-out: one-hot distributions; failures are None and counted."""
  tally = answer_parsing.ParseTally()
  probs = []
  texts_out = generate_texts(model, params, tokenizer, [r.prompt for r in records], config.eval.batch_size,
                             config.eval.max_new_tokens, label)
  for r, text in zip(records, texts_out):
    parsed = tally.add(answer_parsing.parse_option_answer(text, r.options), text)
    probs.append(None if not parsed.ok else np.eye(len(r.options))[parsed.value])
  return probs, texts_out, tally.summary()


def _record_id(r) -> str:
  return f"{os.path.basename(os.path.dirname(r.source.path))}/{os.path.basename(r.source.path)}#{r.source.index}"


def _position_bias(model, params, tokenizer, records, config):
  items_records, layout = [], []
  for r in records[:config.eval.position_bias_records]:
    orders = position_bias.option_orders(len(r.options), seed=config.seed)
    layout.append(orders)
    items_records.extend(reorder_options(r, o) for o in orders)
  probs, _ = score_records(model, params, tokenizer, items_records, config, "position bias")
  items, at = [], 0
  for orders in layout:
    items.append([(o, probs[at + j]) for j, o in enumerate(orders)])
    at += len(orders)
  result = position_bias.position_bias_metrics(items)
  n = len(layout)
  debiased = task_metrics.survey_response_metrics(
      [r.option_texts() for r in records[:n]], [r.target_index for r in records[:n]], result.pop("debiased"))
  listed = task_metrics.survey_response_metrics(
      [r.option_texts() for r in records[:n]], [r.target_index for r in records[:n]],
      [it[0][1] for it in items])
  result["listed_order"] = {k: listed[k] for k in ("accuracy", "macro_f1", "nll")}
  result["debiased"] = {k: debiased[k] for k in ("accuracy", "macro_f1", "nll")}
  return result


def evaluate(config, workdir: str) -> dict:
  """Runs the whole evaluation; returns the metrics dict also written to DIR/eval/metrics.json."""
  start = time.time()
  out_dir = os.path.join(workdir, "eval")
  ev = config.eval
  if ev.readout not in ("scoring", "generate"):
    raise ValueError(f"unknown config.eval.readout {ev.readout!r}; valid: ['generate', 'scoring']")

  # --- data ------------------------------------------------------------------------------------
  test, read_reports = read_records(ev.data or config.data.eval, config.data.lenient)
  individual = [r for r in test if isinstance(r, SurveyResponseRecord)]
  group_records = [r for r in test if isinstance(r, GroupDistributionRecord)]
  generated_records = [r for r in test if isinstance(r, tuple(GENERATED_TASKS.values()))]
  other = len(test) - len(individual) - len(group_records) - len(generated_records)
  if other:
    raise ValueError(f"config.eval.data holds {other} records that are not test records of tasks 1-4 "
                     "(foundation corpus files are for training)")
  sampled_note = None
  if ev.max_respondents > 0:
    individual, sampled_note = sample_respondents(individual, ev.max_respondents, config.seed)
  if ev.max_records > 0:
    individual, group_records = individual[:ev.max_records], group_records[:ev.max_records]
  if not test:
    raise ValueError(f"no records in config.eval.data={ev.data!r}")
  train, train_reports = read_records(ev.train_data, config.data.lenient) if ev.train_data else ([], [])
  train = [r for r in train if isinstance(r, SurveyResponseRecord)]

  # --- model and read-out ----------------------------------------------------------------------
  model, params, tokenizer = load_model(config)
  parse_summary, generated, option_mass = None, None, None
  t0 = time.time()
  if not individual:
    probs = []
  elif ev.readout == "scoring":
    probs, option_mass = score_records(model, params, tokenizer, individual, config, "task4 individual")
  else:
    probs, generated, parse_summary = generate_records(model, params, tokenizer, individual, config,
                                                       "task4 individual")
  readout_s = time.time() - t0
  group_direct, group_mass = [], []
  if group_records and ev.group_prompts:
    group_direct, group_mass = score_records(model, params, tokenizer, group_records, config,
                                             "task4 group prompts")

  generated_metrics, generated_rows = evaluate_generated(
      model, params, tokenizer, generated_records, ev.batch_size, ev.max_new_tokens_text, ev.judge)

  # --- individual metrics, model beside baselines ------------------------------------------------
  fitted = baselines.fit_baselines(ev.baselines, train) if ev.baselines and individual else {}
  predictors = {"model": probs}
  for name, predict in fitted.items():
    predictors[name] = [predict(r) for r in individual]
  option_texts = [r.option_texts() for r in individual]
  targets = [r.target_index for r in individual]
  individual_metrics = {name: task_metrics.survey_response_metrics(option_texts, targets, p)
                        for name, p in predictors.items()} if individual else {}

  # --- group level -----------------------------------------------------------------------------
  aggregated = {name: groups.aggregate_members(group_records, individual, p)
                for name, p in predictors.items()}
  entries = []
  for gi, g in enumerate(group_records):
    preds = {f"{name}_aggregated": aggregated[name][gi][0] for name in predictors}
    if group_direct:
      preds["model_group_prompt"] = group_direct[gi]
    for name in ("uniform", "marginal"):
      if name in fitted:
        try:
          preds[name] = fitted[name](g)
        except KeyError:  # no training answers for this (task, question): no baseline here
          preds[name] = None
    entries.append({"id": _record_id(g), "question_id": g.extra.get("question_id", g.question),
                    "group": dict(g.group), "n": g.n, "human": list(g.distribution),
                    "options": g.option_texts(), "predictions": preds,
                    "members": aggregated["model"][gi][1]})
  group_metrics = groups.evaluate_groups(entries, draws=ev.noise_floor_draws, seed=config.seed)
  for e, row in zip(entries, group_metrics["per_group"]):
    row["options"], row["members"] = e["options"], e["members"]

  # --- fairness ----------------------------------------------------------------------------------
  tags = [fairness.subgroup_tags(r.extra.get("profile") or dict(r.background), ev.subgroups,
                                 ev.subgroup_columns) for r in individual]
  qids = [r.extra.get("question_id", r.question) for r in individual]
  fairness_metrics = {name: fairness.fairness_metrics(tags, option_texts, targets, p, qids,
                                                      ev.fairness_min_records)
                      for name, p in predictors.items()} if individual else {}

  # --- position bias (scoring read-out only) ---------------------------------------------------
  bias = None
  if ev.readout == "scoring" and ev.position_bias_records > 0 and individual:
    bias = _position_bias(model, params, tokenizer, individual, config)

  # --- report ----------------------------------------------------------------------------------
  result = {
      "model": config.model.path if not config.model.random_init else "random_init",
      "adapter": ev.adapter or None, "readout": ev.readout, "data": _paths(ev.data or config.data.eval),
      "read_reports": read_reports + train_reports,
      "counts": {"individual": len(individual), "group": len(group_records), "train": len(train),
                 "generated_tasks": len(generated_records)},
      "sampling": sampled_note,
      "readout_seconds": readout_s,
      "records_per_second": len(individual) / readout_s if readout_s > 0 else None,
      "option_mass": ({"mean": float(np.mean(option_mass)), "min": float(np.min(option_mass))}
                      if option_mass else None),
      "group_prompt_option_mass": float(np.mean(group_mass)) if group_mass else None,
      "parse": parse_summary, "individual": individual_metrics, "generated_tasks": generated_metrics,
      "group": {"summary": group_metrics["summary"], "noise_floor": group_metrics["noise_floor"]},
      "fairness": fairness_metrics, "position_bias": bias, "seconds": None,
  }
  rows = []
  for i, r in enumerate(individual):
    p = probs[i]
    rows.append({"id": _record_id(r), "task": r.task, "respondent_id": r.respondent_id,
                 "question_id": qids[i], "options": option_texts[i], "target": r.answer,
                 "predicted_distribution": None if p is None else [float(x) for x in p],
                 "predicted_answer": None if p is None else option_texts[i][int(np.argmax(p))],
                 "option_mass": None if option_mass is None else option_mass[i],
                 "generated": None if generated is None else generated[i],
                 "subgroups": tags[i]})
  for gi, g in enumerate(group_records):
    rows.append({"id": _record_id(g), "task": f"{g.task}_group", "question_id": entries[gi]["question_id"],
                 "group": dict(g.group), "options": g.option_texts(), "target": list(g.distribution),
                 "predicted_distribution": [float(x) for x in group_direct[gi]] if group_direct else None,
                 "predicted_answer": None, "option_mass": group_mass[gi] if group_mass else None,
                 "subgroups": []})
  rows.extend(generated_rows)
  result["seconds"] = time.time() - start
  report.write_report(out_dir, result, rows, group_metrics["per_group"])
  return result

