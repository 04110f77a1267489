"""Another population: GSS 2018 spending items, trained on respondents who are not Black and
tested on Black respondents, a population no stage saw (Stage I is this split's own training-side
survey records: the demo's Stage I corpus, the GSS 2018 abortion items, holds the test persons).
Attitudes to several of these items (welfare, the conditions of Black Americans, big cities)
differ most between these populations in the GSS, so a table of the other population's answers
is a weak guide; the baseline that sees the most is a logistic regression trained on the other
populations (a race it never saw is ignored, not an error).

    python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml \
        --out data/gss2018_population \
        --split "{kinds: [population], population: {field: race, values: [black]}, validation_fraction: 0.03}"
    python -m launch.demo --config=configs/gss_population.py --workdir=runs/gss_population
"""
from configs import demo

DATA = "data/gss2018_population"


def get_config():
  config = demo.get_config()
  config.stage1.data.train = f"{DATA}/foundation_quan/train.json"
  demo.use_data(config, DATA, calibrate=True)
  config.eval.baselines = ("uniform", "marginal", "logreg")
  # 18 items: 30 test respondents give ~500 answers.
  config.eval.max_respondents = 30
  # Every test person has race=black: subgroups within the held-out population.
  config.eval.subgroup_columns = ("sex", "age group", "highest degree", "yearly income")
  return config
