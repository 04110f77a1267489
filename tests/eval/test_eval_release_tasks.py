"""The evaluation on the release-layout fixtures (tests/data/fixtures/release, zh + en), tasks 1-4.

A tiny random llama (the SmolLM2 tokenizer) stands in for the model, so scores are noise; what is
checked is the plumbing: which records are scored, how many, in which option order, which group
members are aggregated, what the limits keep, and what metrics.json / predictions.jsonl /
groups.jsonl / report.md say about it. Group memberships below are the fixtures' README's.

Runs (module-scoped, each once): `python -m launch.evaluate` in a subprocess on tasks 1-3 and the
task-3 groups; in process, task 4 individual + group, every file under max_respondents /
max_records, tasks 3 with an oracle generator (the reference answers), and a nominal question
written here, without and with a user question catalog.
"""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from configs import base
from surveylm_jax import data
from surveylm_jax.data import survey_prompts
from surveylm_jax.eval import generated_tasks, runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(REPO, "tests", "data", "fixtures", "release")

# matplotlib's default font has no CJK glyphs; the plots of Chinese questions say so per glyph.
pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font")

TINY = dict(model_type="llama", vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048, rms_norm_eps=1e-6,
            tie_word_embeddings=True, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)
# Small, and different per task, so the per-task limit is seen to reach each task.
GEN_LIMITS = {"task1": 6, "task2": 8, "task3": 10}
BATCH = 8

T1, T2, T3, T3G = "task1/test.json", "task2/test.json", "task3/individual/test.json", "task3/group/test.json"
T4, T4G, T4_TRAIN = "task4/individual/test.json", "task4/group/test.json", "task4/individual/train.jsonl"
FIXTURE_COUNTS = {"task1": 8, "task2": 10, "task3": 16, "task3_group": 10, "task4": 16, "task4_group": 10}

# Task-3 groups (README): (topic or question id, profile field, value) -> member respondent ids.
T3_MEMBERS = {
    ("公共服务评价", "户籍状态", "农村"): {"31", "32"},
    ("公共服务评价", "户籍状态", "城镇"): {"33", "34"},
    ("公共服务评价", "性别", "女"): {"31", "33"},
    ("和父辈相比的生活水平", "户籍状态", "农村"): {"31", "32"},
    ("和父辈相比的生活水平", "户籍状态", "城镇"): {"33", "34"},
    ("natheal", "sex", "female"): {"e301", "e303"},
    ("natheal", "sex", "male"): {"e302", "e304"},
    ("natheal", "highest degree", "bachelor's degree"): {"e302", "e303"},
    ("confpol", "sex", "female"): {"e301", "e303"},
    ("confpol", "sex", "male"): {"e302", "e304"},
}
# Task-4 groups (README), the question named by its id or the start of its text.
T4_MEMBERS = {
    ("与五年前相比", "居住地区", "农村"): {"330182_0105_1", "330182_0105_2"},
    ("与五年前相比", "居住地区", "城镇"): {"510107_0311_1", "510107_0311_2"},
    ("与五年前相比", "您的性别", "女"): {"330182_0105_1", "510107_0311_1"},
    ("总的来说", "居住地区", "农村"): {"330182_0105_1", "330182_0105_2"},
    ("总的来说", "居住地区", "城镇"): {"510107_0311_1", "510107_0311_2"},
    ("nateduc", "sex", "female"): {"1042", "1187"},
    ("nateduc", "sex", "male"): {"2210", "2356"},
    ("happy", "sex", "female"): {"1042", "1187"},
    ("happy", "sex", "male"): {"2210", "2356"},
    ("happy", "region", "east north central"): {"1042", "2210"},
}
# Each task-4 question's canonical order (low to high on its scale), whatever order records list.
T4_CANONICAL = {"与五年前相比": ["下降了", "差不多", "上升了"], "总的来说": ["不满意", "一般", "满意"],
                "nateduc": ["too little", "about right", "too much"],
                "happy": ["not too happy", "pretty happy", "very happy"]}
