"""Survey microdata + codebook -> AlignSurvey task files (library side of tools/survey_to_alignsurvey).

Writes, under an output folder, in AlignSurvey's layout:
  task4/individual/{train,test}.json  one respondent answering one question ("C. too little")
  task4/individual/validation.json    with split.validation_fraction > 0 (task3 too): never trained on
  task4/group/{train,test}.json       a demographic group's answer shares, from that split's respondents
  task3/individual/{train,test}.json  stance (positive/neutral/negative) for questions declaring one
  task3/group/{train,test}.json       a group's stance shares
  task1/{train,test}.json             infer a demographic field from the respondent's answers
  task2/{train,test}.json             answer the next question given background and earlier turns
  foundation_quan/train.json          Stage I survey records (train cells only: no test leak)
  conversion_report.json              counts: the split per side, records per file, missing, skips
Which cells land on which side is splits.py's job (codebook `split.kinds`); every file here is built
from one side's cells only, so group shares, task-1 transcripts and task-2 interviews of the train
side never hold a held-out question, wave or population. Metadata rides beside the Alpaca fields:
individual records carry respondent_id (person_id with a panel), question, answer, profile and, with
split.context_answers, the context shown; group records carry question, group, distribution
(option order) and n.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np

from surveylm_jax import paths
from surveylm_jax.data import question_catalog, splits
from surveylm_jax.data import survey_prompts as prompts
from surveylm_jax.data.codebook import Codebook, code_key
from surveylm_jax.data.context_answers import ContextPicker
from surveylm_jax.data.errors import DataError
from surveylm_jax.data.microdata import code_respondents, load_table
from surveylm_jax.data.records import STANCES

SPLITS = (splits.TRAIN, splits.TEST)


@dataclasses.dataclass
class Conversion:
  files: dict            # relative path -> list of Alpaca records (dicts)
  report: dict
  catalog: list = dataclasses.field(default_factory=list)   # question_catalog.yaml entries


def _background(codebook: Codebook, respondent) -> list:
  """(label, value) lines shown in prompts."""
  return [(d.label, respondent.demographics[d.name]) for d in codebook.demographics
          if d.in_background and respondent.demographics.get(d.name) is not None]


def _profile(codebook: Codebook, respondent) -> dict:
  """Every known demographic, shown or not: the metadata subgroup analyses select on."""
  return {d.label: respondent.demographics[d.name] for d in codebook.demographics
          if respondent.demographics.get(d.name) is not None}


def _answered(codebook: Codebook, respondent) -> list:
  """[(question_index, question, option_index)] for the questions this respondent answered."""
  return [(i, q, respondent.answers[q.column]) for i, q in enumerate(codebook.questions)
          if respondent.answers.get(q.column) is not None]


def _ids(codebook, respondent) -> dict:
  ids = {"respondent_id": respondent.respondent_id}
  if codebook.panel_id:
    ids["person_id"] = respondent.person_id
  return ids


def _individual_meta(codebook, respondent, qi, q, answer) -> dict:
  meta = {**_ids(codebook, respondent), "question_index": qi, "question_id": q.column,
          "question": q.text, "answer": answer, "profile": _profile(codebook, respondent)}
  if codebook.weight:
    meta["weight"] = respondent.weight
  if respondent.year is not None:
    meta["year"] = respondent.year
  return meta


def _survey_records(codebook, respondents, with_letter: bool, context=None) -> list:
  """`context`: a ContextPicker (task 4 with split.context_answers), or None for plain prompts."""
  records = []
  for r in respondents:
    background = _background(codebook, r)
    for qi, q, ai in _answered(codebook, r):
      answer = q.options[ai][1]
      shown = context(r.respondent_id, qi) if context else []
      # Passed only when there is some, so plain prompts stay byte-identical to earlier files.
      extra = {"context": [(c["question"], c["answer"]) for c in shown]} if shown else {}
      instruction = prompts.survey_response(codebook.language, r.year, background, q.text, q.labels,
                                            **extra)
      output = prompts.lettered(q.labels)[ai].render() if with_letter else answer
      record = {"instruction": instruction, "input": "", "output": output,
                **_individual_meta(codebook, r, qi, q, answer)}
      if context:
        record["context"] = shown
      records.append(record)
  return records


def _stance_records(codebook, respondents) -> list:
  lang, records = codebook.language, []
  for r in respondents:
    background = _background(codebook, r)
    for qi, q, ai in _answered(codebook, r):
      if not q.stance:
        continue
      answer = q.options[ai][1]
      stance = q.stance[q.options[ai][0]]
      reason = prompts.stance_reason(lang, q.text, answer)
      records.append({"instruction": prompts.stance(lang, background, q.topic or q.text), "input": "",
                      "output": prompts.stance_output(lang, stance, reason),
                      **_individual_meta(codebook, r, qi, q, answer), "topic": q.topic or q.text,
                      "stance": stance})
  return records


def _role_records(codebook, respondents) -> list:
  records = []
  for demo in (d for d in codebook.demographics if d.infer and not d.numeric):
    for r in respondents:
      value = r.demographics.get(demo.name)
      turns = [(q.text, q.options[ai][1]) for _, q, ai in _answered(codebook, r)]
      if value is None or not turns:
        continue
      instruction = prompts.role_inference(codebook.language, codebook.survey, turns, demo.label,
                                           demo.categories)
      records.append({"instruction": instruction, "input": "", "output": repr([value]),
                      **_ids(codebook, r), "field": demo.label, "field_name": demo.name,
                      "question": demo.label, "answer": [value]})
  return records


def _interview_records(codebook, respondents) -> list:
  records = []
  for r in respondents:
    background = _background(codebook, r)
    turns = [(qi, q, q.options[ai][1]) for qi, q, ai in _answered(codebook, r)]
    for t, (qi, q, answer) in enumerate(turns):
      history = [(hq.text, ha) for _, hq, ha in turns[max(0, t - codebook.history_turns):t]]
      instruction = prompts.interview(codebook.language, codebook.survey, background, history, q.text)
      records.append({"instruction": instruction, "input": "", "output": answer,
                      **_ids(codebook, r), "question_id": q.column, "question": q.text,
                      "answer": answer, "turn_index": t})
  return records


def group_distributions(codebook, respondents, names, question, counts, stance: bool = False):
  """{group values: (shares in option order, n, weight sum, years)} over groups with n >= min size."""
  size = len(STANCES) if stance else len(question.options)
  totals = collections.defaultdict(lambda: np.zeros(size))
  sizes = collections.Counter()
  years = collections.defaultdict(set)
  for r in respondents:
    values = tuple(r.demographics.get(n) for n in names)
    ai = r.answers.get(question.column)
    if ai is None or any(v is None for v in values):
      continue
    slot = STANCES.index(question.stance[question.options[ai][0]]) if stance else ai
    totals[values][slot] += r.weight
    sizes[values] += 1
    years[values].add(r.year)
  result = {}
  for values in sorted(totals):
    if sizes[values] < codebook.min_group_size:
      counts["group_below_min_size"] += 1
      continue
    weight_sum = float(totals[values].sum())
    result[values] = ((totals[values] / weight_sum).tolist(), sizes[values], weight_sum, years[values])
  return result


def _group_records(codebook, respondents, counts, stance: bool) -> list:
  lang, records = codebook.language, []
  for names in codebook.group_by:
    demos = [codebook.demographic(n) for n in names]
    for qi, q in enumerate(codebook.questions):
      if stance and not q.stance:
        continue
      labels = prompts.stance_labels(lang) if stance else list(q.labels)
      question = prompts.stance_group_question(lang, q.topic or q.text) if stance else q.text
      for values, (shares, n, weight_sum, years) in group_distributions(codebook, respondents, names, q,
                                                                         counts, stance).items():
        group = {d.label: v for d, v in zip(demos, values)}
        known = sorted(y for y in years if y is not None)
        year = "" if not known else (str(known[0]) if known[0] == known[-1] else f"{known[0]}-{known[-1]}")
        record = {"instruction": prompts.group_distribution(lang, year, list(group.items()), question, labels),
                  "input": "", "output": prompts.share_lines(labels, shares), "question_index": qi,
                  "question_id": q.column, "question": q.text, "group": group, "group_by": list(names),
                  "distribution": shares, "n": n}
        if codebook.weight:
          record["weight_sum"] = weight_sum
        if stance:
          record["topic"] = q.topic or q.text
        records.append(record)
  return records


def keep_rows(codebook: Codebook, table):
  """The rows selected by the codebook's `keep` (all rows without one), and how many were left out."""
  selected = np.ones(len(table), bool)
  for column, codes in codebook.keep:
    if column not in table.columns:
      raise DataError(f"keep: column {column!r} is not in the source; columns: {list(table.columns)}",
                      path=codebook.path, field=f"keep.{column}", reason="bad_codebook")
    selected &= table[column].map(code_key).isin(codes).to_numpy()
  return table[selected], int((~selected).sum())


