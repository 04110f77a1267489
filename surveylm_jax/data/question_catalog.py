"""The question catalog: each question's options in their canonical (ordinal) order, or nominal.

Records list a question's options in any order (the AlignSurvey release lists the same question
in every permutation), so every ordinal quantity — W1, representativeness, RPS, option losses,
fairness W1, member aggregation — maps options by *text* to one order per question first.
`QuestionCatalog.resolve` finds that order, in this precedence:

  0. stance   task-3 stance labels, any language: positive -> neutral -> negative;
  1. user     a YAML file named by config (`data.question_catalog` / `eval.question_catalog`);
  2. codebook `question_catalog.yaml` the survey converter writes beside its files (exact);
  3. shipped  `catalogs/alignsurvey.yaml` in this package: the release's questions;
  4. inferred a known answer scale (agreement, frequency, satisfaction, ...; `known_scales`);
  5. nominal  no known order: a fixed order (sorted answers) so records still line up, and only
              nominal metrics (accuracy, F1, JSD, TV, KL — never W1 or RPS).

Catalog file schema (YAML):

    questions:
      - id: natspac                      # the records' `question_id`; optional when text is given
        text: Are we spending too much ... on the space exploration program?   # optional with id
        options: [too little, about right, too much]     # in ordinal order (or any, if nominal)
        ordinal: true                    # default true; false = nominal
      - text: 您觉得幸福吗？
        options: [不幸福, 一般, 幸福]

A question is found by id, else by text (compared as answers are: NFKC, case and spacing
folded); its entry must list exactly the record's options, or resolving that record is an error
naming the catalog file and the record.
"""
from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np
import yaml

from surveylm_jax import paths
from surveylm_jax.data import known_scales
from surveylm_jax.data.answers import answer_key
from surveylm_jax.data.errors import DataError

CATALOG_FILENAME = "question_catalog.yaml"
SHIPPED = os.path.join(os.path.dirname(__file__), "catalogs", "alignsurvey.yaml")
SOURCES = ("stance", "user", "codebook", "shipped", "inferred", "nominal")


@dataclasses.dataclass(frozen=True)
class QuestionOrder:
  """One question's canonical order. `options` are answer texts; `ordinal` False = nominal."""
  options: tuple
  ordinal: bool
  source: str
  where: str = ""            # catalog file, or the inferred scale's name

  def permutation(self, listed_texts) -> np.ndarray:
    """perm[j] = the listed index of canonical option j (so `probs[perm]` is canonical)."""
    index = {answer_key(t): i for i, t in enumerate(listed_texts)}
    return np.asarray([index[answer_key(t)] for t in self.options], np.int64)


@dataclasses.dataclass(frozen=True)
class _Entry:
  options: tuple
  ordinal: bool
  source: str
  path: str
  index: int


def _entry(path: str, i: int, spec, source: str) -> tuple[list[str], _Entry]:
  where = f"questions[{i}]"
  if not isinstance(spec, dict):
    raise DataError("must be a mapping with 'options' and 'id' or 'text'", path=path, field=where)
  names = [str(spec[k]).strip() for k in ("id", "text") if str(spec.get(k) or "").strip()]
  if not names:
    raise DataError("needs an 'id' or a 'text'", path=path, field=where)
  options = spec.get("options")
  if not isinstance(options, (list, tuple)) or len(options) < 2:
    raise DataError("needs 'options': a list of at least two answers", path=path, field=where + ".options")
  options = tuple(str(o).strip() for o in options)
  keys = [answer_key(o) for o in options]
  if len(set(keys)) != len(keys) or not all(keys):
    raise DataError(f"repeats an option or has an empty one: {list(options)}", path=path,
                    field=where + ".options")
  ordinal = spec.get("ordinal", True)
  if not isinstance(ordinal, bool):
    raise DataError(f"'ordinal' must be true or false, got {ordinal!r}", path=path, field=where + ".ordinal")
  return names, _Entry(options, ordinal, source, path, i)


def load_catalog_file(path: str, source: str = "user") -> dict[str, list[_Entry]]:
  """question key (id or text, answer-key form) -> its entries, from one YAML file."""
  try:
    spec = yaml.safe_load(paths.read_text(path))   # local or gs://
  except FileNotFoundError:
    raise DataError("question catalog not found", path=path) from None
  except yaml.YAMLError as e:
    raise DataError(f"not valid YAML: {e}".replace("\n", " "), path=path) from None
  if not isinstance(spec, dict) or not isinstance(spec.get("questions"), list):
    raise DataError("must hold 'questions:', a list of question entries", path=path, field="questions")
  table = collections.defaultdict(list)
  for i, item in enumerate(spec["questions"]):
    names, entry = _entry(path, i, item, source)
    for name in names:
      table[answer_key(name)].append(entry)
  return dict(table)


