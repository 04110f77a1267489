"""Unseen questions: GSS 2018 spending items with a fifth of the items held out entirely (no
text of a held-out item in any training file of any task, Stage I corpus included) and unseen
respondents. Zero-shot and two-stage SmolLM2 (calibrated and not) against baselines that can
answer a question nobody trained on, plus the no-forgetting check on two other survey programmes.

    python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml \
        --out data/gss2018_unseen --split "{kinds: [respondent, question], question_fraction: 0.2, validation_fraction: 0.03}"
    python -m tools.survey_to_alignsurvey --codebook configs/surveys/wvs1995_poverty.yaml --out data/wvs1995
    python -m tools.survey_to_alignsurvey --codebook configs/surveys/ces2011.yaml --out data/ces2011
    python -m launch.demo --config=configs/gss_unseen_questions.py --workdir=runs/gss_unseen_questions
"""
import ml_collections

from configs import demo

DATA = "data/gss2018_unseen"


def get_config():
  config = demo.get_config()
  # Stage I stays on the GSS abortion items (other items than the spending ones); Stage II trains
  # on the training side's items only.
  demo.use_data(config, DATA, calibrate=True)
  # Baselines that can answer an unseen question (a per-question table cannot).
  config.eval.baselines = ("uniform", "position_prior", "tfidf_transfer", "demographics_pooled")
  # 4 held-out items: 120 test respondents give ~450 answers.
  config.eval.max_respondents = 120
  config.forgetting = ml_collections.ConfigDict({
      "data": "data/wvs1995/task4/individual/test.json,data/ces2011/task4/individual/test.json",
      "train_data": "data/wvs1995/task4/individual/train.json,data/ces2011/task4/individual/train.json",
      "baselines": ("uniform", "marginal"),
      "max_respondents": 150})
  return config
