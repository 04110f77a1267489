"""How a process joins a multi-process run is a pure function of its environment
(`sharding.distributed_mode`): each launcher's variables, single-host cases that must stay one
process, and partial setups that must fail naming the variable. Nothing is started here except
in the last test, which checks that a bad setup reaches the user as one `error:` line."""
import os
import subprocess
import sys

import pytest

from surveylm_jax import sharding
from surveylm_jax.cli import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mode(**env):
  return sharding.distributed_mode(env)


def test_one_process_starts_nothing():
  assert mode() == (None, {})
  assert mode(HOME="/root", PATH="/usr/bin") == (None, {})


# ------------------------------------------------------------------ explicit JAX_* variables

def test_explicit_variables_are_passed_and_jax_detection_is_off():
  assert mode(JAX_COORDINATOR_ADDRESS="10.0.0.1:1234", JAX_NUM_PROCESSES="4",
              JAX_PROCESS_ID="3") == ("explicit", dict(
                  coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
                  cluster_detection_method="deactivate"))


def test_explicit_variables_win_over_a_surrounding_cluster():
  got, _ = mode(JAX_COORDINATOR_ADDRESS="h:1", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="0",
                SLURM_JOB_ID="7", SLURM_NTASKS="8", TPU_WORKER_HOSTNAMES="a,b")
  assert got == "explicit"


@pytest.mark.parametrize("given,missing", [
    (dict(JAX_COORDINATOR_ADDRESS="h:1"), "JAX_NUM_PROCESSES, JAX_PROCESS_ID"),
    (dict(JAX_COORDINATOR_ADDRESS="h:1", JAX_NUM_PROCESSES="2"), "JAX_PROCESS_ID"),
    (dict(JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1"), "JAX_COORDINATOR_ADDRESS"),
    (dict(JAX_PROCESS_ID="0"), "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES"),
])
def test_partial_explicit_setup_names_what_is_missing(given, missing):
  with pytest.raises(ConfigError, match=f"but {missing} not"):
    mode(**given)


@pytest.mark.parametrize("num,pid,words", [
    ("two", "0", "JAX_NUM_PROCESSES='two' is not an integer"),
    ("2", "2", "JAX_PROCESS_ID=2 with JAX_NUM_PROCESSES=2"),
    ("0", "0", "JAX_NUM_PROCESSES=0"),
])
def test_malformed_explicit_numbers_are_reported(num, pid, words):
  with pytest.raises(ConfigError, match=words):
    mode(JAX_COORDINATOR_ADDRESS="h:1", JAX_NUM_PROCESSES=num, JAX_PROCESS_ID=pid)


# ------------------------------------------------------------------ Slurm

SRUN = dict(SLURM_JOB_ID="42", SLURM_PROCID="1", SLURM_LOCALID="1",
            SLURM_STEP_NODELIST="node[01-02]")


def test_slurm_one_task_per_gpu_leaves_devices_to_jax():
  got, kwargs = mode(**SRUN, SLURM_NTASKS="16", SLURM_STEP_NUM_TASKS="16",
                     SLURM_STEP_NUM_NODES="2", CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
  assert got == "slurm"
  assert kwargs == dict(num_processes=16, process_id=1)


def test_slurm_one_task_per_node_keeps_every_gpu_of_the_node():
  # jax alone would give each task only GPU <SLURM_LOCALID>.
  _, kwargs = mode(**SRUN, SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_STEP_NUM_NODES="2",
                   CUDA_VISIBLE_DEVICES="0,1,2,3")
  assert kwargs == dict(num_processes=2, process_id=1, local_device_ids=[0, 1, 2, 3])
  _, kwargs = mode(**SRUN, SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="2", SLURM_GPUS_ON_NODE="8")
  assert kwargs["local_device_ids"] == list(range(8))


def test_slurm_task_bound_to_its_own_gpu_uses_it():
  # --ntasks-per-node=8 --gpus-per-task=1: each task sees one GPU, as its device 0.
  _, kwargs = mode(**SRUN, SLURM_NTASKS="16", SLURM_STEP_NUM_NODES="2", CUDA_VISIBLE_DEVICES="5")
  assert kwargs == dict(num_processes=16, process_id=1, local_device_ids=[0])


def test_slurm_without_gpus_leaves_devices_to_jax():
  _, kwargs = mode(**SRUN, SLURM_NTASKS="2", SLURM_NNODES="2")
  assert kwargs == dict(num_processes=2, process_id=1)


def test_slurm_single_task_is_one_process():
  assert mode(SLURM_JOB_ID="42", SLURM_NTASKS="1", SLURM_PROCID="0") == (None, {})
  assert mode(SLURM_JOB_ID="42") == (None, {})     # salloc shell, no task count
  # `srun -n1` inside a larger allocation: the step's count decides, not the job's.
  assert mode(**SRUN, SLURM_NTASKS="8", SLURM_STEP_NUM_TASKS="1") == (None, {})


def test_slurm_outside_srun_says_to_use_srun():
  with pytest.raises(ConfigError, match="SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NODELIST not "
                                        "set: start the training with srun"):
    mode(SLURM_JOB_ID="42", SLURM_NTASKS="4")


def test_off_keeps_one_process_inside_an_allocation():
  assert mode(**SRUN, SLURM_NTASKS="4", SURVEYLM_DISTRIBUTED="off") == (None, {})


# ------------------------------------------------------------------ TPU

@pytest.mark.parametrize("env", [
    dict(TPU_WORKER_HOSTNAMES="t1k-w-0,t1k-w-1,t1k-w-2,t1k-w-3", TPU_WORKER_ID="2"),
    dict(TPU_PROCESS_ADDRESSES="localhost:8476,localhost:8477", CLOUD_TPU_TASK_ID="1"),
    dict(TPU_WORKER_HOSTNAMES="w-0", MEGASCALE_NUM_SLICES="2", MEGASCALE_SLICE_ID="1"),
    dict(TPU_WORKER_HOSTNAMES="w-0", MEGASCALE_COORDINATOR_ADDRESS="10.0.0.2"),
    dict(SURVEYLM_DISTRIBUTED="tpu"),         # Cloud TPU VM via launch/tpu_vm.sh
])
def test_multi_host_tpu_uses_jax_discovery(env):
  assert mode(**env) == ("tpu", {})


@pytest.mark.parametrize("env", [
    dict(TPU_WORKER_HOSTNAMES="t1v-n-0", TPU_WORKER_ID="0"),   # single-host slice (v4-8, v5e-8)
    dict(TPU_WORKER_HOSTNAMES="localhost"),
    dict(TPU_WORKER_HOSTNAMES="w-0", MEGASCALE_NUM_SLICES="1"),
    dict(TPU_WORKER_HOSTNAMES=""),
])
def test_single_host_tpu_starts_nothing(env):
  assert mode(**env) == (None, {})


def test_unknown_override_is_an_error():
  with pytest.raises(ConfigError, match="SURVEYLM_DISTRIBUTED='slurmm': expected 'off' or 'tpu'"):
    mode(SURVEYLM_DISTRIBUTED="slurmm")


# ------------------------------------------------------------------ what the user sees

def test_partial_setup_is_one_error_line_from_the_trainer(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS="h:1")
  env.pop("JAX_NUM_PROCESSES", None)
  env.pop("JAX_PROCESS_ID", None)
  proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/tiny.py",
                         f"--workdir={tmp_path}"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert errors == ["error: JAX_COORDINATOR_ADDRESS set but JAX_NUM_PROCESSES, JAX_PROCESS_ID "
                    "not: a multi-process run started by hand needs all of "
                    "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID"], proc.stderr
