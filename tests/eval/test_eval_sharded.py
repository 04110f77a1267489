"""Sharded evaluation: on 8 simulated CPU devices, `runner.evaluate` with the params sharded by
the training rules (FSDP=8, and FSDP=4 x tensor=2) and the records spread over the batch axes
gives the one-device option probabilities (<= 1e-5; measured 6e-7) and the same greedy text, on
the release-layout fixtures (task 4 scored with its groups and position bias, task 1 generated;
tests/eval/mesh_eval_check.py). Then two `jax.distributed` processes x 2 devices, FSDP=4 across
them: the same predictions, and only process 0 writes."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


SCRIPT = os.path.join(REPO, "tests", "eval", "mesh_eval_check.py")
# Heads, key/value heads, embedding and MLP all divide by the mesh axes they are sharded over.
TINY = dict(model_type="llama", vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6,
            tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)


def _model_and_adapter(folder, tokenizer):
  """A tiny random Llama as an HF folder (SmolLM2's tokenizer) and a PEFT adapter with B != 0."""
  import jax
  from surveylm_jax import lora, models
  model = models.Transformer(models.config_from_hf_dict(TINY))
  params = models.init_params(model, jax.random.PRNGKey(0))
  models.save_pretrained(str(folder / "model"), model, params, tokenizer_from=tokenizer)
  cfg = lora.LoraConfig(rank=4, alpha=8)
  adapter = lora.init(params, cfg, jax.random.PRNGKey(1))
  adapter = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(len(str(path))), x.shape)
      if str(path[-1]).strip("[]'\"") == "b" else x, adapter)
  lora.save_peft(str(folder / "adapter"), adapter, cfg)
  return str(folder / "model"), str(folder / "adapter")


def _env(devices: int, **extra):
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _same_predictions(rows, reference, where):
  assert rows.keys() == reference.keys(), where
  for k, (p, g) in reference.items():
    if p is not None:
      np.testing.assert_allclose(rows[k][0], p, atol=1e-5, err_msg=f"{where} {k}")
    assert rows[k][1] == g, (where, k)


def test_meshes_and_processes_give_the_one_device_predictions(tmp_path, smollm2_path):
  model_dir, adapter_dir = _model_and_adapter(tmp_path, smollm2_path)
  proc = subprocess.run([sys.executable, SCRIPT, str(tmp_path), model_dir, adapter_dir, "one", "1,8,1", "1,4,2"],
                        cwd=REPO, env=_env(8), capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  runs = json.loads(proc.stdout.strip().splitlines()[-1])
  one = runs["one"]
  assert one["q_proj_spec"] == "None" or one["q_proj_shard_shape"] == [2, 32, 4, 8]
  # q_proj kernel [layers, embed, heads, head_dim]: embed over fsdp, heads over tensor.
  assert runs["1,8,1"]["q_proj_shard_shape"] == [2, 4, 4, 8]
  assert runs["1,4,2"]["q_proj_shard_shape"] == [2, 8, 2, 8]
  scored = [k for k, (p, _) in one["rows"].items() if p is not None]
  generated = [k for k, (_, g) in one["rows"].items() if g]
  assert len(scored) >= 20 and len(generated) >= 8   # task 4 (+ groups) scored, task 1 generated
  for mesh in ("1,8,1", "1,4,2"):
    _same_predictions(runs[mesh]["rows"], one["rows"], mesh)
    assert runs[mesh]["position_bias"]
  # Written once, by the one process: each run folder holds its own complete outputs.
  for name in ("one", "1x8x1", "1x4x2"):
    out = tmp_path / name / "eval"
    assert (out / "metrics.json").exists() and (out / "report.md").exists()

  # Two processes x 2 devices, FSDP over all 4: arrays span the processes.
  multi = tmp_path / "multi"
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, SCRIPT, str(multi), model_dir, adapter_dir, "1,4,1"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                     JAX_PROCESS_ID=str(i), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo"))
           for i in range(2)]
  outs = [p.communicate(timeout=1200) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  got = json.loads(outs[0][0].strip().splitlines()[-1])["1,4,1"]
  assert got["processes"] == 2 and got["devices"] == 4 and got["q_proj_shard_shape"] == [2, 8, 4, 8]
  _same_predictions(got["rows"], one["rows"], "2 processes")
  assert (multi / "process0" / "1x4x1" / "eval" / "metrics.json").exists()
  assert not (multi / "process1" / "1x4x1" / "eval").exists()   # process 1 wrote nothing
