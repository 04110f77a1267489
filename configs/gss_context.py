"""Answers in context (imputation): each GSS 2018 spending prompt also shows 4 of the
respondent's answers to other items; unseen respondents. Baselines that see the same context
answers: a logistic regression on demographics plus those answers.

    python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml \
        --out data/gss2018_context --split "{context_answers: 4, validation_fraction: 0.02}"
    python -m launch.demo --config=configs/gss_context.py --workdir=runs/gss_context
"""
from configs import demo

DATA = "data/gss2018_context"


def get_config():
  config = demo.get_config()
  demo.use_data(config, DATA, calibrate=True)
  config.eval.baselines = ("uniform", "marginal", "logreg", "logreg_context")
  return config
