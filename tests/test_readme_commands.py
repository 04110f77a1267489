"""The README matches the code. Every fenced bash, python and yaml block is either run by the test
suite as printed, or its first line says what it needs (`# needs: ...`). Commands that are not run
are still checked: the modules they start exist, every `--config.KEY` they or the prose name is a
key of the config they load, and the flags of `python -m tools.X` are that tool's flags.

The commands claimed below run here in a scratch folder that holds links to the checkout's code
and checkpoint, so their relative paths (`data/...`, `runs/...`) resolve exactly as printed."""
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
SMOLLM2 = os.path.join(REPO, "checkpoints", "smollm2-135m-instruct")

# Unique text of each command or block the suite runs -> the test that runs it.
CLAIMS = {
    "make test": ".ci/run (CI runs exactly this)",
    "--codebook configs/surveys/gss2018_spending.yaml --out data/gss2018": "test_readme_commands",
    "--codebook configs/surveys/gss_abortion.yaml": "test_readme_commands",
    "--config=configs/tiny.py --workdir=runs/tiny": "test_readme_commands",
    "--config=configs/pipeline_tiny.py": "test_readme_commands",
    "# my_catalog.yaml": "test_readme_commands",
    "from surveylm_jax import inference, lora, models": "test_readme_commands",
    "# my_pkg/losses.py": "test_readme_extending",
    "# my_pkg/readouts.py": "test_readme_extending",
    "# my_pkg/baselines.py": "test_readme_extending",
    "# my_pkg/metrics.py": "test_readme_extending",
    "# my_pkg/language.py": "test_readme_extending",
    "--workdir=runs/letter_entropy": "test_readme_extending",
    "--workdir=runs/extended": "test_readme_extending",
}
# Keys the README prints on purpose as typos, to show what they print.
TYPOS = {"eval.bach_size", "trian.steps"}


