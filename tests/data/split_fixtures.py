"""Synthetic panel microdata and codebooks for the split tests (written into a test's tmp folder).

100 persons x 3 yearly waves (first wave 2000-2008, so some panels straddle a 2008 cut), sex, an
age band, region (every 17th person moves to the south at their last wave), income with a
per-column missing code 0, five questions (q_city with a stance, for task 3): q_arts has its own
missing code 4, which is a valid answer ("don't know") of q_space; 9 is missing everywhere.
"""
import json
import textwrap

import numpy as np
import pandas as pd

from surveylm_jax.data.codebook import load_codebook
from surveylm_jax.data.survey_converter import convert_survey

QUESTIONS = {
    "q_space": "How much should the country spend on exploring outer space?",
    "q_city": "How much should the country spend on the problems of big cities?",
    "q_roads": "How much should the country spend on highways and bridges?",
    "q_parks": "How much should the country spend on parks and recreation?",
    "q_arts": "How much should the country spend on museums and the arts?",
}
OPTIONS = "[{code: 1, label: too little}, {code: 2, label: about right}, {code: 3, label: too much}]"
SPACE_OPTIONS = OPTIONS[:-1] + ", {code: 4, label: \"don't know\"}]"


def survey_table(persons: int = 100, seed: int = 7) -> pd.DataFrame:
  rng = np.random.default_rng(seed)
  rows = []
  for p in range(persons):
    start, region = 2000 + int(rng.integers(0, 9)), 1 + int(rng.integers(0, 3))
    band = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.3, 0.3, 0.2]))
    agecat = 1 if rng.random() < 0.35 else 2
    income = int(rng.integers(0, 4))
    for wave in range(3):
      row = {"rid": len(rows), "pid": p, "year": start + wave, "sex": 1 + p % 2, "ageband": band,
             "agecat": agecat, "region": 2 if p % 17 == 0 and wave == 2 else region, "income": income}
      for column in QUESTIONS:
        top = 5 if column in ("q_space", "q_arts") else 4   # code 4: don't know / arts' own missing
        row[column] = 9 if rng.random() < 0.05 else int(rng.integers(1, top))
      rows.append(row)
  return pd.DataFrame(rows)


def codebook_text(split: str, panel: bool = True, demographics: str | None = None) -> str:
  questions = "\n".join(
      f"  - {{column: {c}, text: \"{t}\", options: {SPACE_OPTIONS if c == 'q_space' else OPTIONS}"
      + (", missing: [4]" if c == "q_arts" else "")
      + (", stance: {1: positive, 2: neutral, 3: negative}, topic: city spending" if c == "q_city" else "")
      + "}" for c, t in QUESTIONS.items())
  region = demographics is None
  demographics = demographics or textwrap.dedent("""\
      - {column: sex, label: sex, values: {1: male, 2: female}, infer: true}
      - {column: ageband, name: age_group, label: age group, values: {1: 18-29, 2: 30-44, 3: 45-64, 4: 65 and over}}
      - {column: region, label: region, values: {1: north, 2: south, 3: west}, infer: true}
      - {column: income, label: income, values: {1: low, 2: middle, 3: high}, missing: [0]}""")
  return "\n".join([
      "name: synthetic", "survey: public spending", "source: {csv: survey.csv}", "respondent_id: rid",
      "panel_id: pid" if panel else "", "year: {column: year}", "language: en", "missing: [9]",
      "demographics:", textwrap.indent(demographics, "  "), "questions:", questions,
      "group_by: [[sex], [region]]" if region else "group_by: [[sex], [age_group]]", "min_group_size: 5",
      f"split: {split}",
      "interview: {history_turns: 2}", ""])


def write(tmp_path, split: str = "{}", panel: bool = True, demographics: str | None = None,
          table: pd.DataFrame | None = None):
  """Writes survey.csv and codebook.yaml into tmp_path; returns the codebook path."""
  (table if table is not None else survey_table()).to_csv(tmp_path / "survey.csv", index=False)
  path = tmp_path / "codebook.yaml"
  path.write_text(codebook_text(split, panel, demographics), encoding="utf-8")
  return path


def convert(tmp_path, split: str = "{}", **kw):
  codebook = load_codebook(write(tmp_path, split, **kw))
  return codebook, convert_survey(codebook)


def as_bytes(conversion) -> bytes:
  return json.dumps([conversion.files, conversion.report], sort_keys=True, ensure_ascii=False).encode()
