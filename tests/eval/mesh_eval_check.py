"""Runs `runner.evaluate` on the release-layout fixtures (tasks 1 and 4) with a tiny random model on
one device and on meshes of the simulated devices; prints, per run, every prediction row's
option distribution and generated text as one JSON line (last line of stdout).

Used by tests/eval/test_eval_sharded.py with XLA_FLAGS=--xla_force_host_platform_device_count=8;
`argv[1]` = output folder, `argv[2]` = an HF model folder, `argv[3]` = a PEFT adapter of it,
`argv[4:]` = meshes as data,fsdp,tensor ("one" = one device). The model loads sharded from the
folder (each process reads its slices) and the adapter is merged on the mesh.
Started as several `jax.distributed` processes (JAX_COORDINATOR_ADDRESS etc. set), each process
gets its own output folder `process<i>` under argv[1], so what each one wrote can be told apart:
only process 0 may write."""
import json
import os
import sys

import jax

from configs import base
from surveylm_jax import sharding
from surveylm_jax.eval import runner
from surveylm_jax.inference import placement

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(REPO, "tests", "data", "fixtures", "release")
# Scoring (task 4, its groups, position bias) and generation (task 1); tasks 2-3 generate the same way.
FILES = ("task4/individual/test.json", "task4/group/test.json", "task1/test.json")


def config(mesh: str, model_dir: str, adapter_dir: str):
  c = base.get_config()
  c.model.path = model_dir
  c.eval.adapter = adapter_dir
  c.eval.data = ",".join(os.path.join(RELEASE, f) for f in FILES)
  c.eval.train_data = os.path.join(RELEASE, "task4", "individual", "train.jsonl")
  c.eval.batch_size = 8
  c.eval.position_bias_records = 4
  c.eval.noise_floor_draws = 10
  c.eval.fairness_min_records = 1
  c.eval.max_new_tokens_task.task1 = 4
  if mesh != "one":
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = (int(x) for x in mesh.split(","))
  return c


def main(out: str, model_dir: str, adapter_dir: str, meshes):
  sharding.initialize_distributed()   # a no-op for one process
  if jax.process_count() > 1:
    out = os.path.join(out, f"process{jax.process_index()}")
  runs = {}
  for mesh in meshes:
    workdir = os.path.join(out, mesh.replace(",", "x"))
    where = placement.Placement() if mesh == "one" else None
    metrics = runner.evaluate(config(mesh, model_dir, adapter_dir), workdir, where=where)
    _, params, _ = runner.load_model(config(mesh, model_dir, adapter_dir), where)
    kernel = params["layers"]["self_attn"]["q_proj"]["kernel"]
    if jax.process_index() > 0:   # every process joins the computations above; process 0 reports
      continue
    with open(os.path.join(workdir, "eval", "predictions.jsonl")) as f:
      rows = [json.loads(line) for line in f]
    runs[mesh] = {"q_proj_spec": str(getattr(kernel.sharding, "spec", None)),
                  "q_proj_shard_shape": list(kernel.addressable_shards[0].data.shape),
                  "rows": {r["id"] + "|" + r["task"]: [r.get("predicted_distribution"), r.get("generated")]
                           for r in rows},
                  "position_bias": metrics["position_bias"] is not None,
                  "devices": jax.device_count(), "processes": jax.process_count()}
  if jax.process_index() == 0:
    print(json.dumps(runs))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
