"""`evaluate(config, workdir)`: a model (base, PEFT adapter or trained params) on AlignSurvey
test files of tasks 1-4, beside the baselines, written as DIR/eval/{metrics.json,
predictions.jsonl, report.md, plots/}.

Reads top to bottom: data and limits, question catalog, model, read-outs, then
`prediction_metrics` (individual, group, fairness: every ordinal quantity in each question's
canonical order), registered metrics, position bias, report. Test files may mix tasks and levels
(comma-separated).

The task-4 read-out is chosen by `config.eval.readout` from `READOUTS` ("scoring", "generate", or
one registered with `register_readout`): `fn(model, params, tokenizer, records, config, label)`
returns {"probs": per record, a distribution over its *listed* options or None (no prediction,
scored as wrong)} plus optional per-record "option_mass" and "generated" (text) and a "parse"
summary.

With `config.eval.calibration_data` (validation records: respondents neither trained on nor in
the test files) the model's read-out is also temperature-scaled (eval/calibration.py): T is fitted
on those records only and the scaled distributions are one more predictor, "model_calibrated".
"""
from __future__ import annotations

import collections.abc
import os
import time

import jax
import numpy as np

from surveylm_jax import multihost, paths, registry, sharding
from surveylm_jax.cli import ConfigError
from surveylm_jax.data import (STANCES, GroupDistributionRecord, StanceRecord, SurveyResponseRecord,
                               read_alignsurvey)
from surveylm_jax.data import prompt_layouts
from surveylm_jax.data.option_shuffle import reorder_options
from surveylm_jax.data.prefix_packing import prefix_key
from surveylm_jax.data.question_catalog import QuestionCatalog
from surveylm_jax.eval import (answer_parsing, baselines, calibration, canonical, eval_limits,
                               extra_metrics, fairness, groups, position_bias, report, task_metrics)
from surveylm_jax.eval.generated_tasks import (GENERATED_TASKS, chat_prompt, evaluate_generated,
                                               generate_texts, max_new_tokens_per_task, record_id)
from surveylm_jax.inference import placement, scoring


def _paths(spec: str) -> list[str]:
  return [p.strip() for p in str(spec).split(",") if p.strip()]


def read_records(spec: str, lenient: bool, max_records: int = -1, allow_empty: bool = False):
  """All records of the comma-separated files, and their read reports."""
  records, reports = [], []
  for path in _paths(spec):
    got = read_alignsurvey(path, lenient=lenient, allow_empty=allow_empty)
    reports.append(got.report.summary())
    records.extend(got)
  if max_records and max_records > 0:
    records = records[:max_records]
  return records, reports


def eval_placement(config) -> placement.Placement:
  """The mesh and logical-axis rules of the config (the training ones): params sharded by the
  rules, records spread over `data` x `fsdp`. One device gives the default placement."""
  mesh = sharding.make_mesh(config.mesh)
  if mesh.size == 1:
    return placement.Placement()
  return placement.MeshPlacement(mesh, sharding.rules_tuple(config.sharding_rules))


def load_model(config, where: placement.Placement | None = None):
  """(model, params, tokenizer): HF folder or random tiny config, plus an optional PEFT adapter
  (merged into the params: scoring then runs at the base model's speed). Params are in the
  config's dtype (`model.dtype`, the one training uses) and, on a mesh, sharded as in training."""
  import transformers
  from surveylm_jax import models
  from surveylm_jax.models import hf_io
  where = where if where is not None else eval_placement(config)
  if config.model.random_init:
    cfg = models.config_from_hf_dict(dict(config.model.random_init), param_dtype=config.model.dtype,
                                     dtype=config.model.compute_dtype,
                                     attention=config.model.attention)
    model = models.Transformer(cfg)
    key = jax.random.PRNGKey(config.seed)
    if where.mesh is None:
      params = models.init_params(model, key)
    else:
      params, _ = sharding.create_sharded(lambda: models.init_params(model, key, boxed=True),
                                          where.mesh, where.rules)
  else:
    # On a mesh each process reads only the slices its devices own (models/sharded_loading.py).
    mesh_args = {} if where.mesh is None else {"mesh": where.mesh, "rules": where.rules}
    model, params = models.load_pretrained(config.model.path, dtype=config.model.dtype,
                                           compute_dtype=config.model.compute_dtype,
                                           attention=config.model.attention, **mesh_args)
  with paths.local_copy(config.model.tokenizer or config.model.path,
                        names=hf_io.TOKENIZER_FILES) as tokenizer_dir:   # transformers reads local folders
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
  if config.eval.adapter:
    from surveylm_jax import lora
    lora_params, lora_cfg = lora.load_peft(config.eval.adapter, params)
    shardings = None if where.mesh is None else models.param_shardings(model, where.mesh, where.rules)
    params = jax.jit(lora.merge, static_argnums=2, out_shardings=shardings)(params, lora_params, lora_cfg)
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


