"""README, "Extending": every Python block is saved as the file its first line names (`# my_pkg/X.py`)
in a folder off the repo, and the section's commands run as printed with that folder on
PYTHONPATH: the training command with only its workdir changed; the conversion command with its
codebook and output folder; the evaluation command with its workdir and appended overrides that
point it at the converted survey and a tiny random model."""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
SURVEY_CSV = os.path.join(REPO, "tests", "data", "fixtures", "survey_small.csv")
GSS2018 = os.path.join(REPO, "data", "gss2018")
TINY = ("{'model_type': 'llama', 'vocab_size': 49152, 'hidden_size': 16, 'intermediate_size': 32, "
        "'num_hidden_layers': 1, 'num_attention_heads': 2, 'num_key_value_heads': 1, "
        "'max_position_embeddings': 2048, 'rms_norm_eps': 1e-6, 'tie_word_embeddings': True, "
        "'rope_theta': 10000.0, 'bos_token_id': 1, 'eos_token_id': 2}")
CODEBOOK = f"""
name: small_fr
survey: la vie de quartier
source: {{csv: {SURVEY_CSV}}}
respondent_id: [wave, pid]
year: {{column: wave}}
language: fr
outputs: [task4]
missing: [9]
demographics:
  - {{column: gender, label: sexe, values: {{1: homme, 2: femme}}}}
  - {{column: area, label: lieu de vie, values: {{1: ville, 2: campagne}}}}
questions:
  - column: q_trust
    text: Faites-vous confiance à vos voisins ?
    options: [{{code: 1, label: confiance}}, {{code: 2, label: moyennement}}, {{code: 3, label: méfiance}}]
  - column: q_life
    text: Par rapport à il y a cinq ans, votre vie est-elle
    options: [{{code: 1, label: meilleure}}, {{code: 2, label: pareille}}, {{code: 3, label: pire}},
              {{code: 4, label: ne sait pas}}]
group_by: [[area]]
min_group_size: 5
split: {{test_fraction: 0.3, seed: 11}}
"""


def _section() -> str:
  text = open(README, encoding="utf-8").read()
  start = text.index("\n## Extending\n")
  return text[start:text.index("\n## ", start + 1)]


def _command(text: str, program: str) -> list[str]:
  """The section's command that runs `program`, as argv (backslash continuations joined)."""
  found = [c for c in re.findall(r"```bash\n(.*?)```", text, re.S) + re.findall(r"`(python -m [^`]+)`", text)
           if c.startswith(f"python -m {program} ")]
  assert len(found) == 1, (program, found)
  argv = shlex.split(found[0].replace("\\\n", " "))
  assert argv[:2] == ["python", "-m"]
  return [sys.executable] + argv[1:]


def _replace(argv, flag: str, value: str) -> list[str]:
  hits = [i for i, a in enumerate(argv) if a == flag or a.startswith(flag + "=")]
  assert len(hits) == 1, (flag, argv)
  i = hits[0]
  if argv[i] == flag:    # "--flag value"
    return argv[:i + 1] + [value] + argv[i + 2:]
  return argv[:i] + [f"{flag}={value}"] + argv[i + 1:]


def _run(argv, folder):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, str(folder)]), JAX_PLATFORMS="cpu",
             HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
  proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, (argv, proc.stderr[-3000:])
  return proc


@pytest.fixture(scope="module")
def my_pkg(tmp_path_factory):
  """The section's Python blocks saved as the files they name; every block names one."""
  folder = tmp_path_factory.mktemp("researcher")
  (folder / "my_pkg").mkdir()
  (folder / "my_pkg" / "__init__.py").write_text("")
  names = []
  for block in re.findall(r"```python\n(.*?)```", _section(), re.S):
    first = block.splitlines()[0]
    m = re.fullmatch(r"# my_pkg/(\w+)\.py", first)
    assert m, f"an Extending block does not start with '# my_pkg/NAME.py': {first!r}"
    (folder / "my_pkg" / f"{m.group(1)}.py").write_text(block, encoding="utf-8")
    names.append(m.group(1))
  assert sorted(names) == ["baselines", "language", "losses", "metrics", "readouts"]
  return folder


