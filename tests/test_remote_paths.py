"""A run whose every input and output sits on `gs://`, against a local GCS emulator, offline.

`launch.train` (twice: the second run resumes from the bucket's checkpoint), then
`launch.evaluate` of its adapter (configs/tiny.py, fixture task-4 data), run as a user runs
them, with the workdir, the data files and the tokenizer folder on a bucket of an in-memory
`gcp-storage-emulator` started here (tests/gcs_emulator.py). Every path goes through the real
`gs://` code of each library: epath -> fsspec/gcsfs (data, tokenizer, config.json, metrics.jsonl,
adapter, eval outputs, plots), orbax -> tensorstore's gcs driver (checkpoints), tensorboardX ->
google-cloud-storage (event files). The commands run in an empty folder, so anything written to
a local folder named `gs:` instead is seen.

Not covered here: model weights on gs:// (configs/tiny.py's model is random, so only the model
folder's tokenizer files are read from the bucket); real GCS credentials and bucket permissions;
the emulator does not enforce generation preconditions, so concurrent writers are not tested.

Also: an output location that cannot be written is one `error:` line before any work.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.train.conftest import tiny_overrides, write_task4

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "surveylm-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """(gcsfs filesystem, environment for the commands) of a fresh in-memory emulator."""
  pytest.importorskip("gcp_storage_emulator", reason="the GCS emulator (requirements-test.txt: "
                      "gcp-storage-emulator) is not installed")
  gcsfs_core = pytest.importorskip("gcsfs.core", reason="gcsfs (epath's gs:// backend) is not installed")
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  log = tmp_path_factory.mktemp("gcs") / "emulator.log"   # a file: a full pipe would stall it
  with open(log, "w") as out:
    server = subprocess.Popen([sys.executable, "-m", "tests.gcs_emulator", str(port), BUCKET],
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                              stdout=out, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 60
    while True:
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=1).close()
        break
      except OSError:
        if server.poll() is not None or time.time() > deadline:
          pytest.fail(f"the GCS emulator did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    env = {
        "STORAGE_EMULATOR_HOST": url,            # gcsfs and google-cloud-storage (tensorboardX)
        "TENSORSTORE_GCS_HTTP_URL": url,         # tensorstore (orbax's array writes)
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",  # tensorstore: no credential lookup
        # gcsfs's zonal/hierarchical bucket probe calls a gRPC API the emulator does not serve.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    # The plain filesystem (not gcsfs's experimental subclass), pointed at the emulator, for this
    # process's own reads and uploads; the commands find the emulator through `env`.
    yield gcsfs_core.GCSFileSystem(endpoint_url=url, token="anon"), env
  finally:
    server.terminate()
    server.wait(timeout=30)


def _launch(module, workdir, overrides, env, cwd):
  cmd = [sys.executable, "-m", module, f"--config={REPO}/configs/tiny.py", f"--workdir={workdir}",
         *overrides]
  return subprocess.run(cmd, cwd=cwd, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **env),
                        capture_output=True, text=True, timeout=600)


def _upload_inputs(fs, tmp_path, smollm2_path):
  """Fixture task-4 data and the model folder without its weights (the tiny config's model is
  random; the tokenizer is read from here), on the bucket; returns their gs:// paths."""
  train = write_task4(str(tmp_path / "in" / "train.json"), 24, 0)
  test = write_task4(str(tmp_path / "in" / "test.json"), 8, 1)
  data = f"gs://{BUCKET}/data/task4/individual"
  fs.put_file(train, f"{data}/train.json")
  fs.put_file(test, f"{data}/test.json")
  tokenizer = f"gs://{BUCKET}/models/smollm2"
  for name in os.listdir(smollm2_path):
    if not name.endswith(".safetensors"):
      fs.put_file(os.path.join(smollm2_path, name), f"{tokenizer}/{name}")
  return f"{data}/train.json", f"{data}/test.json", tokenizer


