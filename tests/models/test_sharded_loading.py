"""Sharded loading of HF folders, checkpoint validation, and complete saved folders.

The mesh and memory checks run `sharded_loading_check.py` in a subprocess with 8 simulated CPU
devices (the device count is fixed when jax starts).
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers

from surveylm_jax import lora, models
from surveylm_jax.models import hf_layout, safetensors_io
from surveylm_jax.models.safetensors_io import write_sharded

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(REPO, "tests", "models", "sharded_loading_check.py")

TINY_QWEN2 = dict(model_type="qwen2", vocab_size=256, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                  tie_word_embeddings=False, eos_token_id=2)


def _tiny(hf=TINY_QWEN2, seed=0):
  model = models.Transformer(models.config_from_hf_dict(dict(hf)))
  return model, models.init_params(model, jax.random.PRNGKey(seed))


@pytest.fixture(scope="module")
def tiny():
  return _tiny()


def _run_check(mode, folder, timeout=600):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, CHECK, mode, str(folder)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ meshes


def test_mesh_loads_equal_single_device_with_expected_shardings(tmp_path, tiny):
  model, params = tiny
  # bfloat16 on disk, float32 params: the cast happens per slice. A small shard limit spreads
  # the tensors over many files, so slices come from several shards.
  models.save_pretrained(tmp_path, model, params, dtype="bfloat16", max_shard_bytes=20_000)
  assert (tmp_path / "model.safetensors.index.json").exists()
  result = _run_check("equal", tmp_path)
  assert len(result["params"]) == 15     # qwen2 untied: biases and lm_head included
  assert set(result["meshes"]) == {"fsdp8xtensor1", "fsdp4xtensor2"}
  for mesh, report in result["meshes"].items():
    assert report == {"mismatched_values": [], "wrong_sharding": [], "unchecked": []}, mesh


def test_single_device_load_matches_the_saved_params_after_cast(tmp_path, tiny):
  model, params = tiny
  models.save_pretrained(tmp_path, model, params, dtype="bfloat16")
  _, loaded = models.load_pretrained(tmp_path, dtype="float32")
  import ml_dtypes
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params),
                          jax.tree_util.tree_leaves(loaded)):
    expected = np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(b), expected, err_msg=jax.tree_util.keystr(path))
    assert b.dtype == np.float32


def test_source_box_reads_exactly_the_slice_of_every_layout():
  """Every slice of every param equals the same slice of the whole converted tensor."""
  cfg = models.config_from_hf_dict(dict(TINY_QWEN2, model_type="qwen3", head_dim=8))
  rng = np.random.default_rng(0)
  for name, spec in hf_layout.expected_tensors(cfg):
    hf = rng.standard_normal(spec.hf_shape(cfg)).astype(np.float32)
    ours = spec.to_ours(hf, cfg)
    np.testing.assert_array_equal(spec.to_hf(ours, cfg), hf)
    for _ in range(5):
      box = []
      for n in ours.shape:
        a = int(rng.integers(0, n))
        box.append((a, int(rng.integers(a + 1, n + 1))))
      box = tuple(box)
      hf_box, _ = spec.source_box(cfg, box)
      piece = hf[tuple(slice(a, b) for a, b in hf_box)]
      np.testing.assert_array_equal(spec.read_box(piece, cfg, box),
                                    ours[tuple(slice(a, b) for a, b in box)], err_msg=name)


# ------------------------------------------------------------------ memory

# Llama with a few wide layers: ~1.24 GB of float32, largest tensor 64 MiB (an MLP matrix).
WIDE_LLAMA = dict(model_type="llama", vocab_size=16384, hidden_size=2048, intermediate_size=8192,
                  num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=4,
                  tie_word_embeddings=False)


def _write_random_checkpoint(folder, hf):
  """Streams random float32 tensors into shards of <= 256 MiB: writing holds one shard."""
  cfg = models.config_from_hf_dict(dict(hf))
  rng = np.random.default_rng(0)

  def tensors():
    for name, spec in hf_layout.expected_tensors(cfg):
      yield name, rng.random(spec.hf_shape(cfg), dtype=np.float32)
  (folder / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
  write_sharded(folder, tensors(), max_shard_bytes=256 * 1024 ** 2)


def test_sharded_load_peak_memory_is_params_plus_one_tensor(tmp_path):
  folder = tmp_path / "wide"
  folder.mkdir()
  try:
    _write_random_checkpoint(folder, WIDE_LLAMA)
    m = _run_check("memory", folder)
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  mib = {k: round(v / 2 ** 20, 1) for k, v in m.items() if k.endswith("_bytes")}
  print(f"\nsharded load memory (MiB): {mib}")
  assert m["checkpoint_bytes"] >= 10 ** 9
  assert m["values_ok"]
  assert m["shards_per_param"] == [8]
  bound = m["params_bytes"] + m["largest_tensor_bytes"] + 0.1 * m["checkpoint_bytes"]
  assert m["peak_growth_bytes"] <= bound, (mib, round(bound / 2 ** 20, 1))


# ------------------------------------------------------------------ validation


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny):
  """The tiny model saved once as one file and once sharded; tests edit copies."""
  root = tmp_path_factory.mktemp("pristine")
  model, params = tiny
  models.save_pretrained(root / "single", model, params)
  models.save_pretrained(root / "sharded", model, params, max_shard_bytes=40_000)
  return root


@pytest.fixture
def single_file(pristine, tmp_path):
  return shutil.copytree(pristine / "single", tmp_path / "single")


@pytest.fixture
def sharded_folder(pristine, tmp_path):
  return shutil.copytree(pristine / "sharded", tmp_path / "sharded")


def _header(path):
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    return n, json.loads(f.read(n))


def test_truncated_file_names_file_and_tensor(single_file):
  path = single_file / "model.safetensors"
  header_len, header = _header(path)
  data = os.path.getsize(path) - 8 - header_len
  with open(path, "r+b") as f:
    f.truncate(8 + header_len + data // 2)
  # The first tensor cut by the truncation: it starts before the cut and ends after it.
  cut = next(n for n, info in header.items() if n != "__metadata__"
             and info["data_offsets"][0] < data // 2 < info["data_offsets"][1])
  with pytest.raises(models.SafetensorsError,
                     match=rf"model\.safetensors: tensor '{cut}' needs data bytes .* truncated"):
    models.load_pretrained(single_file)


def test_missing_shard_names_index_shard_and_tensor(sharded_folder):
  index = json.loads((sharded_folder / "model.safetensors.index.json").read_text())
  shard = sorted(set(index["weight_map"].values()))[1]
  first = next(n for n, s in index["weight_map"].items() if s == shard)
  os.remove(sharded_folder / shard)
  with pytest.raises(models.SafetensorsError,
                     match=rf"index\.json: shard '{shard}' listed for tensor '{first}' is "
                           rf"missing"):
    models.load_pretrained(sharded_folder)


def test_tensor_listed_in_index_but_absent_from_its_shard(sharded_folder):
  index_path = sharded_folder / "model.safetensors.index.json"
  index = json.loads(index_path.read_text())
  name = "model.layers.1.mlp.up_proj.weight"
  other = next(s for s in sorted(set(index["weight_map"].values()))
               if s != index["weight_map"][name])
  index["weight_map"][name] = other
  index_path.write_text(json.dumps(index))
  with pytest.raises(models.SafetensorsError,
                     match=rf"tensor '{name}' is listed in shard '{other}' but .*{other} does "
                           rf"not contain it"):
    models.load_pretrained(sharded_folder)


def _rewrite_header(path, edit):
  header_len, header = _header(path)
  with open(path, "rb") as f:
    f.seek(8 + header_len)
    data = f.read()
  edit(header)
  blob = json.dumps(header).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)) + blob + data)


def test_overlapping_header_offsets_are_named(single_file):
  path = single_file / "model.safetensors"

  def edit(header):
    # Same size, so each entry alone is consistent: only the overlap is wrong.
    a, b = "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.gate_proj.weight"
    header[b]["data_offsets"] = list(header[a]["data_offsets"])
  _rewrite_header(path, edit)
  with pytest.raises(models.SafetensorsError, match=r"model\.safetensors: tensors .*overlap"):
    models.load_pretrained(single_file)


def test_offsets_inconsistent_with_shape_are_named(single_file):
  path = single_file / "model.safetensors"
  name = "model.norm.weight"
  _rewrite_header(path, lambda h: h[name].update(shape=[h[name]["shape"][0] * 2]))
  with pytest.raises(models.SafetensorsError,
                     match=rf"model\.safetensors: tensor '{name}': header gives 256 bytes .* "
                           r"needs 512"):
    models.load_pretrained(single_file)


def test_corrupt_header_is_named(single_file):
  path = single_file / "model.safetensors"
  with open(path, "r+b") as f:
    f.seek(8)
    f.write(b"\xff\xfe{{")
  with pytest.raises(models.SafetensorsError, match=r"model\.safetensors: unreadable safetensors "
                                                    r"header"):
    models.load_pretrained(single_file)
  with open(path, "r+b") as f:
    f.write(struct.pack("<Q", 10 ** 12))
  with pytest.raises(models.SafetensorsError, match=r"model\.safetensors: corrupt or truncated "
                                                    r"header \(it claims 1000000000000 bytes"):
    models.load_pretrained(single_file)


def test_ranged_reads_match_memory_mapped_reads(single_file, monkeypatch):
  """The remote read path (seek + readinto in chunks of rows) on a real file, against memmap."""
  monkeypatch.setattr(safetensors_io, "REMOTE_CHUNK_BYTES", 1000)   # many chunks per read
  local = safetensors_io.SafetensorsFile(single_file / "model.safetensors")
  ranged = safetensors_io.SafetensorsFile(single_file / "model.safetensors")
  ranged.remote = True          # what `paths.is_remote` says for gs:// and other URIs
  rng = np.random.default_rng(0)
  for name in local.names():
    shape = local.shape(name)
    boxes = [tuple((0, n) for n in shape)]
    for _ in range(3):
      box = []
      for n in shape:
        a = int(rng.integers(0, n))
        box.append((a, int(rng.integers(a + 1, n + 1))))
      boxes.append(tuple(box))
    for box in boxes:
      np.testing.assert_array_equal(ranged.read(name, box), local.read(name, box),
                                    err_msg=f"{name} {box}")
    np.testing.assert_array_equal(ranged.get(name), local.get(name))


def test_cli_prints_one_line_for_a_truncated_checkpoint(single_file, tmp_path_factory):
  path = single_file / "model.safetensors"
  _, header = _header(path)
  last = max((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"])
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 1000)
  workdir = tmp_path_factory.mktemp("eval")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", "--config=configs/eval_gss_zero_shot.py",
       f"--workdir={workdir}", f"--config.model.path={single_file}",
       "--config.eval.data=tests/data/fixtures/release/task4/individual/test.json",
       "--config.eval.train_data="],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  lines = [ln for ln in out.stderr.splitlines() if not ln.startswith("surveylm_jax: no TPU")]
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
  assert f"model.safetensors: tensor '{last}' needs data bytes" in lines[0], lines[0]


# ------------------------------------------------------------------ complete folders


def test_save_pretrained_with_tokenizer_is_a_complete_hf_folder(tmp_path, smollm2_path):
  hf = dict(TINY_QWEN2, model_type="llama", vocab_size=49152, hidden_size=32,
            intermediate_size=64, num_hidden_layers=2)
  model, params = _tiny(hf)
  out = tmp_path / "complete"
  models.save_pretrained(out, model, params, tokenizer_from=smollm2_path)
  assert (out / "tokenizer.json").exists() and (out / "tokenizer_config.json").exists()
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  reference = transformers.AutoTokenizer.from_pretrained(smollm2_path)
  text = "Which class do you belong to? C. middle class"
  assert tokenizer(text)["input_ids"] == reference(text)["input_ids"]
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
  np.testing.assert_array_equal(reloaded.model.embed_tokens.weight.detach().numpy(),
                                np.asarray(params["embed_tokens"]["embedding"]))
  # A merged LoRA export is a whole folder too (b starts at zero: merged == base).
  cfg = lora.LoraConfig(rank=2, targets=("q_proj", "v_proj"))
  adapter = lora.init(params, cfg, jax.random.PRNGKey(1))
  merged = tmp_path / "merged"
  lora.save_merged(merged, model, params, adapter, cfg, tokenizer_from=smollm2_path)
  assert transformers.AutoTokenizer.from_pretrained(str(merged))(text)["input_ids"] == \
      reference(text)["input_ids"]
  transformers.AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32)


def test_save_pretrained_rejects_a_tokenizer_folder_without_tokenizer(tmp_path, tiny):
  model, params = tiny
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(models.CheckpointError, match="empty: no tokenizer files to copy"):
    models.save_pretrained(tmp_path / "out", model, params, tokenizer_from=empty)
  assert not (tmp_path / "out" / "model.safetensors").exists()