def convert_survey(codebook: Codebook, lenient: bool = False) -> Conversion:
  table, left_out = keep_rows(codebook, load_table(codebook))
  if not len(table):
    raise DataError(f"keep {dict(codebook.keep)} selects no row", path=codebook.path, field="keep",
                    reason="bad_codebook")
  respondents, counts = code_respondents(codebook, table, lenient)
  cells = splits.split_cells(codebook, respondents)
  by_side = {side: cells.rows_of(side, respondents) for side in splits.SIDES}
  wanted = codebook.split.context_answers
  context = ContextPicker(codebook, respondents, cells, wanted) if wanted else None
  files = {}
  for split in SPLITS:
    people = by_side[split]
    if "task4" in codebook.outputs:
      files[f"task4/individual/{split}.json"] = _survey_records(codebook, people, True, context)
      files[f"task4/group/{split}.json"] = _group_records(codebook, people, counts, stance=False)
    if _writes_task3(codebook):
      files[f"task3/individual/{split}.json"] = _stance_records(codebook, people)
      files[f"task3/group/{split}.json"] = _group_records(codebook, people, counts, stance=True)
    if "task1" in codebook.outputs:
      files[f"task1/{split}.json"] = _role_records(codebook, people)
    if "task2" in codebook.outputs:
      files[f"task2/{split}.json"] = _interview_records(codebook, people)
  if codebook.split.validation_fraction > 0:
    people = by_side[splits.VALIDATION]
    if "task4" in codebook.outputs:
      files["task4/individual/validation.json"] = _survey_records(codebook, people, True, context)
    if _writes_task3(codebook):
      files["task3/individual/validation.json"] = _stance_records(codebook, people)
  if "foundation_quan" in codebook.outputs:  # context-free Stage I prompts, train cells only
    files["foundation_quan/train.json"] = _survey_records(codebook, by_side[splits.TRAIN], False)
  if context:
    counts.update(context.counts)
  split_report = splits.split_report(codebook, respondents, cells)
  report = {"codebook": codebook.path, "respondents": len(respondents),
            "rows_left_out_by_keep": left_out,
            "keep": {c: sorted(map(str, v)) for c, v in codebook.keep},
            "respondents_per_split": {s: side["rows"] for s, side in split_report["sides"].items()},
            "split": split_report,
            "records_per_file": {k: len(v) for k, v in sorted(files.items())},
            "counts": dict(sorted(counts.items())),
            "warnings": split_report.pop("warnings")}
  return Conversion(files, report, codebook_catalog(codebook))