READOUTS = {}
register_readout = registry.registrar(READOUTS, "read-out")


def get_readout(name: str):
  registry.check_names(READOUTS, [name], "config.eval.readout")
  return READOUTS[name]


@register_readout("scoring")
def scoring_readout(model, params, tokenizer, records, config, label: str) -> dict:
  probs, option_mass = score_records(model, params, tokenizer, records, config, label)
  return {"probs": probs, "option_mass": option_mass}


@register_readout("generate")
def generate_readout(model, params, tokenizer, records, config, label: str) -> dict:
  probs, texts, parse_summary = generate_records(model, params, tokenizer, records, config, label)
  return {"probs": probs, "generated": texts, "parse": parse_summary}


def checked_distributions(source: str, records, probs) -> list:
  """`probs` as arrays, one per record over its listed options (or None); else an error naming
  the read-out or baseline that produced them."""
  if len(probs) != len(records):
    raise ValueError(f"{source}: {len(probs)} distributions for {len(records)} records")
  out = []
  for r, p in zip(records, probs):
    if p is None:
      out.append(None)
      continue
    p = np.asarray(p)
    if p.shape != (len(r.options),) or not np.all(np.isfinite(p)) or np.any(p < 0):
      raise ValueError(f"{source}: {r.source}: expected {len(r.options)} non-negative probabilities "
                       f"(one per listed option), got {p.tolist()}")
    out.append(p)
  return out


def _position_bias(model, params, tokenizer, records, config, count: int):
  items_records, layout = [], []
  for r in records[:count]:
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


CALIBRATED = "model_calibrated"     # the temperature-scaled model among the predictors
MODEL_PREDICTORS = ("model", CALIBRATED)


def _same_file(path: str) -> str:
  return path if paths.is_remote(path) else os.path.realpath(path)


def _named_respondents(records) -> set:
  """Respondent ids the records name in `respondent_id` / `person_id` or in a `metadata` mapping.
  A bare `id` field is not used: release files may number records, not respondents, per split."""
  ids = set()
  for r in records:
    meta = r.extra.get("metadata")
    meta = meta if isinstance(meta, collections.abc.Mapping) else {}
    for value in (r.extra.get("respondent_id"), r.extra.get("person_id"), meta.get("respondent_id")):
      if value is not None and str(value).strip():
        ids.add(str(value))
  return ids


def read_calibration_records(ev, data_spec: str, test, lenient: bool, allow_empty: bool):
  """The task-4 validation records the temperature is fitted on, and their read reports; ([], [])
  without `calibration_data`. Refuses a file of `data_spec` and respondents of the test records:
  a temperature fitted on test answers would flatter every calibrated score."""
  if not ev.calibration_data:
    return [], []
  test_files = {_same_file(p) for p in _paths(data_spec)}
  shared = [p for p in _paths(ev.calibration_data) if _same_file(p) in test_files]
  if shared:
    raise ConfigError(f"config.eval.calibration_data names the test file(s) {shared} of config.eval.data: "
                      "the temperature is fitted on validation records only")
  records, reports = read_records(ev.calibration_data, lenient, ev.max_records, allow_empty=allow_empty)
  records = [r for r in records if isinstance(r, SurveyResponseRecord)]
  if not records:
    raise ConfigError(f"config.eval.calibration_data={ev.calibration_data!r} holds no task-4 "
                      "individual records")
  overlap = sorted(_named_respondents(records) & _named_respondents(test))
  if overlap:
    raise ConfigError(f"config.eval.calibration_data shares {len(overlap)} respondent_id(s) with the test "
                      f"records of config.eval.data (e.g. {overlap[:5]}): calibrate on other respondents")
  return records, reports


def _stance_member_options(record) -> list[str]:
  """A task-3 member's one-hot prediction is over STANCES, named in the record's language."""
  labels = prompt_layouts.layout("stance", prompt_layouts.stance_language(record.stance_label))["labels"]
  return [labels[s] for s in STANCES]