def test_train_and_evaluate_with_everything_on_gcs(gcs, tmp_path, smollm2_path):
  fs, env = gcs
  train, test, tokenizer = _upload_inputs(fs, tmp_path, smollm2_path)
  workdir = f"gs://{BUCKET}/runs/t4"
  cwd = tmp_path / "cwd"
  cwd.mkdir()

  overrides = tiny_overrides(train, test, **{"model.tokenizer": tokenizer})
  trained = _launch("launch.train", workdir, overrides, env, cwd)
  assert trained.returncode == 0, trained.stderr[-4000:]
  # The same command again finds the finished run: orbax restores step 6 from the bucket, and the
  # validation line it logs is added to metrics.jsonl (GCS has no append: not a rewrite of it).
  resumed = _launch("launch.train", workdir, overrides, env, cwd)
  assert resumed.returncode == 0, resumed.stderr[-4000:]
  assert f"resumed from {workdir}/checkpoints/6" in resumed.stdout, resumed.stdout[-2000:]
  evaluated = _launch("launch.evaluate", workdir, [
      f"--config.model.tokenizer={tokenizer}", f"--config.eval.data={test}",
      f"--config.eval.train_data={train}", f"--config.eval.adapter={workdir}/adapter",
      "--config.eval.noise_floor_draws=10", "--config.eval.position_bias_records=0"], env, cwd)
  assert evaluated.returncode == 0, evaluated.stderr[-4000:]

  # Nothing went to a local folder (a `gs:` folder is what os.makedirs("gs://...") makes).
  assert not os.listdir(cwd), os.listdir(cwd)
  assert not os.path.exists(os.path.join(REPO, "gs:"))

  run = f"{BUCKET}/runs/t4"
  logged = [json.loads(line) for line in fs.cat(f"{run}/metrics.jsonl").decode().splitlines()]
  assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3, 4, 5, 6], logged
  assert [r["step"] for r in logged if "val_loss" in r] == [6, 6], logged   # first run, resumed run
  assert json.loads(fs.cat(f"{run}/config.json"))["data"]["train"] == train
  events = fs.ls(f"{run}/tensorboard")
  assert events and all(fs.size(e) > 0 for e in events), events
  # Orbax wrote through tensorstore's gcs driver: finished step folders, arrays inside.
  saved = {os.path.basename(p) for p in fs.ls(f"{run}/checkpoints")}
  assert {"4", "6"} <= saved, saved
  assert fs.find(f"{run}/checkpoints/6/state"), "no array files under checkpoints/6/state"
  adapter = json.loads(fs.cat(f"{run}/adapter/adapter_config.json"))
  assert adapter["peft_type"] == "LORA" and fs.size(f"{run}/adapter/adapter_model.safetensors") > 0

  metrics = json.loads(fs.cat(f"{run}/eval/metrics.json"))
  assert metrics["adapter"] == f"{workdir}/adapter" and metrics["data"] == [test], metrics["data"]
  predictions = fs.cat(f"{run}/eval/predictions.jsonl").decode().splitlines()
  assert len(predictions) == 8 * 3, len(predictions)   # 8 respondents x 3 questions
  assert "# " in fs.cat(f"{run}/eval/report.md").decode()
  plots = fs.ls(f"{run}/eval/plots")
  assert plots and all(fs.cat(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in plots), plots


def test_unwritable_workdir_is_one_line_before_any_work(tmp_path):
  started = time.time()
  proc = subprocess.run([sys.executable, "-m", "launch.train", "--config=configs/tiny.py",
                         "--workdir=/proc/nope/run"], cwd=REPO, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"), timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "workdir /proc/nope/run cannot be written" in errors[0], proc.stderr
  assert "Traceback" not in proc.stderr and "step " not in proc.stderr, proc.stderr[-2000:]
  assert time.time() - started < 60   # the check runs before data, model or compilation


def test_missing_bucket_is_one_line_before_any_work(gcs):
  _, env = gcs
  proc = _launch("launch.train", "gs://no-such-bucket-here/run", [], env, REPO)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and "workdir gs://no-such-bucket-here/run cannot be written" in errors[0], \
      proc.stderr[-2000:]
