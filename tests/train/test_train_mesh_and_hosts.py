"""Parallelism is a config change: the same step on different meshes and process counts gives
the same numbers (tolerance 1e-5 on loss and updated LoRA params)."""
import json
import os
import socket
import subprocess
import sys

from tests.train.conftest import REPO, losses_by_step, run_train, tiny_overrides


def test_one_step_same_on_8_device_meshes():
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, os.path.join(REPO, "tests", "train",
                                                     "mesh_step_check.py")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert set(result["meshes"]) == {"(8, 1, 1)", "(1, 8, 1)", "(2, 2, 2)"}
  assert result["max_param_change"] > 1e-5 * 5   # the step really moved the params
  for mesh, diffs in result["meshes"].items():
    assert diffs["loss_diff"] <= 1e-5, (mesh, diffs)
    assert diffs["param_diff"] <= 1e-5, (mesh, diffs)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_log_the_same_losses_as_one(tmp_path, task4_files):
  overrides = tiny_overrides(*task4_files, **{"train.steps": 3, "checkpoint.every_steps": 3})
  single = tmp_path / "single"
  proc = run_train(single, overrides)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]

  port = _free_port()
  multi = tmp_path / "multi"
  procs = [run_train(multi, overrides, env={
      "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
      "JAX_PROCESS_ID": str(i), "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"})
      for i in range(2)]
  outs = [p.communicate(timeout=900)[0] for p in procs]
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  ref, got = losses_by_step(single), losses_by_step(multi)
  assert sorted(got) == [1, 2, 3]
  for step in ref:
    assert abs(ref[step] - got[step]) <= 1e-5, (step, ref[step], got[step])