def _writes_task3(codebook) -> bool:
  return "task3" in codebook.outputs and any(q.stance for q in codebook.questions)


def codebook_catalog(codebook: Codebook) -> list[dict]:
  """The codebook's option orders, exact, as question-catalog entries: each question (by id and
  text) and, for stance items, its task-3 group question over the stance labels."""
  entries = []
  for q in codebook.questions:
    entries.append({"id": q.column, "text": q.text, "options": list(q.labels), "ordinal": q.ordinal})
    if q.stance:
      entries.append({"text": prompts.stance_group_question(codebook.language, q.topic or q.text),
                      "options": list(prompts.stance_labels(codebook.language)), "ordinal": True})
  return entries


def write_conversion(conversion: Conversion, out_dir: paths.PathLike) -> list[str]:
  """Writes the converted files under `out_dir` (local or gs://); returns their paths."""
  written = []
  for relative, records in conversion.files.items():
    path = paths.join(out_dir, relative)
    paths.makedirs(path.parent)
    paths.write_text(path, json.dumps(records, ensure_ascii=False, indent=1))
    written.append(os.fspath(path))
  if conversion.catalog:  # beside the data: evaluation finds it there (question_catalog.py)
    question_catalog.write_catalog_file(paths.join(out_dir, question_catalog.CATALOG_FILENAME),
                                        conversion.catalog)
  paths.write_text(paths.join(out_dir, "conversion_report.json"),
                   json.dumps(conversion.report, ensure_ascii=False, indent=1))
  return written