def write_catalog_file(path: str, questions) -> None:
  """questions: dicts with id/text/options/ordinal (the converter's codebook questions)."""
  out = paths.as_path(path)
  paths.makedirs(out.parent)
  paths.write_text(out, yaml.safe_dump({"questions": list(questions)}, allow_unicode=True,
                                       sort_keys=False))


def codebook_catalogs(data_paths) -> list[str]:
  """`question_catalog.yaml` files the converter wrote beside (or above) the given data files."""
  found = []
  for p in data_paths:
    folder = paths.as_path(p).parent
    for _ in range(4):  # .../<survey>/task4/individual/test.json -> .../<survey>/
      candidate = folder / CATALOG_FILENAME
      if candidate.exists() and str(candidate) not in found:
        found.append(str(candidate))
        break
      # Stop at the filesystem root, or at a bucket's root (gs://bucket: parts '/', 'gs', 'bucket').
      if folder.parent == folder or (paths.is_remote(folder) and len(folder.parts) <= 3):
        break
      folder = folder.parent
  return found


class QuestionCatalog:
  """Resolves (question id, question text, listed options) to a `QuestionOrder`, and remembers
  what it resolved so the report can list inferred orders and count nominal questions."""

  def __init__(self, user_files=(), codebook_files=(), shipped: bool = True):
    self.tables = []
    for path in user_files:
      self.tables.append(load_catalog_file(path, "user"))
    for path in codebook_files:
      self.tables.append(load_catalog_file(path, "codebook"))
    if shipped:
      self.tables.append(load_catalog_file(SHIPPED, "shipped"))
    self.files = [*user_files, *codebook_files] + ([SHIPPED] if shipped else [])
    self.resolved: dict[tuple, QuestionOrder] = {}
    self.seen_by_key: dict[tuple, str] = {}

  @classmethod
  def for_data(cls, data_paths, user_file: str = "") -> "QuestionCatalog":
    users = [p.strip() for p in str(user_file or "").split(",") if p.strip()]
    return cls(users, codebook_catalogs(data_paths))

  def _lookup(self, names, keys: frozenset, where: str):
    for table in self.tables:
      # One id may name a task-4 question and its task-3 group item: match the option set too.
      entries = [e for name in names if name for e in table.get(answer_key(name), ())]
      for e in entries:
        if frozenset(answer_key(o) for o in e.options) == keys:
          return e
      if entries:
        e = entries[0]
        raise DataError(f"lists {list(e.options)}, but {where or 'a record'} of this question has "
                        f"the options {sorted(keys)}; fix the entry or the record", path=e.path,
                        field=f"questions[{e.index}].options")
    return None

  def resolve(self, question_id, question_text: str, option_texts, where: str = "") -> QuestionOrder:
    keys = frozenset(answer_key(t) for t in option_texts)
    if len(keys) != len(option_texts):
      raise DataError(f"options repeat an answer: {list(option_texts)}", field=where or "options")
    names = [str(n) for n in (question_id, question_text) if n]
    cache_key = (tuple(answer_key(n) for n in names), keys)
    if cache_key in self.resolved:
      return self.resolved[cache_key]
    inferred = known_scales.infer_scale(option_texts)
    # Stances have one order in every language and release (positive -> neutral -> negative).
    entry = None if inferred and inferred[0] == "stance" else self._lookup(names, keys, where)
    if entry is not None:
      order = QuestionOrder(entry.options, entry.ordinal, entry.source, entry.path)
    else:
      if inferred is not None:
        scale, idx = inferred
        order = QuestionOrder(tuple(option_texts[i] for i in idx), True,
                              "stance" if scale == "stance" else "inferred", scale)
      else:
        order = QuestionOrder(tuple(sorted(option_texts, key=answer_key)), False, "nominal")
    self.resolved[cache_key] = order
    self.seen_by_key[cache_key] = names[0] if names else "?"
    return order

  def resolve_record(self, record) -> QuestionOrder:
    """The order for a record with options (task 4 individual/group, task 3 group)."""
    return self.resolve(record.extra.get("question_id"), getattr(record, "question", ""),
                        record.option_texts(), where=str(record.source))

  def report(self) -> dict:
    """Counts per source, the inferred orders (listed for review) and the nominal questions."""
    counts = collections.Counter(o.source for o in self.resolved.values())
    inferred, nominal = [], []
    for key, order in self.resolved.items():
      name = self.seen_by_key[key]
      if order.source == "inferred":
        inferred.append({"question": name, "scale": order.where, "order": list(order.options)})
      elif order.source == "nominal":
        nominal.append({"question": name, "options": list(order.options)})
    return {"questions": len(self.resolved), "by_source": {s: counts.get(s, 0) for s in SOURCES},
            "inferred": inferred, "nominal": nominal, "catalog_files": self.files}