def prediction_metrics(individual, group_records, predictors: dict, group_direct, catalog,
                       fitted: dict, ev, seed: int, stance_members=(), stance_probs=()) -> dict:
  """Every metric that follows from predictions (no model in here).

  `predictors` maps a name to per-record distributions over each task-4 record's *listed*
  options (None = no prediction); `group_direct` the group prompts' distributions (listed
  order). Everything ordinal is computed after mapping options by text to the question's
  canonical order, so permuting any record's listed options changes nothing here.
  Task-3 `stance_members` (StanceRecord) with `stance_probs` over STANCES aggregate into task-3
  groups like task-4 members do.
  Returns {"individual", "group" (evaluate_groups' output), "fairness", "subgroups", "tags",
  "views", "group_views", "qids"}.
  """
  views = canonical.views(catalog, individual)
  group_views = canonical.views(catalog, group_records)
  options_c = [v.options for v in views]
  targets_c = [v.index(r.target_index) for v, r in zip(views, individual)]
  ordinal = [v.ordinal for v in views]
  probs_c = {name: canonical.reorder_all(views, p) for name, p in predictors.items()}
  individual_metrics = {name: task_metrics.survey_response_metrics(options_c, targets_c, p, ordinal)
                        for name, p in probs_c.items()} if individual else {}
  for name, m in individual_metrics.items():
    m["ece"] = calibration.expected_calibration_error(probs_c[name], targets_c)

  # --- group level: members aggregated, group prompts, baselines; all in canonical order --------
  group_options = [v.options for v in group_views]
  members = list(individual) + list(stance_members)
  member_options = options_c + [_stance_member_options(r) for r in stance_members]
  aggregated = {}
  for name, p in probs_c.items():
    # Temperature keeps a one-hot task-3 stance one-hot: the calibrated model shares the model's.
    member_probs = list(p) + (list(stance_probs) if name in MODEL_PREDICTORS else [None] * len(stance_members))
    aggregated[name] = groups.aggregate_members(group_records, members, member_probs, group_options,
                                                member_options)
  entries = []
  for gi, (g, gv) in enumerate(zip(group_records, group_views)):
    preds = {f"{name}_aggregated": aggregated[name][gi][0] for name in probs_c}
    if group_direct:
      preds["model_group_prompt"] = gv.probs(group_direct[gi])
    for name in ("uniform", "marginal"):
      if name in fitted:
        try:
          preds[name] = gv.probs(fitted[name](g))
        except KeyError:  # no training answers for this (task, question): no baseline here
          preds[name] = None
    entries.append({"id": record_id(g), "question_id": g.extra.get("question_id", g.question),
                    "group": dict(g.group), "n": g.n, "human": gv.probs(g.distribution).tolist(),
                    "ordinal": gv.ordinal, "options": gv.options, "predictions": preds,
                    "question": g.question,
                    "members": aggregated["model"][gi][1] if "model" in aggregated else 0})
  group_metrics = groups.evaluate_groups(entries, draws=ev.noise_floor_draws, seed=seed)
  for e, row in zip(entries, group_metrics["per_group"]):
    row["options"], row["members"], row["question"] = e["options"], e["members"], e["question"]

  # --- fairness: subgroups from config or found in the data -------------------------------------
  profiles = [groups.member_profile(r) for r in individual]
  conditions, columns = fairness.resolve_subgroups(profiles, ev.subgroups, ev.subgroup_columns)
  tags = [fairness.subgroup_tags(p, conditions, columns) for p in profiles]
  qids = [r.extra.get("question_id", r.question) for r in individual]
  fairness_metrics = {name: fairness.fairness_metrics(tags, options_c, targets_c, p, qids,
                                                      ev.fairness_min_records, ordinal)
                      for name, p in probs_c.items()} if individual else {}
  return {"individual": individual_metrics, "group": group_metrics, "fairness": fairness_metrics,
          "subgroups": {"conditions": conditions, "columns": columns},
          "tags": tags, "views": views, "group_views": group_views, "qids": qids}


def fit_calibration(model, params, tokenizer, validation, readout, config) -> dict:
  """Scores the validation records with the evaluation's own model and read-out and fits one
  temperature on them. Only `validation` reaches the fit: never a test record."""
  out = readout(model, params, tokenizer, validation, config, "calibration (validation)")
  probs = checked_distributions(f"read-out {config.eval.readout!r} on config.eval.calibration_data",
                                validation, out.get("probs", []))
  answers = [r.target_index for r in validation]
  if all(p is None for p in probs):
    raise ValueError(f"config.eval.calibration_data: the read-out gave no distribution for any of "
                     f"{len(validation)} validation records; no temperature to fit")
  temperature = calibration.fit_on_distributions(probs, answers)
  scaled = [calibration.apply_temperature(p, temperature) for p in probs]
  # A T at the end of the searched range says the optimum may lie beyond it.
  at_bound = any(np.isclose(temperature, b, rtol=1e-3) for b in calibration.T_BOUNDS)
  return {"temperature": temperature, "at_bound": bool(at_bound), "bounds": list(calibration.T_BOUNDS),
          "validation_scored": sum(p is not None for p in probs),
          "validation": {"uncalibrated": calibration.calibration_metrics(probs, answers),
                         "calibrated": calibration.calibration_metrics(scaled, answers)}}


