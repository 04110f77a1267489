"""Later survey waves: the GSS abortion items 1972-2018, trained on the waves through 2006 and
tested on 2008-2018 (every respondent of those years; none is on both sides). Stage I is the
training waves' own survey records (the demo's Stage I corpus is 2018: a test wave), Stage II
their task-4 records; baselines that see the years: the last training wave's shares
(persistence) and a logistic regression with a year term.

    python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss_abortion.yaml \
        --out data/gss_abortion_waves --outputs task4,foundation_quan \
        --split "{kinds: [wave], wave: {from_year: 2008}, validation_fraction: 0.003}"
    python -m launch.demo --config=configs/gss_waves.py --workdir=runs/gss_waves
"""
from configs import demo

DATA = "data/gss_abortion_waves"


def get_config():
  config = demo.get_config()
  config.stage1.data.train = f"{DATA}/foundation_quan/train.json"
  demo.use_data(config, DATA, calibrate=True)
  config.eval.baselines = ("uniform", "marginal", "persistence", "logreg_year")
  # 7 yes/no items: 80 test respondents of 2008-2018 give ~330 answers.
  config.eval.max_respondents = 80
  config.eval.subgroups = ("age group=76 and over",)
  config.eval.subgroup_columns = ("sex", "race", "age group", "party identification")
  return config
