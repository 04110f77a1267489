"""Baselines matched to generalization splits (unseen questions, later waves, other populations,
answers in context) on hand-made converter-style records where the right prediction is known.

Records are written as the survey converter writes them (task4/individual/*.json with
question_id, question, answer, profile, year, context metadata, and question_catalog.yaml at the
survey folder's top for canonical orders) and read back with the project's reader."""
import json

import numpy as np
import pytest

from surveylm_jax.data import read_alignsurvey, survey_prompts
from surveylm_jax.data.question_catalog import QuestionCatalog, write_catalog_file
from surveylm_jax.eval import baselines, context_baselines

ALL = sorted(baselines.BASELINES)


def _row(qid, question, options, answer, profile, order=None, year=2018, context=None):
  """One respondent's answer: `options` canonical, `answer` a canonical index, `order` the listing."""
  return {"qid": qid, "question": question, "options": options, "answer": answer, "profile": profile,
          "order": order, "year": year, "context": context}


def _records(survey_dir, split, rows):
  """Writes rows as SURVEY/task4/individual/SPLIT.json plus the survey's question catalog."""
  out, catalog = [], {}
  for i, row in enumerate(rows):
    options = row["options"]
    labels = [options[j] for j in (row["order"] or range(len(options)))]
    answer = options[row["answer"]]
    text = survey_prompts.survey_response("en", row["year"], list(row["profile"].items()), row["question"],
                                          labels)
    record = {"instruction": text, "input": "", "output": f"{'ABCDE'[labels.index(answer)]}. {answer}",
              "respondent_id": f"{split}{i}", "question_id": row["qid"], "question": row["question"],
              "answer": answer, "profile": row["profile"], "year": row["year"]}
    if row["context"] is not None:
      record["context"] = row["context"]
    out.append(record)
    catalog[row["qid"]] = {"id": row["qid"], "text": row["question"], "options": options, "ordinal": True}
  path = survey_dir / "task4" / "individual" / f"{split}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(out))
  catalog_path = survey_dir / "question_catalog.yaml"
  if catalog_path.exists():  # train and test share one survey catalog, as the converter writes it
    import yaml
    for q in yaml.safe_load(catalog_path.read_text())["questions"]:
      catalog.setdefault(q["id"], q)
  write_catalog_file(str(catalog_path), list(catalog.values()))
  return list(read_alignsurvey(str(path), task="task4"))


def _valid(p, record):
  p = np.asarray(p)
  assert p.shape == (len(record.options),) and np.all(p > 0) and p.sum() == pytest.approx(1.0)
  return p


def _at(p, record, text):
  """Probability of the option with this text, wherever the record lists it."""
  return float(p[record.option_texts().index(text)])


def _nll(predict, records):
  return float(np.mean([-np.log(_valid(predict(r), r)[r.target_index]) for r in records]))


ABC = ["alpha", "beta", "gamma"]
ABCD = ["one", "two", "three", "four"]


def test_position_prior_by_canonical_position_and_k(tmp_path):
  rows = []
  for q in ("q1", "q2"):   # 3 options: everybody picks the first
    rows += [_row(q, f"Question {q}?", [f"{q} {o}" for o in ABC], 0, {"sex": "f"}) for _ in range(8)]
  rows += [_row("q3", "Question q3?", ABCD, 1, {"sex": "m"}) for _ in range(8)]   # 4 options: second
  train = _records(tmp_path, "train", rows)
  test = _records(tmp_path, "test", [
      _row("new3", "A new question?", ["low", "mid", "high"], 2, {"sex": "f"}, order=[2, 0, 1]),
      _row("new4", "Another one?", ["w", "x", "y", "z"], 0, {"sex": "f"}, order=[3, 2, 1, 0]),
      _row("new5", "Five?", ["v1", "v2", "v3", "v4", "v5"], 0, {"sex": "f"}, order=[4, 1, 3, 0, 2])])
  predict = baselines.fit_baselines(["position_prior"], train)["position_prior"]
  p3, p4, p5 = (_valid(predict(r), r) for r in test)
  assert _at(p3, test[0], "low") > 0.8          # canonical first, though listed second
  assert _at(p4, test[1], "x") > 0.8            # K=4 questions only: their second position
  assert _at(p5, test[2], "v1") == max(p5)      # no K=5 question: all, stretched onto 5 places
  # The question-specific baselines refuse an unseen question and name the ones that do not.
  for name in ("marginal", "logreg", "majority"):
    fitted = baselines.fit_baselines([name], train)[name]
    with pytest.raises(KeyError, match="position_prior, tfidf_transfer, demographics_pooled"):
      fitted(test[0])