@dataclasses.dataclass
class Block:
  lang: str
  line: int            # README line of the opening fence
  text: str

  @property
  def needs(self) -> str:
    first = self.text.splitlines()[0] if self.text else ""
    m = re.match(r"#\s*needs:\s*(.+)", first)
    return m.group(1) if m else ""

  def commands(self) -> list[str]:
    """Shell command lines, continuation lines joined, trailing comments kept."""
    lines = [re.sub(r"\s+", " ", line).strip() for line in self.text.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def bare(command: str) -> str:
  """A command line without its trailing comment."""
  return re.sub(r"\s+#.*$", "", command).strip()


def readme_blocks() -> list[Block]:
  lines = open(README, encoding="utf-8").read().splitlines()
  blocks, i = [], 0
  while i < len(lines):
    m = re.match(r"```(\w*)$", lines[i])
    if m:
      end = lines.index("```", i + 1)
      blocks.append(Block(m.group(1), i + 1, "\n".join(lines[i + 1:end]) + "\n"))
      i = end
    i += 1
  return blocks


def units() -> list[tuple[Block, str]]:
  """What must be claimed or say its needs: each bash command, each python/yaml block."""
  out = []
  for b in readme_blocks():
    if b.lang == "bash":
      out.extend((b, c) for c in b.commands())
    elif b.lang in ("python", "yaml"):
      out.append((b, b.text))
  return out


def claimed(key: str) -> str:
  hits = [text for _, text in units() if key in text]
  assert len(hits) == 1, f"README: {len(hits)} commands/blocks hold {key!r}"
  return hits[0]


def test_every_block_is_run_by_the_suite_or_says_what_it_needs():
  blocks = readme_blocks()
  assert all(b.lang in ("bash", "python", "yaml", "text") for b in blocks), \
      [(b.line, b.lang) for b in blocks if b.lang not in ("bash", "python", "yaml", "text")]
  unexplained = [(b.line, text.splitlines()[0]) for b, text in units()
                 if not b.needs and "# needs:" not in text and not any(k in text for k in CLAIMS)]
  assert not unexplained, f"README blocks neither run by a test nor saying '# needs:': {unexplained}"
  for key in CLAIMS:
    claimed(key)
  ci = open(os.path.join(REPO, ".ci", "run")).read()
  assert re.search(r"^make test$", ci, re.M)


def _config_keys(spec: str) -> ml_collections.ConfigDict:
  path, _, arg = spec.partition(":")
  assert os.path.exists(os.path.join(REPO, path)), spec
  module = importlib.import_module(path[:-3].replace("/", "."))
  return module.get_config(arg) if arg else module.get_config()


def _has_key(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      return False
    node = node[part]
  return True


def _all_configs():
  out = []
  for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
    if name.endswith(".py") and name != "__init__.py":
      module = importlib.import_module(f"configs.{name[:-3]}")
      out.append(module.get_config())
  from configs import eval_alignsurvey_sample, surveylm_qwen25_7b
  out += [eval_alignsurvey_sample.get_config(a) for a in eval_alignsurvey_sample.FILES]
  out += [surveylm_qwen25_7b.get_config(s) for s in surveylm_qwen25_7b.STAGES]
  return out


def test_every_printed_command_names_real_modules_configs_and_keys():
  """Not run is not unchecked: modules, config files and `--config.` keys of every command exist."""
  for block, command in [(b, c) for b, c in units() if b.lang == "bash"]:
    argv = shlex.split(bare(command))
    if argv[:2] != ["python", "-m"]:
      continue
    assert importlib.util.find_spec(argv[2]) is not None, (block.line, command)
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
      continue
    spec = spec.replace("$CFG", "configs/surveylm_qwen25_7b.py")
    config = _config_keys(spec)
    for a in argv:
      if a.startswith("--config."):
        key = a[len("--config."):].split("=", 1)[0]
        if key.startswith("loss.") and "extra_modules" in command:
          continue   # config.loss takes the names of registered losses
        assert _has_key(config, key), f"README line {block.line}: {spec} has no key {key!r}"


def test_config_keys_in_the_prose_exist_and_the_printed_typos_do_not():
  text = open(README, encoding="utf-8").read()
  configs = _all_configs()
  for key in sorted(set(re.findall(r"--config\.([\w.]+)", text))):
    if key.startswith("loss.") and key != "loss.token_ce":
      continue
    exists = any(_has_key(c, key) for c in configs)
    assert exists != (key in TYPOS), f"README names --config.{key}: in a config: {exists}"


def test_tool_flags_in_the_prose_are_the_tools_flags():
  text = open(README, encoding="utf-8").read()
  commands = re.findall(r"`(python -m [^`]+)`", text)
  assert commands
  for command in commands:
    argv = shlex.split(command)
    module = argv[2]
    spec = importlib.util.find_spec(module)
    assert spec is not None, command
    source = open(spec.origin, encoding="utf-8").read()
    for flag in [a[2:].split("=")[0] for a in argv[3:] if a.startswith("--")]:
      if flag.startswith("config."):
        continue
      assert re.search(rf"""DEFINE_\w+\(\s*["']{flag}["']|["']--{flag}["']""", source), \
          f"README: {command!r}: {module} has no flag --{flag}"


# ---------------------------------------------------------------------------------------------
# The commands and blocks this file claims, run as printed.

def _scratch(tmp_path):
  for name in ("configs", "launch", "surveylm_jax", "tools", "checkpoints"):
    os.symlink(os.path.join(REPO, name), tmp_path / name)
  return tmp_path


def _run(command: str, cwd) -> subprocess.CompletedProcess:
  argv = shlex.split(bare(command))
  assert argv[:2] == ["python", "-m"], command
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1",
             TOKENIZERS_PARALLELISM="false")
  proc = subprocess.run([sys.executable] + argv[1:], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, (command, proc.stderr[-3000:])
  return proc


def test_convert_then_train_then_pipeline_as_printed(tmp_path):
  """README "Converting your own survey" then "Training": the conversions write data/, which
  configs/tiny.py and configs/pipeline_tiny.py read."""
  cwd = _scratch(tmp_path)
  for key in ("configs/surveys/gss2018_spending.yaml --out data/gss2018",
              "--codebook configs/surveys/gss_abortion.yaml"):
    _run(claimed(key), cwd)
  report = json.loads((cwd / "data" / "gss2018" / "conversion_report.json").read_text())
  assert report["respondents_per_split"] == {"train": 1877, "test": 470}   # README: 470 held out
  abortion = json.loads((cwd / "data" / "gss_abortion_2018" / "foundation_quan" / "train.json").read_text())
  assert len(abortion) == 8478 and all("2018" in r["instruction"] for r in abortion)   # --keep year=2018

  _run(claimed("--config=configs/tiny.py --workdir=runs/tiny"), cwd)
  steps = [json.loads(l) for l in (cwd / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
  assert [s["step"] for s in steps if "loss" in s][-1] == 8
  assert (cwd / "runs" / "tiny" / "adapter" / "adapter_config.json").exists()

  command = claimed("--config=configs/pipeline_tiny.py")
  _run(command, cwd)
  workdir = cwd / shlex.split(bare(command))[-1].split("=", 1)[1]
  for stage in ("stage1", "stage2"):
    assert (workdir / stage / "adapter" / "adapter_model.safetensors").exists()
  # As the README says: no evaluation, since configs/pipeline_tiny.py sets no eval.data.
  assert not (workdir / "stage2" / "eval").exists()


def test_the_catalog_block_loads_and_orders_options(tmp_path):
  from surveylm_jax.data.question_catalog import QuestionCatalog
  text = claimed("# my_catalog.yaml")
  (tmp_path / "my_catalog.yaml").write_text(text, encoding="utf-8")
  catalog = QuestionCatalog.for_data([], str(tmp_path / "my_catalog.yaml"))
  order = catalog.resolve(None, "您觉得幸福吗？", ["幸福", "不幸福", "一般"])
  assert order.options == ("不幸福", "一般", "幸福") and order.ordinal and order.source == "user"
  vote = catalog.resolve(None, "Which party did you vote for?", ["Other", "Democrat", "Republican"])
  assert vote.options == ("Democrat", "Republican", "Other") and not vote.ordinal
  spending = catalog.resolve("natspac", "Are we spending too much, too little, or about right on space?",
                             ["too much", "about right", "too little"])
  assert spending.options == ("too little", "about right", "too much")


def test_the_models_and_adapters_block_runs(tmp_path, monkeypatch):
  """README "Models, adapters and export", with its names bound as its first line says: a tiny
  random Llama folder, a prompt, and an adapter PEFT itself wrote for that model."""
  import peft
  import torch
  import transformers

  text = claimed("from surveylm_jax import inference, lora, models")
  assert re.search(r"needs: .*path.*ids.*mask.*published_adapter_dir", text.splitlines()[0])
  monkeypatch.chdir(tmp_path)
  hf = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=64, tie_word_embeddings=True)
  torch.manual_seed(0)
  reference = transformers.LlamaForCausalLM(hf)
  reference.save_pretrained(tmp_path / "tiny_llama")
  adapter = peft.get_peft_model(reference, peft.LoraConfig(r=4, lora_alpha=8,
                                                           target_modules=["q_proj", "v_proj"]))
  for name, p in adapter.named_parameters():   # PEFT starts B at zero; make the merge visible
    if "lora_B" in name:
      torch.nn.init.normal_(p, std=0.1)
  adapter.save_pretrained(tmp_path / "published_adapter_dir")
  ids = np.array([[5, 9, 17, 3, 44, 2]], np.int32)
  mask = np.ones_like(ids)
  names = {"path": str(tmp_path / "tiny_llama"), "ids": ids, "mask": mask}
  exec(compile(text, "README.md", "exec"), names)   # pylint: disable=exec-used

  assert names["logits"].shape == (1, 6, 128) and names["out"].shape[0] == 1
  # The re-exported adapter holds PEFT's own tensors under PEFT's own names.
  from safetensors.numpy import load_file
  published = load_file(tmp_path / "published_adapter_dir" / "adapter_model.safetensors")
  exported = load_file(tmp_path / "adapter_out" / "adapter_model.safetensors")
  assert published.keys() == exported.keys()
  for k in published:
    np.testing.assert_array_equal(exported[k], published[k])
  # The merged folder loads in transformers and matches PEFT's own merge of the published adapter
  # into the same bfloat16 base ("out"); the merged weights are rounded to bfloat16 once more.
  base = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out", torch_dtype=torch.float32)
  want_model = peft.PeftModel.from_pretrained(base, tmp_path / "published_adapter_dir").merge_and_unload()
  got_model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "merged_out", torch_dtype=torch.float32)
  with torch.no_grad():
    x = torch.tensor(ids, dtype=torch.long)
    want, got = want_model(x).logits.numpy(), got_model(x).logits.numpy()
  # Measured: max difference 5.1e-4 at logits of magnitude <= 0.5 (one more bfloat16 rounding).
  np.testing.assert_allclose(got, want, atol=2e-3)
