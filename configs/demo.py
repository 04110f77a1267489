"""`make demo`: the AlignSurvey recipe end to end on real GSS data with SmolLM2-135M-Instruct on a
CPU, within 15 minutes on 2 cores. Every budget below is a config field.

    python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml --out data/gss2018
    python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss_abortion.yaml \
        --out data/gss_abortion_2018 --keep year=2018
    python -m launch.demo --config=configs/demo.py --workdir=runs/demo

Zero-shot evaluation -> Stage I (LoRA on the GSS abortion items, foundation_quan) -> Stage II
(continuing the Stage I adapter on GSS 2018 spending items, task 4) -> evaluation of the
two-stage model on held-out respondents, beside uniform / marginal / logistic-regression baselines.
"""
import ml_collections

from configs import base

GSS2018 = "data/gss2018"
ABORTION = "data/gss_abortion_2018"


def use_data(config, folder: str, calibrate: bool = False):
  """Stage II, evaluation and the baselines' fit on one converted folder (with `calibrate`, also
  the temperature's fit on its validation respondents)."""
  config.stage2.data.train = f"{folder}/task4/individual/train.json"
  config.eval.data = f"{folder}/task4/individual/test.json,{folder}/task4/group/test.json"
  config.eval.train_data = f"{folder}/task4/individual/train.json"
  if calibrate:
    config.eval.calibration_data = f"{folder}/task4/individual/validation.json"


def get_config():
  config = base.get_config()
  config.model.path = "checkpoints/smollm2-135m-instruct"
  # A respondent's background is packed once per row for all of their questions (exact; ~3.5x
  # fewer tokens per record on GSS task 4).
  config.data.share_prefixes = True
  # Rows of 512 (attention over 1024-token rows costs more per token on a CPU): one background
  # (~170 tokens with the question stem) and ~12 questions of ~28 tokens each per row.
  config.data.seq_len = 512
  config.data.batch_size = 4
  config.lora.rank = 8
  config.lora.alpha = 16.0
  # Adapters train on the top layer only: the 29 layers below run forward only (no backward),
  # and the top layer computes its queries, MLP and head at the positions a loss reads only.
  config.lora.train_top_layers = 1
  config.train.loss_positions = 128
  config.train.warmup_fraction = 0.0     # cosine decay from the first step
  config.train.log_every = 10
  config.checkpoint.every_steps = 1000
  config.checkpoint.async_save = False
  config.loss = ml_collections.ConfigDict({"token_ce": 1.0, "option_kl": 1.0})

  config.stage1 = ml_collections.ConfigDict({
      "data": {"train": f"{ABORTION}/foundation_quan/train.json", "eval": ""},
      "train": {"steps": 2, "lr": 3e-4, "log_every": 1}})
  # Stage II: 30 batches (120 rows, 880 answers) go through the frozen 29 layers
  # once (`train.cache_lower_layers`); then 10 passes over them train the top layer, which runs
  # at the answer slots only. The letter distribution at each answer slot is the whole loss
  # (option_kl; token_ce off), so logits are needed at the <= 16 answer slots of a row only.
  # Several passes over the same answers matter: the answer prior every question shares is learnt
  # within the first pass, the question-specific answers only over several
  # (tools/answer_features.py; README, "How the recipe was found").
  config.stage2 = ml_collections.ConfigDict({
      "data": {"train": f"{GSS2018}/task4/individual/train.json", "eval": ""},
      "train": {"epochs": 10, "lr": 3e-3, "cache_lower_layers": 30, "loss_positions": 16},
      "loss": {"token_ce": 0.0, "option_kl": 1.0}})

  # Evaluation (zero-shot and two-stage alike): held-out respondents of the GSS 2018 test split.
  use_data(config, GSS2018)
  config.eval.baselines = ("uniform", "marginal", "logreg")
  config.eval.max_respondents = 24
  config.eval.group_prompts = False
  config.eval.position_bias_records = 0
  config.eval.noise_floor_draws = 100
  # The table's worst-subgroup column over the paper's groups and five GSS columns ("auto" would
  # add every few-valued profile field).
  config.eval.subgroups = ("rural resident=yes", "age group=76 and over", "yearly income=under $20,000")
  config.eval.subgroup_columns = ("sex", "race", "age group", "highest degree", "yearly income")
  return config