def test_tfidf_transfer_uses_the_near_duplicate_and_its_demographics(tmp_path):
  trust = ["a great deal", "some", "none at all"]
  rows = []
  for sex, answer in (("male", 0), ("female", 2)) * 6:   # men trust, women do not
    rows.append(_row("trust_gov", "How much do you trust the national government?", trust, answer,
                     {"sex": sex}))
  for sex, answer in (("male", 2), ("female", 0)) * 6:   # the opposite pattern, other wording
    rows.append(_row("cinema", "How often do you go to the cinema?", ["often", "sometimes", "never"],
                     answer, {"sex": sex}))
  for sex in ("male", "female") * 6:   # nearly the test wording, but 4 options: never the match
    rows.append(_row("trust_gov4", "How much do you trust the national government now?", ABCD, 3,
                     {"sex": sex}))
  train = _records(tmp_path, "train", rows)
  wording, options = "How much do you trust the national government today?", ["a lot", "a little", "not at all"]
  test = _records(tmp_path, "test", [
      _row("trust_gov_2020", wording, options, 0, {"sex": "male"}, order=[1, 2, 0]),
      _row("trust_gov_2020", wording, options, 2, {"sex": "female"}, order=[2, 0, 1]),
      _row("five", "Something else entirely?", ["v1", "v2", "v3", "v4", "v5"], 0, {"sex": "male"})])
  fitted = baselines.fit_baselines(["tfidf_transfer", "position_prior"], train)
  predict = fitted["tfidf_transfer"]
  assert predict.nearest(test[0]) == ("task4", "trust_gov")
  men, women = _valid(predict(test[0]), test[0]), _valid(predict(test[1]), test[1])
  assert _at(men, test[0], "a lot") > 0.6 and _at(women, test[1], "not at all") > 0.6
  # No training question with 5 options: the position prior.
  assert predict.nearest(test[2]) is None
  np.testing.assert_allclose(predict(test[2]), fitted["position_prior"](test[2]))


def test_demographics_pooled_learns_a_position_pattern_shared_across_questions(tmp_path):
  rows = []
  for q in ("q1", "q2", "q3"):
    for age, answer in (("young", 0), ("old", 2)) * 5:   # young answer first, old last, everywhere
      rows.append(_row(q, f"Question {q}?", [f"{q} {o}" for o in ABC], answer, {"age": age}))
  train = _records(tmp_path, "train", rows)
  options = ["never", "sometimes", "always"]
  test = _records(tmp_path, "test", [
      _row("q9", "Unseen?", options, 0, {"age": "young"}, order=[2, 1, 0]),
      _row("q9", "Unseen?", options, 2, {"age": "old"}, order=[1, 2, 0])])
  fitted = baselines.fit_baselines(["demographics_pooled", "position_prior"], train)
  young, old = (_valid(fitted["demographics_pooled"](r), r) for r in test)
  assert _at(young, test[0], "never") > 0.7 and _at(old, test[1], "always") > 0.7
  assert _nll(fitted["demographics_pooled"], test) < _nll(fitted["position_prior"], test)


def test_persistence_follows_the_last_wave(tmp_path):
  rows = []
  for year, yes in ((2010, 8), (2014, 5), (2018, 2)):   # "yes" falls from 80% to 20%
    rows += [_row("q", "Q?", ["yes", "no"], 0 if i < yes else 1, {"sex": "f"}, year=year) for i in range(10)]
  train = _records(tmp_path, "train", rows)
  test = _records(tmp_path, "test", [_row("q", "Q?", ["yes", "no"], 1, {"sex": "f"}, order=[1, 0], year=2022)])
  fitted = baselines.fit_baselines(["persistence", "marginal"], train)
  # The 2018 wave only: 2 yes, 8 no, add-0.5 smoothing; listed as [no, yes].
  np.testing.assert_allclose(fitted["persistence"](test[0]), [8.5 / 11, 2.5 / 11])
  assert _at(fitted["marginal"](test[0]), test[0], "no") == pytest.approx(15.5 / 31)


