"""Command lines as a user types them: expected mistakes print one `error:` line naming the file,
record or field and exit 2, with no traceback; a CPU machine with libtpu installed starts without
TPU initialisation noise, saying once which platform it chose."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK4 = os.path.join(REPO, "tests", "data", "fixtures", "release", "task4", "individual", "test.json")
TINY = ("{'model_type': 'llama', 'vocab_size': 49152, 'hidden_size': 16, 'intermediate_size': 32, "
        "'num_hidden_layers': 1, 'num_attention_heads': 2, 'num_key_value_heads': 1, "
        "'max_position_embeddings': 2048, 'rms_norm_eps': 1e-6, 'tie_word_embeddings': True, "
        "'rope_theta': 10000.0, 'bos_token_id': 1, 'eos_token_id': 2}")


def _run(args, env_drop=()):
  env = {k: v for k, v in os.environ.items() if k not in env_drop}
  env["PYTHONPATH"] = REPO
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)


def _one_error_line(proc, *words):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-2000:]
  for w in words:
    assert w in errors[0], errors[0]
  return errors[0]


def _evaluate(tmp_path, *overrides, env_drop=()):
  return _run(["launch.evaluate", "--config=configs/eval_gss_zero_shot.py", f"--workdir={tmp_path / 'run'}",
               f"--config.eval.data={TASK4}", "--config.eval.train_data=", *overrides], env_drop)


def test_config_typo_is_one_line_the_readme_prints(tmp_path):
  proc = _evaluate(tmp_path, "--config.eval.bach_size=3")
  line = _one_error_line(proc, "--config.eval.bach_size=3", "batch_size")
  readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  assert f"`{line}`" in readme, line


def test_model_folder_without_config_json(tmp_path):
  empty = tmp_path / "model"
  empty.mkdir()
  proc = _evaluate(tmp_path, f"--config.model.path={empty}")
  _one_error_line(proc, str(empty), "config.json")


def test_invalid_json_names_file_line_and_column(tmp_path):
  bad = tmp_path / "task4.json"
  bad.write_text(open(TASK4, encoding="utf-8").read().rstrip().rstrip("]") + ",]", encoding="utf-8")
  proc = _evaluate(tmp_path, f"--config.eval.data={bad}")
  _one_error_line(proc, str(bad), "line", "column")


def test_unsupported_adapter_feature_and_a_clean_cpu_start(tmp_path, smollm2_path):
  """Run without JAX_PLATFORMS (as a user would): the platform line, no TPU noise, then the
  adapter error as one line."""
  adapter = tmp_path / "adapter"
  adapter.mkdir()
  (adapter / "adapter_config.json").write_text(json.dumps(
      {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": True}))
  proc = _evaluate(tmp_path, f"--config.model.random_init={TINY}", f"--config.model.tokenizer={smollm2_path}",
                   f"--config.eval.adapter={adapter}", env_drop=("JAX_PLATFORMS",))
  _one_error_line(proc, "adapter_config.json", "DoRA")
  assert "running on cpu" in proc.stderr
  noise = [line for line in proc.stderr.splitlines()
           if ("TPU" in line or "libtpu" in line) and not line.startswith("surveylm_jax: ")]
  assert not noise, noise


def test_codebook_error_is_one_line(tmp_path):
  codebook = tmp_path / "bad.yaml"
  codebook.write_text("name: x\nsource: {csv: nowhere.csv}\nquestions: 3\n", encoding="utf-8")
  proc = _run(["tools.survey_to_alignsurvey", "--codebook", str(codebook), "--out", str(tmp_path / "out")])
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and str(codebook) in lines[0]


def test_unexpected_exceptions_keep_their_traceback(monkeypatch, capsys):
  from surveylm_jax import cli
  from surveylm_jax.data import DataError
  monkeypatch.setattr(sys, "argv", ["prog"])

  def buggy(argv):
    raise RuntimeError("a bug")

  with pytest.raises(RuntimeError, match="a bug"):
    cli.run(buggy)

  def bad_input(argv):
    raise DataError("holds no records", path="x.json", record=3, field="output")

  with pytest.raises(SystemExit) as e:
    cli.run(bad_input)
  assert e.value.code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "error: x.json: record 3: field 'output': holds no records")