def test_the_custom_loss_command_runs_as_printed(my_pkg, tmp_path):
  if not os.path.exists(os.path.join(GSS2018, "conversion_report.json")):
    # configs/tiny.py reads the GSS 2018 files `make data` writes; write them the same way.
    _run([sys.executable, "-m", "tools.survey_to_alignsurvey", "--codebook",
          "configs/surveys/gss2018_spending.yaml", "--out", GSS2018], my_pkg)
  argv = _command(_section(), "launch.train")
  assert "--config.extra_modules=my_pkg.losses" in argv and "--config.loss.letter_entropy=0.1" in argv
  workdir = tmp_path / "letter_entropy"
  _run(_replace(argv, "--workdir", str(workdir)), my_pkg)
  steps = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [s for s in steps if "loss" in s]
  assert steps and all("letter_entropy" in s and "token_ce" in s for s in steps)
  assert all(s["loss"] == pytest.approx(s["token_ce"] + 0.1 * s["letter_entropy"], rel=1e-5) for s in steps)
  assert json.loads((workdir / "config.json").read_text())["loss"] == {"token_ce": 1.0, "letter_entropy": 0.1}


def test_the_language_readout_baseline_and_metric_blocks_through_convert_and_evaluate(my_pkg, tmp_path,
                                                                                      smollm2_path):
  section = _section()
  codebook = tmp_path / "my_survey.yaml"
  codebook.write_text(CODEBOOK, encoding="utf-8")
  data = tmp_path / "my_survey"
  convert = _replace(_replace(_command(section, "tools.survey_to_alignsurvey"), "--codebook", str(codebook)),
                     "--out", str(data))
  _run(convert, my_pkg)
  first = json.loads((data / "task4" / "individual" / "test.json").read_text(encoding="utf-8"))[0]
  assert first["instruction"].startswith("L'enquête date de 2021.") and "Question de l'enquête :" in first["instruction"]

  evaluate = _replace(_command(section, "launch.evaluate"), "--workdir", str(tmp_path / "run"))
  evaluate += ["--config.extra_modules=my_pkg.language",   # the readers need the language's markers
               f"--config.eval.data={data}/task4/individual/test.json,{data}/task4/group/test.json",
               f"--config.eval.train_data={data}/task4/individual/train.json",
               f"--config.model.random_init={TINY}", f"--config.model.tokenizer={smollm2_path}",
               "--config.eval.group_prompts=False", "--config.eval.position_bias_records=0",
               "--config.eval.noise_floor_draws=10", "--config.eval.fairness_min_records=1",
               "--config.eval.length_step=64"]
  _run(evaluate, my_pkg)
  metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
  n = metrics["counts"]["individual"]
  assert metrics["readout"] == "sharpened" and n > 0
  assert set(metrics["individual"]) == {"model", "marginal", "laplace"}
  top = metrics["extra_metrics"]["top_share"]
  assert set(top) == {"model", "marginal", "laplace"}
  assert all(0.0 <= v["hit_rate"] <= 1.0 and 1 / 4 <= v["mean_top_probability"] <= 1.0 for v in top.values())
  rows = [json.loads(line) for line in (tmp_path / "run" / "eval" / "predictions.jsonl").read_text().splitlines()]
  # Sharpened: squaring and renormalising never lowers the top answer's probability below 1/K.
  assert all(max(r["predicted_distribution"]) >= 1 / len(r["options"]) for r in rows if r["task"] == "task4")
  report = (tmp_path / "run" / "eval" / "report.md").read_text()
  assert "Read-out: **sharpened**" in report and "| top_share.hit_rate |" in report and "| laplace |" in report