CALIBRATION_KEYS = ("accuracy", "macro_f1", "nll", "brier", "ece")


def calibration_report(fit: dict, files: list, validation, individual, predictors: dict, got: dict) -> dict:
  """metrics.json's "calibration": T, where it was fitted, the validation scores, and on the test
  records the model before/after (individual scores and group W1/(K-1) of the aggregated members)
  with the reliability-diagram bins of each."""
  targets = [r.target_index for r in individual]
  test = {}
  for label, name in (("uncalibrated", "model"), ("calibrated", CALIBRATED)):
    m = got["individual"][name]
    test[label] = {k: m[k] for k in CALIBRATION_KEYS}
    test[label]["w1_normalized"] = got["group"]["summary"].get(f"{name}_aggregated", {}).get("w1_normalized")
    test[label]["reliability"] = calibration.reliability(predictors[name], targets)
  return {"temperature": fit["temperature"], "at_bound": fit["at_bound"], "bounds": fit["bounds"],
          "predictor": CALIBRATED,
          "data": files,
          "validation_records": len(validation), "validation_scored": fit["validation_scored"],
          "validation": fit["validation"], "test": test, "bins": calibration.ECE_BINS}


def evaluate(config, workdir: str, where: placement.Placement | None = None) -> dict:
  """Runs the whole evaluation; returns the metrics dict also written to DIR/eval/metrics.json.

  Every process of a multi-host run calls this (the model's arrays span them); one writes.
  `where` overrides the placement the config's mesh gives (e.g. one device for a reference run).
  """
  start = time.time()
  sharding.initialize_distributed()   # a no-op for one process; every process runs the evaluation
  out_dir = paths.join(workdir, "eval")
  ev = config.eval
  readout = get_readout(ev.readout)   # registry names fail here, before any data or model loads
  baselines.check_names(ev.baselines)
  extra_metrics.check(ev.metrics)

  # --- data and limits ---------------------------------------------------------------------------
  data_spec = ev.data or config.data.eval
  test, read_reports = read_records(data_spec, config.data.lenient, allow_empty=config.data.allow_empty)
  if not test:
    raise ConfigError(f"no records in config.eval.data={data_spec!r}")
  individual = [r for r in test if isinstance(r, SurveyResponseRecord)]
  group_records = [r for r in test if isinstance(r, GroupDistributionRecord)]
  generated_records = [r for r in test if isinstance(r, tuple(GENERATED_TASKS.values()))]
  other = len(test) - len(individual) - len(group_records) - len(generated_records)
  if other:
    raise ConfigError(f"config.eval.data holds {other} records that are not test records of tasks 1-4 "
                     "(foundation corpus files are for training)")
  limited = eval_limits.apply_limits(individual, group_records, generated_records, ev.max_respondents,
                                     ev.max_records, config.seed)
  individual, group_records, generated_records = limited.individual, limited.group, limited.generated
  pb_count = eval_limits.position_bias_count(ev.position_bias_records, individual, ev.max_records)
  limited.note_position_bias(pb_count)
  train, train_reports = (read_records(ev.train_data, config.data.lenient, allow_empty=config.data.allow_empty)
                          if ev.train_data else ([], []))
  train = [r for r in train if isinstance(r, SurveyResponseRecord)]
  catalog = QuestionCatalog.for_data(_paths(data_spec) + _paths(ev.train_data or ""),
                                     ev.question_catalog or config.data.question_catalog)
  validation, validation_reports = read_calibration_records(ev, data_spec, test, config.data.lenient,
                                                            config.data.allow_empty)

  # --- model and read-outs -----------------------------------------------------------------------
  # On a mesh (config.mesh, as in training) params are sharded and records spread over it.
  where = where if where is not None else eval_placement(config)
  model, params, tokenizer = load_model(config, where)
  t0 = time.time()
  out = readout(model, params, tokenizer, individual, config, "task4 individual") if individual else {}
  probs = checked_distributions(f"read-out {ev.readout!r}", individual, out.get("probs", []))
  option_mass, generated, parse_summary = out.get("option_mass"), out.get("generated"), out.get("parse")
  readout_s = time.time() - t0
  group_direct, group_mass = [], []
  if group_records and ev.group_prompts:
    group_direct, group_mass = score_records(model, params, tokenizer, group_records, config,
                                             "group prompts")
  generated_metrics, generated_rows = evaluate_generated(
      model, params, tokenizer, generated_records, ev.batch_size,
      max_new_tokens_per_task(ev.max_new_tokens_task), ev.judge)
  stance_members = [r for r in generated_records if isinstance(r, StanceRecord)]
  stance_rows = [row for row in generated_rows if row["task"] == "task3"]
  stance_probs = [None if row["parsed"] is None else np.eye(len(STANCES))[STANCES.index(row["parsed"][0])]
                  for row in stance_rows]
  fit = (fit_calibration(model, params, tokenizer, validation, readout, config)
         if validation and individual else None)

  # --- metrics from predictions, model beside baselines --------------------------------------------
  fitted = {}
  if ev.baselines and (individual or group_records):
    fitted = baselines.fit_baselines(ev.baselines, train, catalog=catalog)
  predictors = {"model": probs}
  if fit:
    predictors[CALIBRATED] = [calibration.apply_temperature(p, fit["temperature"]) for p in probs]
  for name, predict in fitted.items():
    predictors[name] = checked_distributions(f"baseline {name!r}", individual,
                                             [predict(r) for r in individual])
  got = prediction_metrics(individual, group_records, predictors, group_direct, catalog, fitted, ev,
                           config.seed, stance_members, stance_probs)
  registered = extra_metrics.compute(ev.metrics, individual, predictors) if individual else {}

  # --- position bias (scoring read-out only) ---------------------------------------------------
  bias = None
  if ev.readout == "scoring" and pb_count > 0 and individual:
    bias = _position_bias(model, params, tokenizer, individual, config, pb_count)

  # --- report ----------------------------------------------------------------------------------
  result = {
      "model": config.model.path if not config.model.random_init else "random_init",
      "adapter": ev.adapter or None, "readout": ev.readout, "data": _paths(data_spec),
      "read_reports": read_reports + train_reports + validation_reports,
      "counts": {"individual": len(individual), "group": len(group_records), "train": len(train),
                 "generated_tasks": len(generated_records)},
      "sampling": limited.sampling_note, "limits": limited.report(),
      "question_catalog": catalog.report(),
      "readout_seconds": readout_s,
      "records_per_second": len(individual) / readout_s if readout_s > 0 else None,
      "option_mass": ({"mean": float(np.mean(option_mass)), "min": float(np.min(option_mass))}
                      if option_mass else None),
      "group_prompt_option_mass": float(np.mean(group_mass)) if group_mass else None,
      "parse": parse_summary, "individual": got["individual"], "generated_tasks": generated_metrics,
      "group": {"summary": got["group"]["summary"], "noise_floor": got["group"]["noise_floor"]},
      "fairness": got["fairness"], "fairness_subgroups": got["subgroups"], "position_bias": bias,
      "extra_metrics": registered, "seconds": None,
      "calibration": calibration_report(fit, _paths(ev.calibration_data), validation, individual,
                                         predictors, got) if fit else None,
  }
  rows = []
  for i, (r, v) in enumerate(zip(individual, got["views"])):
    p = probs[i]
    rows.append({"id": record_id(r), "task": r.task, "respondent_id": r.respondent_id,
                 "question_id": got["qids"][i], "options": r.option_texts(), "target": r.answer,
                 "canonical_options": v.options, "ordinal": v.ordinal,
                 "predicted_distribution": None if p is None else [float(x) for x in p],
                 "predicted_answer": None if p is None else r.option_texts()[int(np.argmax(p))],
                 **({"calibrated_distribution": None if p is None else
                     [float(x) for x in predictors[CALIBRATED][i]]} if fit else {}),
                 "option_mass": None if option_mass is None else option_mass[i],
                 "generated": None if generated is None else generated[i],
                 "subgroups": got["tags"][i]})
  for gi, (g, gv) in enumerate(zip(group_records, got["group_views"])):
    rows.append({"id": record_id(g), "task": f"{g.task}_group", "question_id": g.extra.get("question_id", g.question),
                 "group": dict(g.group), "options": g.option_texts(), "target": list(g.distribution),
                 "canonical_options": gv.options, "ordinal": gv.ordinal,
                 "predicted_distribution": [float(x) for x in group_direct[gi]] if group_direct else None,
                 "predicted_answer": None, "option_mass": group_mass[gi] if group_mass else None,
                 "subgroups": []})
  rows.extend(generated_rows)
  result["seconds"] = time.time() - start
  if multihost.is_writer():
    report.write_report(out_dir, result, rows, got["group"]["per_group"])
  return result
