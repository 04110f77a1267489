"""Small training fixtures: a task-4 file written here and a tiny-config factory."""
import json
import os
import random
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_QUESTIONS = [
    ("Are we spending too much money, too little money, or about the right amount on parks?",
     ["too little", "about right", "too much"]),
    ("Are we spending too much money, too little money, or about the right amount on roads?",
     ["too little", "about right", "too much"]),
    ("Should a woman be able to obtain a legal abortion for any reason?", ["yes", "no"]),
]


def write_task4(path, n_respondents=24, seed=0):
  """AlignSurvey task-4 records (English layout) for `n_respondents` invented respondents."""
  rng = random.Random(seed)
  records = []
  for rid in range(n_respondents):
    age, sex = rng.randint(18, 89), rng.choice(["male", "female"])
    for qi, (question, options) in enumerate(_QUESTIONS):
      answer = rng.choice(options)
      letters = "ABCDEFG"
      lines = "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(options))
      records.append({
          "instruction": (
              "The survey is in 2018. You need to simulate a real survey respondent answering "
              "the following question.\nYour personal background:\n"
              f"your age: {age}\nyour sex: {sex}\n\nSurvey question:\n{question}\n{lines}\n\n"
              "Please provide your answer directly."),
          "input": "",
          "output": f"{letters[options.index(answer)]}. {answer}",
          "respondent_id": str(rid), "question": question, "answer": answer})
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(records, f)
  return path


@pytest.fixture(scope="session")
def task4_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("task4")
  return (write_task4(str(root / "task4" / "individual" / "train.json"), 24, 0),
          write_task4(str(root / "task4" / "individual" / "test.json"), 8, 1))


def tiny_overrides(train, test, **extra):
  """Command-line overrides that make configs/tiny.py run in seconds on the fixture data."""
  base = {"data.train": train, "data.eval": test, "data.seq_len": 128, "data.batch_size": 4,
          "model.random_init.vocab_size": 49152, "train.steps": 6, "train.log_every": 1,
          "checkpoint.every_steps": 2, "checkpoint.async_save": False,
          "train.eval_batches": 1, "data.max_records": -1, "eval.max_records": -1}
  base.update(extra)
  return [f"--config.{k}={v}" for k, v in base.items()]


def run_train(workdir, overrides, env=None, **kwargs):
  cmd = [sys.executable, "-m", "launch.train", "--config=configs/tiny.py",
         f"--workdir={workdir}"] + overrides
  full_env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **(env or {}))
  return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kwargs)


def losses_by_step(workdir):
  """Last logged training loss per step (a resumed run re-logs the steps after its checkpoint)."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      rec = json.loads(line)
      if "loss" in rec:
        out[rec["step"]] = rec["loss"]
  return out