STANCE_ORDER = {"zh": ["积极", "中立", "消极"], "en": ["positive", "neutral", "negative"]}


def _fixture(name):
  return os.path.join(RELEASE, *name.split("/"))


def _has_cjk(text):
  return re.search(r"[\u4e00-\u9fff]", str(text)) is not None


def _t4_question(qid):
  """The T4_MEMBERS / T4_CANONICAL key of a task-4 question id or text."""
  hits = [k for k in T4_CANONICAL if qid == k or str(qid).startswith(k)]
  assert len(hits) == 1, qid
  return hits[0]


def _t3_topic(qid):
  """The T3_MEMBERS key of a task-3 group's question (zh groups carry the question sentence)."""
  hits = [t for t, _, _ in T3_MEMBERS if t == qid or (_has_cjk(t) and t in str(qid))]
  assert len(set(hits)) == 1, qid
  return hits[0]


def _group_key(row, question_key):
  (field, value), = row["group"].items()
  return question_key(row["question_id"]), field, value


def _stance_key(record):
  return record.topic if _has_cjk(record.topic) else record.extra["question_id"]


def _read_run(workdir):
  out = os.path.join(workdir, "eval")
  with open(os.path.join(out, "metrics.json")) as f:
    metrics = json.load(f)
  with open(os.path.join(out, "predictions.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  with open(os.path.join(out, "groups.jsonl")) as f:
    group_rows = [json.loads(line) for line in f]
  with open(os.path.join(out, "report.md")) as f:
    report = f.read()
  return {"metrics": metrics, "rows": rows, "groups": group_rows, "report": report, "dir": out}


def _config(smollm2_path, files, **eval_fields):
  c = base.get_config()
  c.model.random_init = dict(TINY)
  c.model.tokenizer = smollm2_path
  c.eval.data = ",".join(f if os.path.isabs(f) else _fixture(f) for f in files)
  c.eval.baselines = ()
  c.eval.batch_size = BATCH
  c.eval.length_step = 64
  c.eval.noise_floor_draws = 20
  c.eval.fairness_min_records = 1
  c.eval.position_bias_records = 0
  c.eval.max_new_tokens_task.update(GEN_LIMITS)
  for key, value in eval_fields.items():
    setattr(c.eval, key, value)
  return c


def _kept(text):
  kept, total = re.fullmatch(r"(\d+) of (\d+)", text).groups()
  return int(kept), int(total)


# --------------------------------------------------------------------------------------------------
# 1. Tasks 1-3 and the task-3 groups through the real command line.
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, smollm2_path):
  workdir = str(tmp_path_factory.mktemp("cli"))
  files = ",".join(_fixture(f) for f in (T1, T2, T3, T3G))
  cmd = [sys.executable, "-m", "launch.evaluate", "--config=configs/eval_gss_zero_shot.py",
         f"--workdir={workdir}", f"--config.eval.data={files}",
         f"--config.eval.train_data={_fixture(T4_TRAIN)}", "--config.eval.baselines=()",
         # A dict-valued field takes a Python dict literal on the command line.
         f"--config.model.random_init={TINY!r}", f"--config.model.tokenizer={smollm2_path}",
         f"--config.eval.batch_size={BATCH}", "--config.eval.length_step=64",
         "--config.eval.noise_floor_draws=20", "--config.eval.position_bias_records=0"]
  cmd += [f"--config.eval.max_new_tokens_task.{t}={n}" for t, n in GEN_LIMITS.items()]
  env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
             PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert f"wrote {workdir}/eval/report.md" in proc.stdout
  return _read_run(workdir)


def test_cli_generated_tasks_metrics(cli_run):
  m = cli_run["metrics"]
  assert m["model"] == "random_init"   # the dict override reached config.model.random_init
  assert m["counts"] == {"individual": 0, "group": 10, "train": 4, "generated_tasks": 8 + 10 + 16}
  assert m["limits"]["kept"] == {"individual": "0 of 0", "group": "10 of 10", "task1": "8 of 8",
                                 "task2": "10 of 10", "task3": "16 of 16"}
  gen = m["generated_tasks"]
  assert set(gen) == {"task1", "task2", "task3"}

  t1 = gen["task1"]
  assert t1["n"] == 8
  assert set(t1["accuracy_per_field"]) == {"家庭年收入", "家庭成员关系", "家里人口数", "household income",
                                           "household members", "number of children"}
  assert all(0.0 <= v <= 1.0 for v in t1["accuracy_per_field"].values())
  assert t1["parse_failures"] == t1["parse"]["failed"] == sum(t1["parse_failures_per_field"].values())

  t2 = gen["task2"]
  assert t2["n"] == 10
  for key in ("rouge1", "rouge2", "rougeL", "bleu", "sentence_bleu"):
    assert 0.0 <= t2[key] <= 1.0, key
  assert t2["bleu_tokenizer"] in ("zh", "13a")

  t3 = gen["task3"]
  assert t3["n"] == 16 and 0.0 <= t3["accuracy"] <= 1.0 and 0.0 <= t3["macro_f1"] <= 1.0
  assert t3["parse_failures"] == t3["parse"]["failed"]

  rows = cli_run["rows"]
  for task, n in (("task1", 8), ("task2", 10), ("task3", 16)):
    g = gen[task]["generation"]
    task_rows = [r for r in rows if r["task"] == task]
    assert len(task_rows) == n == g["outputs"]
    assert g["max_new_tokens"] == GEN_LIMITS[task]
    assert g["programs"] >= 1 and len(g["shapes"]) == g["programs"]
    # (batch, prompt bucket, new tokens): every program ran this task's own limit, full batches.
    assert all(s[0] == BATCH and s[2] == GEN_LIMITS[task] for s in g["shapes"]), g["shapes"]
    assert 0 <= g["cut_at_max_new_tokens"] <= g["outputs"]
    assert all(isinstance(r["cut_at_max_new_tokens"], bool) for r in task_rows)
    assert sum(r["cut_at_max_new_tokens"] for r in task_rows) == g["cut_at_max_new_tokens"]
    assert g["cut_share"] == pytest.approx(g["cut_at_max_new_tokens"] / n)
    assert all(isinstance(r["generated"], str) for r in task_rows)
    # Chinese and English records both went through.
    assert any(_has_cjk(r["target"]) for r in task_rows) and any(not _has_cjk(r["target"]) for r in task_rows)
    # A parse failure has no parsed value and a reason, and only then.
    assert sum(r["parse_failure"] is not None for r in task_rows) == gen[task]["parse"]["failed"]
    assert all((r["parsed"] is None) == (r["parse_failure"] is not None) for r in task_rows)


def test_cli_task3_groups_aggregate_their_members(cli_run):
  group_rows = cli_run["groups"]
  assert {_group_key(r, _t3_topic) for r in group_rows} == set(T3_MEMBERS)
  # Which (respondent, topic) the run could aggregate: task-3 rows whose stance parsed.
  stance_records = data.read_alignsurvey(_fixture(T3))
  parsed = set()
  for r in cli_run["rows"]:
    if r["task"] == "task3" and r["parsed"] is not None:
      record = stance_records[int(r["id"].rsplit("#", 1)[1])]
      assert record.respondent_id == r["respondent_id"]
      parsed.add((record.respondent_id, _stance_key(record)))
  for row in group_rows:
    key = _group_key(row, _t3_topic)
    assert row["ordinal"] is True
    lang = "zh" if _has_cjk(key[0]) else "en"
    assert row["options"] == STANCE_ORDER[lang]          # canonical: positive stance first
    expected = {m for m in T3_MEMBERS[key] if (m, key[0]) in parsed}
    assert row["members"] == len(expected), key
    assert ("model_aggregated" in row["predictions"]) == bool(expected)
    assert "model_group_prompt" in row["predictions"]    # the group prompt itself was scored
    assert sum(row["predictions"]["model_group_prompt"]) == pytest.approx(1.0)
  summary = cli_run["metrics"]["group"]["summary"]
  assert summary["model_group_prompt"]["groups"] == 10
  assert "uniform" not in summary and "marginal" not in summary   # baselines=() from the command line


def test_cli_report_mentions_every_task(cli_run):
  report = cli_run["report"]
  for heading in ("## task1 (generate, then parse)", "## task2 (generate, then parse)",
                  "## task3 (generate, then parse)", "## Group distributions (tasks 3 and 4)"):
    assert heading in report, heading
  for task, n in (("task1", 8), ("task2", 10), ("task3", 16)):
    cut = cli_run["metrics"]["generated_tasks"][task]["generation"]["cut_at_max_new_tokens"]
    assert f"at most {GEN_LIMITS[task]} new tokens; {cut} of {n} answers cut" in report
  assert "| 家庭成员关系 |" in report and "| household members |" in report
  assert os.path.exists(os.path.join(cli_run["dir"], "plots", "group_distributions.png"))


@pytest.fixture(scope="module")
def stance_oracle_run(tmp_path_factory, smollm2_path):
  """Tasks 3 individual + group with a generator that writes each record's reference answer, so
  every stance parses and each group's aggregate is known exactly."""
  records = data.read_alignsurvey(_fixture(T3))
  answers = {r.prompt: r.output for r in records}

  def oracle(model, params, tokenizer, prompts, batch_size, max_new_tokens, label, stats=None,
             max_prompt_len=None):
    if stats is not None:
      stats.shapes.add((batch_size, 0, max_new_tokens))
      stats.cut.extend([False] * len(prompts))
    return [answers[p] for p in prompts]

  workdir = str(tmp_path_factory.mktemp("oracle"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(generated_tasks, "generate_texts", oracle)
    runner.evaluate(_config(smollm2_path, [T3, T3G], group_prompts=False), workdir)
  return records, _read_run(workdir)


def test_task3_groups_aggregate_parsed_member_stances(stance_oracle_run):
  records, run = stance_oracle_run
  assert run["metrics"]["generated_tasks"]["task3"]["accuracy"] == 1.0
  stance_of = {(r.respondent_id, _stance_key(r)): r.stance for r in records}
  for row in run["groups"]:
    key = _group_key(row, _t3_topic)
    members = T3_MEMBERS[key]
    assert row["members"] == len(members), key
    expected = np.mean([np.eye(3)[data.STANCES.index(stance_of[(m, key[0])])] for m in members], axis=0)
    np.testing.assert_allclose(row["predictions"]["model_aggregated"], expected, err_msg=str(key))
  summary = run["metrics"]["group"]["summary"]
  assert summary["model_aggregated"]["groups"] == summary["model_aggregated"]["ordinal_groups"] == 10
  assert "model_group_prompt" not in summary                     # group_prompts=False


# --------------------------------------------------------------------------------------------------
# 2. Task 4, zh + en, individual and group.
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def task4_run(tmp_path_factory, smollm2_path):
  workdir = str(tmp_path_factory.mktemp("task4"))
  config = _config(smollm2_path, [T4, T4G], baselines=("uniform", "marginal"), train_data=_fixture(T4_TRAIN))
  result = runner.evaluate(config, workdir)
  run = _read_run(workdir)
  run["result"] = result
  return run


def test_task4_question_catalog_orders(task4_run):
  cat = task4_run["metrics"]["question_catalog"]
  assert cat["questions"] == 4
  by_source = cat["by_source"]
  assert by_source["shipped"] + by_source["inferred"] == 4, by_source
  assert by_source["nominal"] == 0 and cat["nominal"] == []
  # Every inferred order is listed for review, with its scale, in the canonical order.
  assert len(cat["inferred"]) == by_source["inferred"]
  for item in cat["inferred"]:
    assert item["scale"] and item["order"] == T4_CANONICAL[_t4_question(item["question"])], item
  for row in task4_run["rows"]:
    assert row["task"] in ("task4", "task4_group")
    assert row["canonical_options"] == T4_CANONICAL[_t4_question(row["question_id"])]
    assert sorted(row["options"]) == sorted(row["canonical_options"]) and row["ordinal"] is True
  # The fixtures list one question's options in different orders: the canonical order is one.
  listed = {tuple(r["options"]) for r in task4_run["rows"] if _t4_question(r["question_id"]) == "与五年前相比"}
  assert len(listed) > 1
  assert "Inferred option orders (check them)" in task4_run["report"] or by_source["inferred"] == 0


def test_task4_groups_are_ordinal_and_aggregate_their_members(task4_run):
  rows = [r for r in task4_run["rows"] if r["task"] == "task4"]
  assert len(rows) == FIXTURE_COUNTS["task4"]
  group_rows = task4_run["groups"]
  assert {_group_key(g, _t4_question) for g in group_rows} == set(T4_MEMBERS)
  for g in group_rows:
    key = _group_key(g, _t4_question)
    assert g["ordinal"] is True and g["options"] == T4_CANONICAL[key[0]]
    assert g["members"] == len(T4_MEMBERS[key])
    # The aggregate is the members' predicted distributions, each mapped by text to canonical order.
    member_probs = []
    for r in rows:
      if r["respondent_id"] in T4_MEMBERS[key] and _t4_question(r["question_id"]) == key[0]:
        by_text = dict(zip(r["options"], r["predicted_distribution"]))
        member_probs.append([by_text[o] for o in g["options"]])
    assert len(member_probs) == len(T4_MEMBERS[key])
    np.testing.assert_allclose(g["predictions"]["model_aggregated"], np.mean(member_probs, axis=0), rtol=1e-6)
    for name in ("model_aggregated", "model_group_prompt", "uniform", "marginal"):
      assert "w1" in g["distances"][name], name
    assert "w1" in g["noise_floor"]
  summary = task4_run["metrics"]["group"]["summary"]
  assert summary["model_aggregated"]["groups"] == summary["model_aggregated"]["ordinal_groups"] == 10
  assert math.isfinite(summary["model_aggregated"]["gap_closed_vs_uniform_of_means"])
  group_pred_rows = [r for r in task4_run["rows"] if r["task"] == "task4_group"]
  assert len(group_pred_rows) == 10 and all(r["ordinal"] is True for r in group_pred_rows)
  ind = task4_run["metrics"]["individual"]["model"]
  assert ind["n"] == ind["scored"] == ind["rps_records"] == 16 and math.isfinite(ind["rps"])


def test_task4_fairness_subgroups_found_in_the_data(task4_run):
  found = task4_run["metrics"]["fairness_subgroups"]
  assert "居住地区=农村" in found["conditions"]                   # the paper's rural group, in Chinese
  assert "place of residence=open country" in found["conditions"]
  assert {"sex", "您的性别", "居住地区", "region"} <= set(found["columns"])
  records = data.read_alignsurvey(_fixture(T4))
  rural = sum("居住地区: 农村" in r.prompt for r in records)
  female = sum((r.extra.get("profile") or {}).get("sex") == "female" for r in records)
  subgroups = task4_run["metrics"]["fairness"]["model"]["subgroups"]
  assert rural > 0 and subgroups["居住地区=农村"]["n"] == rural
  assert female > 0 and subgroups["sex=female"]["n"] == female
  assert subgroups["sex=male"]["n"] == 8 - female
  tagged = [r for r in task4_run["rows"] if r["task"] == "task4" and "居住地区=农村" in r["subgroups"]]
  assert len(tagged) == rural


# --------------------------------------------------------------------------------------------------
# 3. Limits: every kind of record capped.
# --------------------------------------------------------------------------------------------------

MAX_RECORDS = 3


@pytest.fixture(scope="module")
def limited_run(tmp_path_factory, smollm2_path):
  workdir = str(tmp_path_factory.mktemp("limited"))
  config = _config(smollm2_path, [T1, T2, T3, T3G, T4, T4G], max_respondents=1, max_records=MAX_RECORDS,
                   position_bias_records=100)
  runner.evaluate(config, workdir)
  return _read_run(workdir)


def test_limits_cap_every_kind_of_record(limited_run):
  m = limited_run["metrics"]
  lim = m["limits"]
  assert lim["max_respondents"] == 1 and lim["max_records"] == MAX_RECORDS
  totals = {"individual": 16, "group": 20, "task1": 8, "task2": 10, "task3": 16}
  assert set(lim["kept"]) == set(totals)
  kept = {}
  for kind, text in lim["kept"].items():
    kept[kind], total = _kept(text)
    assert total == totals[kind] and 1 <= kept[kind] <= MAX_RECORDS, (kind, text)
  assert m["counts"]["individual"] == kept["individual"] and m["counts"]["group"] == kept["group"]
  assert m["counts"]["generated_tasks"] == kept["task1"] + kept["task2"] + kept["task3"]
  rows = limited_run["rows"]
  by_task = {}
  for r in rows:
    by_task.setdefault(r["task"], []).append(r)
  assert len(by_task.get("task4", [])) == kept["individual"]
  assert len(by_task.get("task4_group", [])) + len(by_task.get("task3_group", [])) == kept["group"]
  for task in ("task1", "task2", "task3"):
    assert len(by_task[task]) == kept[task] == m["generated_tasks"][task]["n"]
  assert len(rows) <= 6 * MAX_RECORDS
  # One respondent per kind (max_respondents=1), and every kept group has a drawn member.
  for task in ("task4", "task1", "task2", "task3"):
    assert len({r["respondent_id"] for r in by_task[task]}) == 1, task
  t4_groups = [g for g in limited_run["groups"] if any(str(g["question_id"]).startswith(k) for k in T4_CANONICAL)]
  assert len(t4_groups) == len(by_task.get("task4_group", []))
  for g in t4_groups:
    assert g["members"] >= 1, g["id"]   # scoring always predicts: the drawn member is aggregated
  assert f"Limits: max_respondents 1, max_records {MAX_RECORDS}" in limited_run["report"]


def test_limits_cap_position_bias_copies(limited_run):
  """Position bias scores every option order (3! = 6 for the fixtures' three options) of each of
  its records; with max_records = 3 that is at most 3 copies in all (eval_limits docstring)."""
  m = limited_run["metrics"]
  count = m["limits"]["position_bias_records"]
  assert (m["position_bias"] or {}).get("items", 0) == count
  copies = count * 6
  assert copies <= MAX_RECORDS, f"{count} position-bias records x 6 orders = {copies} copies > {MAX_RECORDS}"


# --------------------------------------------------------------------------------------------------
# 4. A nominal question, then the same declared ordinal by a user catalog.
# --------------------------------------------------------------------------------------------------

COLOURS = ["red", "green", "blue"]                 # no known scale: nominal
COLOUR_Q = "Which of these colours do you like best?"


def _write_colour_files(folder):
  """4 respondents answering one nominal question (options listed in varying orders) and two
  groups (sex=female: 1, 3; sex=male: 2, 4), in the English release layout."""
  people = [("1", "female", "red"), ("2", "male", "blue"), ("3", "female", "green"), ("4", "male", "blue")]
  orders = [COLOURS, ["blue", "red", "green"], ["green", "blue", "red"], COLOURS]
  individual = []
  for (rid, sex, answer), labels in zip(people, orders):
    text = survey_prompts.survey_response("en", 2018, [("sex", sex)], COLOUR_Q, labels)
    letter = "ABC"[labels.index(answer)]
    individual.append({"instruction": text, "input": "", "output": f"{letter}. {answer}", "respondent_id": rid,
                       "question_id": "favcolour", "question": COLOUR_Q, "answer": answer,
                       "profile": {"sex": sex}, "year": 2018})
  group = []
  for sex, labels, dist in (("female", COLOURS, [0.5, 0.3, 0.2]), ("male", ["blue", "green", "red"], [0.6, 0.1, 0.3])):
    group.append({"instruction": survey_prompts.group_distribution("en", 2018, [("sex", sex)], COLOUR_Q, labels),
                  "input": "", "output": survey_prompts.share_lines(labels, dist), "group": {"sex": sex},
                  "distribution": dist, "question_id": "favcolour", "question": COLOUR_Q, "n": 50})
  paths = []
  for name, rows in (("task4/individual/test.json", individual), ("task4/group/test.json", group)):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    paths.append(str(path))
  return paths


@pytest.fixture(scope="module")
def colour_runs(tmp_path_factory, smollm2_path):
  folder = tmp_path_factory.mktemp("colours")
  paths = _write_colour_files(folder)
  catalog = folder / "my_catalog.yaml"
  catalog.write_text("questions:\n  - id: favcolour\n    options: [red, green, blue]\n    ordinal: true\n")
  out = {}
  for name, user_catalog in (("nominal", ""), ("user", str(catalog))):
    workdir = str(folder / name)
    result = runner.evaluate(_config(smollm2_path, paths, question_catalog=user_catalog), workdir)
    out[name] = dict(_read_run(workdir), result=result)
  return out


def _w1(p, q):
  return float(np.sum(np.abs(np.cumsum(p) - np.cumsum(q))[:-1]))


def test_nominal_question_gets_no_ordinal_metrics(colour_runs):
  run = colour_runs["nominal"]
  result = run["result"]
  cat = result["question_catalog"]
  assert cat["by_source"]["nominal"] == 1 and cat["questions"] == 1 and cat["inferred"] == []
  assert cat["nominal"] == [{"question": "favcolour", "options": sorted(COLOURS)}]
  summary = result["group"]["summary"]["model_aggregated"]
  assert summary["groups"] == 2 and summary["ordinal_groups"] == 0
  assert "w1" not in summary and "gap_closed_vs_uniform_of_means" not in summary
  assert "w1" not in result["group"]["noise_floor"]
  for g in run["groups"]:
    assert g["ordinal"] is False and g["members"] == 2 and g["options"] == sorted(COLOURS)
    for name, dist in g["distances"].items():
      assert "w1" not in dist and "w1_normalized" not in dist and {"js", "tv"} <= set(dist), name
  ind = result["individual"]["model"]
  assert ind["n"] == ind["scored"] == 4 and ind["rps_records"] == 0
  assert ind["rps"] is None or math.isnan(ind["rps"])
  assert all(r["ordinal"] is False for r in run["rows"])
  assert "1 nominal questions (no known order: no W1, no RPS): favcolour" in run["report"]


def test_user_catalog_makes_the_question_ordinal(colour_runs):
  run = colour_runs["user"]
  result = run["result"]
  cat = result["question_catalog"]
  assert cat["by_source"]["user"] == 1 and cat["by_source"]["nominal"] == 0 and cat["nominal"] == []
  assert cat["catalog_files"][0].endswith("my_catalog.yaml")
  summary = result["group"]["summary"]["model_aggregated"]
  assert summary["groups"] == summary["ordinal_groups"] == 2 and math.isfinite(summary["w1"])
  for g in run["groups"]:
    assert g["ordinal"] is True and g["options"] == COLOURS     # the user's order, not sorted
    pred = g["predictions"]["model_aggregated"]
    assert g["distances"]["model_aggregated"]["w1"] == pytest.approx(_w1(pred, g["human"]))
  female = next(g for g in run["groups"] if g["group"] == {"sex": "female"})
  assert female["human"] == pytest.approx([0.5, 0.3, 0.2])
  male = next(g for g in run["groups"] if g["group"] == {"sex": "male"})
  assert male["human"] == pytest.approx([0.3, 0.1, 0.6])          # listed blue/green/red, mapped by text
  ind = result["individual"]["model"]
  assert ind["rps_records"] == 4 and math.isfinite(ind["rps"])
  # The same model: nominal vs user-ordinal runs agree on everything order-free.
  nominal = colour_runs["nominal"]["result"]["individual"]["model"]
  assert ind["accuracy"] == nominal["accuracy"] and ind["nll"] == pytest.approx(nominal["nll"])
