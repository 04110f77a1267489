"""Loads an HF folder onto meshes of 8 simulated CPU devices and prints what the test checks as
JSON (a subprocess, since the device count is fixed at JAX start-up).

  python tests/models/sharded_loading_check.py equal FOLDER    # meshes vs one device
  python tests/models/sharded_loading_check.py memory FOLDER   # peak RSS growth, FSDP=8
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from configs import base  # noqa: E402
from surveylm_jax import models, sharding  # noqa: E402

RULES = base.get_config().sharding_rules

# What the rules table of configs/base.py gives on a (data, fsdp, tensor) mesh, written out by
# hand so a loader that ignored the rules (or mapped them wrongly) cannot pass.
EXPECTED_SPECS = {
    "['embed_tokens']['embedding']": P("tensor", "fsdp"),
    "['lm_head']['kernel']": P("fsdp", "tensor"),
    "['norm']['scale']": P("fsdp"),
    "['layers']['input_layernorm']['scale']": P(None, "fsdp"),
    "['layers']['post_attention_layernorm']['scale']": P(None, "fsdp"),
    "['layers']['self_attn']['q_proj']['kernel']": P(None, "fsdp", "tensor", None),
    "['layers']['self_attn']['k_proj']['kernel']": P(None, "fsdp", "tensor", None),
    "['layers']['self_attn']['v_proj']['kernel']": P(None, "fsdp", "tensor", None),
    "['layers']['self_attn']['o_proj']['kernel']": P(None, "tensor", None, "fsdp"),
    "['layers']['self_attn']['q_proj']['bias']": P(None, "tensor", None),
    "['layers']['self_attn']['k_proj']['bias']": P(None, "tensor", None),
    "['layers']['self_attn']['v_proj']['bias']": P(None, "tensor", None),
    "['layers']['mlp']['gate_proj']['kernel']": P(None, "fsdp", "tensor"),
    "['layers']['mlp']['up_proj']['kernel']": P(None, "fsdp", "tensor"),
    "['layers']['mlp']['down_proj']['kernel']": P(None, "tensor", "fsdp"),
}


def _flat(params):
  return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}


def _spec_matches(actual: P, expected: P) -> bool:
  """Equal up to trailing Nones (jax may or may not spell them out)."""
  def norm(spec):
    spec = list(spec)
    while spec and spec[-1] is None:
      spec.pop()
    return spec
  return norm(actual) == norm(expected)


def check_equal(folder: str) -> dict:
  _, single = models.load_pretrained(folder, dtype="float32")
  reference = {k: np.asarray(v) for k, v in _flat(single).items()}
  out = {"params": sorted(reference), "meshes": {}}
  for sizes in ({"data": 1, "fsdp": 8, "tensor": 1}, {"data": 1, "fsdp": 4, "tensor": 2}):
    mesh = sharding.make_mesh(sizes)
    _, params = models.load_pretrained(folder, dtype="float32", mesh=mesh, rules=RULES)
    report = {"mismatched_values": [], "wrong_sharding": [], "unchecked": []}
    for key, arr in _flat(params).items():
      if not np.array_equal(np.asarray(arr), reference[key]):
        report["mismatched_values"].append(key)
      expected = EXPECTED_SPECS.get(key)
      if expected is None:
        report["unchecked"].append(key)
        continue
      sh = arr.sharding
      if not (isinstance(sh, NamedSharding) and sh.mesh == mesh
              and _spec_matches(sh.spec, expected)):
        report["wrong_sharding"].append(f"{key}: {sh}")
      # Each device holds exactly its slice of the single-device value.
      for shard in arr.addressable_shards:
        if not np.array_equal(np.asarray(shard.data), reference[key][shard.index]):
          report["mismatched_values"].append(f"{key} shard {shard.index}")
    out["meshes"][f"fsdp{sizes['fsdp']}xtensor{sizes['tensor']}"] = report
  return out


def _status_kib(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise KeyError(field)


def check_memory(folder: str) -> dict:
  """Peak resident memory growth of a sharded load.

  Counted: the process's resident set, anonymous memory (numpy buffers, the simulated devices'
  buffers) AND file-backed pages (memory-mapped checkpoint pages while they are mapped), as
  /proc/self/status VmHWM reports it. The high-water mark is reset just before the load
  (writing 5 to /proc/self/clear_refs), so the growth is the load's own peak over the resident
  set at that moment, with jax, the mesh and the headers already in place.
  """
  mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
  jax.block_until_ready(jax.numpy.zeros(8) + 1)  # backends up before the baseline
  cfg, tensors = models.open_checkpoint(folder, dtype="float32")
  shardings = models.param_shardings(models.Transformer(cfg), mesh, RULES)
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  before = _status_kib("VmRSS")
  params = models.load_params(tensors, cfg, shardings)
  jax.block_until_ready(params)
  peak = _status_kib("VmHWM")
  leaves = jax.tree_util.tree_leaves(params)
  # Spot check the values against the file: first and last rows of two tensors.
  emb = np.asarray(params["embed_tokens"]["embedding"])
  gate = np.asarray(params["layers"]["mlp"]["gate_proj"]["kernel"][-1])
  last = cfg.num_hidden_layers - 1
  values_ok = (np.array_equal(emb[[0, -1]], tensors.get("model.embed_tokens.weight")[[0, -1]])
               and np.array_equal(gate[:, [0, -1]].T, tensors.get(
                   f"model.layers.{last}.mlp.gate_proj.weight")[[0, -1]]))
  files = {os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".safetensors")}
  return {
      "checkpoint_bytes": sum(os.path.getsize(f) for f in files),
      "params_bytes": int(sum(x.nbytes for x in leaves)),
      "largest_tensor_bytes": max(tensors.file(n).nbytes(n) for n in tensors.names()),
      "rss_before_bytes": before * 1024,
      "peak_growth_bytes": (peak - before) * 1024,
      "shards_per_param": sorted({len(x.addressable_shards) for x in leaves}),
      "values_ok": bool(values_ok),
  }


if __name__ == "__main__":
  mode, folder = sys.argv[1], sys.argv[2]
  result = check_equal(folder) if mode == "equal" else check_memory(folder)
  print(json.dumps(result))
