"""The shell launchers: they parse, say how to name the checkout on the workers, and hand the
training command to every worker with its arguments intact. `gcloud` and `srun` cannot run here;
stand-ins on PATH run the command they are given on this machine, in a fake home folder whose
"checkout" records how it was started."""
import os
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TPU_VM = os.path.join(REPO, "launch", "tpu_vm.sh")
SLURM = os.path.join(REPO, "launch", "slurm.sbatch")

# Prints where it runs, the distributed switch and one argument per line.
RECORDING_PYTHON = """#!/usr/bin/env bash
echo "cwd=$PWD"
echo "SURVEYLM_DISTRIBUTED=${SURVEYLM_DISTRIBUTED-unset}"
for a in "$@"; do echo "arg=$a"; done
"""
# gcloud compute tpus tpu-vm ssh NAME --zone Z --worker=all --command CMD: runs CMD in $HOME.
FAKE_GCLOUD = """#!/usr/bin/env bash
while [ $# -gt 0 ]; do
  if [ "$1" = "--command" ]; then cd "$HOME" && exec bash -c "$2"; fi
  shift
done
exit 9
"""
FAKE_SRUN = """#!/usr/bin/env bash
shift   # --kill-on-bad-exit=1
exec "$@"
"""


def _executable(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


@pytest.fixture
def worker(tmp_path):
  """(env with gcloud/srun stand-ins first on PATH and HOME=tmp/home, checkout maker)."""
  bin_dir, home = tmp_path / "bin", tmp_path / "home"
  _executable(str(bin_dir / "gcloud"), FAKE_GCLOUD)
  _executable(str(bin_dir / "srun"), FAKE_SRUN)
  home.mkdir()
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(home))
  env.pop("REPO_DIR", None)

  def checkout(relative):
    _executable(str(home / relative / ".venv" / "bin" / "python"), RECORDING_PYTHON)
    return str(home / relative)
  return env, checkout


def _lines(out, prefix):
  return [line[len(prefix):] for line in out.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("script", [TPU_VM, SLURM])
def test_launchers_parse(script):
  proc = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr


def test_tpu_vm_usage_names_the_checkout_option():
  proc = subprocess.run(["bash", TPU_VM, "--help"], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert "--repo-dir DIR" in proc.stdout and "REPO_DIR" in proc.stdout
  assert f"default: {os.path.basename(REPO)}" in proc.stdout
  short = subprocess.run(["bash", TPU_VM, "my-tpu", "zone"], capture_output=True, text=True)
  assert short.returncode == 2 and "--repo-dir" in short.stderr


def test_tpu_vm_runs_in_the_named_checkout_with_arguments_intact(worker):
  env, checkout = worker
  where = checkout("code/surveylm")
  args = ["my-tpu", "us-east5-a", "configs/stage2_task4.py", "gs://bucket/runs/t 4",
          "--config.data.train=a b.json", "--config.lora.targets=('q_proj', 'v_proj')"]
  for repo_args, extra_env in ((["--repo-dir", "code/surveylm"], {}),
                               (["--repo-dir=~/code/surveylm"], {}),
                               ([], {"REPO_DIR": "code/surveylm"})):
    proc = subprocess.run(["bash", TPU_VM, *repo_args, *args], env=dict(env, **extra_env),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout, "cwd=") == [where]
    assert _lines(proc.stdout, "SURVEYLM_DISTRIBUTED=") == ["tpu"]
    assert _lines(proc.stdout, "arg=") == [
        "-m", "launch.train", "--config=configs/stage2_task4.py",
        "--workdir=gs://bucket/runs/t 4", *args[4:]]


def test_tpu_vm_default_checkout_is_this_ones_name_in_the_home(worker):
  env, checkout = worker
  where = checkout(os.path.basename(REPO))
  proc = subprocess.run(["bash", TPU_VM, "t", "z", "c.py", "w"], env=env, capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stderr
  assert _lines(proc.stdout, "cwd=") == [where]
  assert _lines(proc.stdout, "arg=") == ["-m", "launch.train", "--config=c.py", "--workdir=w"]


def test_tpu_vm_says_when_a_worker_lacks_the_checkout(worker):
  env, _ = worker
  proc = subprocess.run(["bash", TPU_VM, "--repo-dir", "elsewhere", "t", "z", "c.py", "w"],
                        env=env, capture_output=True, text=True)
  assert proc.returncode == 2
  assert "no checkout at elsewhere (use --repo-dir)" in proc.stderr


def test_slurm_runs_each_task_in_the_checkout(worker, tmp_path):
  env, checkout = worker
  where = checkout("cluster/surveylm")
  proc = subprocess.run(["bash", SLURM, "configs/stage2_task4.py", "runs/t4",
                         "--config.mesh.fsdp=16"], env=dict(env, REPO_DIR=where),
                        capture_output=True, text=True, cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  assert _lines(proc.stdout, "cwd=") == [where]
  # Slurm's own variables decide (surveylm_jax.sharding.distributed_mode), not a switch.
  assert _lines(proc.stdout, "SURVEYLM_DISTRIBUTED=") == ["unset"]
  assert _lines(proc.stdout, "arg=") == ["-m", "launch.train", "--config=configs/stage2_task4.py",
                                         "--workdir=runs/t4", "--config.mesh.fsdp=16"]
  short = subprocess.run(["bash", SLURM, "only-config"], capture_output=True, text=True)
  assert short.returncode == 2 and "usage:" in short.stderr
