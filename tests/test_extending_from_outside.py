"""Extending from outside the package, as a researcher would: a throwaway package written here (on
PYTHONPATH only) registers a prompt language, a loss, a read-out, a baseline and metrics. The
converter, `launch.train` and `launch.evaluate` pick them up through the command line alone, and
their outputs carry the new entries."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tools import survey_to_alignsurvey

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SURVEY_CSV = os.path.join(REPO, "tests", "data", "fixtures", "survey_small.csv")
TINY = ("{'model_type': 'llama', 'vocab_size': 49152, 'hidden_size': 16, 'intermediate_size': 32, "
        "'num_hidden_layers': 1, 'num_attention_heads': 2, 'num_key_value_heads': 1, "
        "'max_position_embeddings': 2048, 'rms_norm_eps': 1e-6, 'tie_word_embeddings': True, "
        "'rope_theta': 10000.0, 'bos_token_id': 1, 'eos_token_id': 2}")

FRENCH = '''
from surveylm_jax.data import prompt_layouts

prompt_layouts.register_language("fr", {
    "survey_response": {
        "intro": "L'enquête date de {year}. Vous êtes une personne interrogée qui répond à la question suivante.",
        "background": "Votre profil :", "background_prefix": "", "question": "Question de l'enquête :",
        "options": "Réponses :", "ask": "Donnez directement votre réponse."},
    "group_distribution": {
        "intro": "L'enquête date de {year}. Estimez comment un groupe a répondu à la question suivante.",
        "group": "Profil du groupe :", "question": "Question de l'enquête :", "options": "Réponses :",
        "ask": "Donnez la part du groupe pour chaque réponse, une ligne par réponse."},
    "stance": {
        "intro": "Vous analysez les réponses d'une personne interrogée.", "background": "Contexte :",
        "ask": "Jugez la position de la personne sur {topic}, et expliquez votre jugement.",
        "format": "Répondez en JSON avec les champs \\"predict\\" et \\"reason\\".",
        "labels": {"positive": "pour", "neutral": "neutre", "negative": "contre"},
        "reason": "À la question « {question} », la personne a répondu « {answer} ».",
        "group_question": "Quelle est la position de ce groupe sur {topic} ?"},
    "role_inference": {
        "intro": "Vous analysez un entretien d'une enquête sur {survey}.", "dialogue": "== Entretien ==",
        "interviewer": "Enquêteur : ", "respondent": "Personne : ",
        "ask": "D'après l'entretien, devinez « {field} » de la personne.", "allowed": "Valeurs possibles : ",
        "sep": "; ", "end": ".", "format": "Donnez seulement la ou les valeurs, en liste."},
    "interview": {
        "intro": "Vous participez à une enquête sur {survey}.", "background": "== Votre profil ==",
        "history": "== Échanges précédents ==", "current": "== Question actuelle ==",
        "question_tag": "Enquêteur:", "answer_tag": "Personne:", "ask": "Répondez avec vos mots :",
        "tag_space": " "},
})
'''

TRAINING = '''
import jax.numpy as jnp
from surveylm_jax.train import losses

@losses.register("slot_brier", reads="slots")
def slot_brier(logits, batch):
  """Brier score of the option-letter distribution against the answer, per answer slot."""
  probs, valid = losses.option_distribution(logits, batch)
  target = batch["option_targets"].astype(jnp.float32)
  per_slot = ((probs - target) ** 2).sum(-1)
  value = (per_slot * valid).sum() / jnp.maximum(valid.sum(), 1)
  return value, {"slot_brier": value}
'''

EVALUATION = '''
import collections

import numpy as np
from surveylm_jax.data import answer_key
from surveylm_jax.eval import baselines, extra_metrics, runner

@runner.register_readout("tempered")
def tempered(model, params, tokenizer, records, config, label):
  probs, mass = runner.score_records(model, params, tokenizer, records, config, label)
  flat = [np.sqrt(p) / np.sqrt(p).sum() for p in probs]   # temperature 2
  return {"probs": flat, "option_mass": mass, "generated": ["tempered"] * len(records)}

@baselines.register_baseline("smoothed_mode")
def fit_smoothed_mode(train_records):
  counts = collections.defaultdict(collections.Counter)
  for r in train_records:
    counts[r.question][r.answer_key] += 1
  def predict(record):
    mode = counts[record.question].most_common(1)[0][0]
    raw = np.array([3.0 if answer_key(t) == mode else 1.0 for t in record.option_texts()])
    return raw / raw.sum()
  return predict

@extra_metrics.register_metric("mean_entropy")
def mean_entropy(records, probs):
  return float(np.mean([-(p * np.log(np.maximum(p, 1e-12))).sum() for p in probs if p is not None]))

@extra_metrics.register_metric("answered")
def answered(records, probs):
  return {"records": len(records), "predicted": sum(p is not None for p in probs)}
'''

CODEBOOK = f"""
name: small_fr
survey: la vie de quartier
source: {{csv: {SURVEY_CSV}}}
respondent_id: [wave, pid]
weight: wt
year: {{column: wave}}
language: fr
missing: [9]
demographics:
  - {{column: gender, label: sexe, values: {{1: homme, 2: femme}}, infer: true}}
  - {{column: age, label: âge, numeric: true}}
  - {{column: age, name: age_group, label: tranche d'âge, bins: [[18, 59, moins de 60 ans], [60, 120, 60 ans et plus]]}}
  - {{column: area, label: lieu de vie, values: {{1: ville, 2: campagne}}, infer: true}}
questions:
  - column: q_trust
    text: Faites-vous confiance à vos voisins ?
    options: [{{code: 1, label: confiance}}, {{code: 2, label: moyennement}}, {{code: 3, label: méfiance}}]
    stance: {{1: positive, 2: neutral, 3: negative}}
    topic: la confiance entre voisins
  - column: q_life
    text: Par rapport à il y a cinq ans, votre vie est-elle
    options: [{{code: 1, label: meilleure}}, {{code: 2, label: pareille}}, {{code: 3, label: pire}}, {{code: 4, label: ne sait pas}}]
group_by: [[area], [gender]]
min_group_size: 5
split: {{test_fraction: 0.3, seed: 11, profile: [gender, age_group, area]}}
interview: {{history_turns: 1}}
"""


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
  """The researcher's folder: a package `survey_ext` and a French codebook, off the repo."""
  root = tmp_path_factory.mktemp("outside")
  package = root / "survey_ext"
  package.mkdir()
  (package / "__init__.py").write_text("")
  for name, source in (("french", FRENCH), ("training", TRAINING), ("evaluation", EVALUATION)):
    (package / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
  (root / "codebook_fr.yaml").write_text(CODEBOOK, encoding="utf-8")
  return root


def _run(outside, *args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, str(outside)]), JAX_PLATFORMS="cpu",
             HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)


@pytest.fixture(scope="module")
def french_data(outside):
  out = outside / "data_fr"
  proc = _run(outside, "tools.survey_to_alignsurvey", "--codebook", str(outside / "codebook_fr.yaml"),
              "--out", str(out), "--extra_modules", "survey_ext.french")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out


def test_a_codebook_in_an_unregistered_language_names_the_registered_ones(outside, capsys):
  # This process never imported survey_ext.french.
  assert survey_to_alignsurvey.main(["--codebook", str(outside / "codebook_fr.yaml"),
                                     "--out", str(outside / "never")]) == 1
  err = capsys.readouterr().err
  assert "language" in err and "'fr' is not a registered prompt language; registered: ['en', 'zh']" in err


def test_the_converter_writes_every_task_in_the_registered_language(french_data):
  files = {p: json.loads((french_data / p).read_text(encoding="utf-8"))
           for p in ("task4/individual/train.json", "task4/group/test.json", "task3/individual/train.json",
                     "task3/group/train.json", "task1/train.json", "task2/train.json")}
  assert all(files.values()), {p: len(v) for p, v in files.items()}
  first = files["task4/individual/train.json"][0]
  assert first["instruction"].startswith("L'enquête date de 2021. Vous êtes une personne interrogée")
  assert "Question de l'enquête :" in first["instruction"] and "Réponses :\nA. " in first["instruction"]
  assert "Profil du groupe :" in files["task4/group/test.json"][0]["instruction"]
  stance = json.loads(files["task3/individual/train.json"][0]["output"])
  assert stance["predict"] in ("pour", "neutre", "contre") and stance["reason"].startswith("À la question")
  assert "Quelle est la position de ce groupe" in files["task3/group/train.json"][0]["instruction"]
  assert "== Entretien ==" in files["task1/train.json"][0]["instruction"]
  assert "== Échanges précédents ==" in files["task2/train.json"][0]["instruction"]


def test_launch_train_weights_a_loss_registered_outside(outside, french_data, tmp_path):
  workdir = tmp_path / "train"
  common = ["launch.train", "--config=configs/tiny.py", f"--workdir={workdir}",
            f"--config.data.train={french_data}/task4/individual/train.json",
            f"--config.data.eval={french_data}/task4/individual/test.json"]
  fast = ["--config.data.seq_len=256", "--config.data.batch_size=4", "--config.train.steps=2",
          "--config.train.log_every=1", "--config.train.eval_batches=1", "--config.checkpoint.every_steps=2",
          "--config.checkpoint.async_save=False", "--config.eval.max_records=-1"]
  # A misspelt loss name fails at start, listing what is registered (the module's loss too).
  proc = _run(outside, *common, "--config.extra_modules=survey_ext.training,survey_ext.french",
              "--config.loss.slot_breir=0.5", *fast)
  assert proc.returncode != 0
  assert "unknown loss 'slot_breir'; registered: option_kl, option_w1, slot_brier, token_ce" in proc.stderr
  assert not (workdir / "metrics.jsonl").exists()

  proc = _run(outside, *common, "--config.extra_modules=survey_ext.training,survey_ext.french",
              "--config.loss.slot_brier=0.5", *fast)
  assert proc.returncode == 0, proc.stderr[-3000:]
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [r for r in logged if "loss" in r]
  assert len(steps) == 2 and all(0.0 <= r["slot_brier"] <= 2.0 for r in steps)
  assert all(r["loss"] == pytest.approx(r["token_ce"] + 0.5 * r["slot_brier"], rel=1e-5) for r in steps)
  config = json.loads((workdir / "config.json").read_text())
  assert config["loss"] == {"token_ce": 1.0, "slot_brier": 0.5}
  assert config["extra_modules"] == ["survey_ext.training,survey_ext.french"]


def test_launch_evaluate_uses_a_readout_baseline_and_metrics_registered_outside(outside, french_data, tmp_path,
                                                                                smollm2_path):
  workdir = tmp_path / "eval"
  proc = _run(outside, "launch.evaluate", "--config=configs/eval_gss_zero_shot.py", f"--workdir={workdir}",
              "--config.extra_modules=survey_ext.evaluation,survey_ext.french",
              f"--config.model.random_init={TINY}", f"--config.model.tokenizer={smollm2_path}",
              f"--config.eval.data={french_data}/task4/individual/test.json,{french_data}/task4/group/test.json",
              f"--config.eval.train_data={french_data}/task4/individual/train.json",
              "--config.eval.readout=tempered", "--config.eval.baselines=marginal",
              "--config.eval.baselines=smoothed_mode", "--config.eval.metrics=mean_entropy",
              "--config.eval.metrics=answered", "--config.eval.group_prompts=False",
              "--config.eval.position_bias_records=0", "--config.eval.noise_floor_draws=10",
              "--config.eval.fairness_min_records=1", "--config.eval.batch_size=8",
              "--config.eval.length_step=64")
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = workdir / "eval"
  metrics = json.loads((out / "metrics.json").read_text())
  n = metrics["counts"]["individual"]
  assert metrics["readout"] == "tempered" and n > 0 and metrics["counts"]["group"] > 0
  assert set(metrics["individual"]) == {"model", "marginal", "smoothed_mode"}
  assert metrics["individual"]["smoothed_mode"]["n"] == n
  assert "smoothed_mode_aggregated" in metrics["group"]["summary"]
  extra = metrics["extra_metrics"]
  assert set(extra) == {"mean_entropy", "answered"}
  assert set(extra["mean_entropy"]) == {"model", "marginal", "smoothed_mode"}
  assert 0.0 < extra["mean_entropy"]["smoothed_mode"] < 1.4   # below log(4): never uniform
  assert extra["answered"]["model"] == {"records": n, "predicted": n}
  rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
  individual = [r for r in rows if r["task"] == "task4"]
  assert len(individual) == n and all(r["generated"] == "tempered" for r in individual)
  report = (out / "report.md").read_text()
  assert "Read-out: **tempered**" in report and "| smoothed_mode |" in report
  assert "## Registered metrics (config.eval.metrics)" in report and "| answered.predicted |" in report