def test_logreg_year_extrapolates_a_trend(tmp_path):
  rows = []
  for year, yes in ((2000, 4), (2005, 8), (2010, 12), (2015, 16)):   # "yes" rises 20% -> 80%
    for i in range(20):
      rows.append(_row("q", "Q?", ["yes", "no"], 0 if i < yes else 1, {"sex": "mf"[i % 2]}, year=year))
  train = _records(tmp_path, "train", rows)
  test = _records(tmp_path, "test", [_row("q", "Q?", ["yes", "no"], 0 if i < 9 else 1, {"sex": "mf"[i % 2]},
                                          order=[1, 0], year=2020) for i in range(10)])
  fitted = baselines.fit_baselines(["logreg_year", "logreg", "marginal"], train)
  assert _at(fitted["logreg_year"](test[0]), test[0], "yes") > 0.8
  assert _nll(fitted["logreg_year"], test) < _nll(fitted["marginal"], test)
  assert _nll(fitted["logreg_year"], test) < _nll(fitted["logreg"], test)


def _party_rows(n, year=2018):
  """The vote follows the party answered earlier; sex says nothing."""
  rows = []
  for i in range(n):
    party = ["left", "right"][i % 2]
    context = [{"question_id": "party", "question": "Which party?", "answer": party},
               {"question_id": "vote", "question": "Vote?", "answer": "leaked"}]
    rows.append(_row("vote", "Vote for the proposal?", ["yes", "no"], i % 2, {"sex": "mf"[(i // 2) % 2]},
                     order=[1, 0] if i % 3 == 0 else None, year=year, context=context))
  return rows


def test_context_baselines_use_the_answers_in_context(tmp_path):
  train = _records(tmp_path, "train", _party_rows(40))
  test = _records(tmp_path, "test", _party_rows(6))
  fitted = baselines.fit_baselines(["logreg_context", "gboost_context", "logreg"], train)
  for name in ("logreg_context", "gboost_context"):
    for r in test:
      assert _valid(fitted[name](r), r)[r.target_index] > 0.8, name
  assert _nll(fitted["logreg_context"], test) < _nll(fitted["logreg"], test)
  # The record's own question in its context would be the answer: left out.
  features = context_baselines.context_features(test[0])
  assert features[context_baselines.CONTEXT_PREFIX + "party"] == "left"
  assert context_baselines.CONTEXT_PREFIX + "vote" not in features


def test_unseen_profile_values_do_not_crash(tmp_path):
  rows = [_row("q", "Q?", ABC, i % 3, {"sex": "mf"[i % 2]}, year=2010 + i % 2,
               context=[{"question_id": "p", "answer": "x"}]) for i in range(12)]
  train = _records(tmp_path, "train", rows)
  # A population the training file never had: new sex value, a new field, no context.
  test = _records(tmp_path, "test", [
      _row("q", "Q?", ABC, 1, {"sex": "other", "region": "north"}, order=[2, 1, 0], year=2012),
      _row("q", "Q?", ABC, 1, {"region": "south"}, order=[2, 1, 0], year=2012)])
  fitted = baselines.fit_baselines(ALL, train)
  for name, predict in fitted.items():
    if name == "majority":   # one-hot by design: the only one allowed zeros
      assert predict(test[0]).sum() == pytest.approx(1.0)
    else:
      _valid(predict(test[0]), test[0])
  # Unknown features are dropped: both rows are all zeros to logreg, so the same prediction.
  np.testing.assert_allclose(fitted["logreg"](test[0]), fitted["logreg"](test[1]))


def test_fit_baselines_passes_the_catalog_without_touching_its_report(tmp_path):
  rows = [_row(q, f"{q}?", ["lo", "mid", "hi"], 0, {"sex": "f"}) for q in ("q1", "q2") for _ in range(5)]
  train = _records(tmp_path / "survey", "train", rows)
  test = _records(tmp_path / "survey", "test", [_row("q3", "q3?", ["lo", "mid", "hi"], 0, {"sex": "f"})])
  # A user catalog that reverses q3: its "hi" is canonical position 0.
  user = tmp_path / "user.yaml"
  write_catalog_file(str(user), [{"id": "q3", "options": ["hi", "mid", "lo"]}])
  catalog = QuestionCatalog.for_data([str(tmp_path / "survey/task4/individual/train.json")], str(user))
  predict = baselines.fit_baselines(["position_prior"], train, catalog=catalog)["position_prior"]
  assert _at(predict(test[0]), test[0], "hi") > 0.8
  assert catalog.resolved == {}
