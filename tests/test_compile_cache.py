"""The persistent compile cache (surveylm_jax/compile_cache.py): a first process writes its compiled
programs into the folder, a second process with the same folder loads them (jax's own cache-hit
events, not timings); "" is off; another folder moves the cache; every launch main turns it on
from the config before its first compile, and the suite's default folder is a temporary one; a
`gs://` folder works (local GCS emulator)."""
import ast
import json
import os
import subprocess
import sys

import pytest

from surveylm_jax import compile_cache
from tests.test_remote_paths import BUCKET, gcs  # noqa: F401 - the local GCS emulator fixture

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh process: enables the cache in each folder of argv[1] in turn ("" = off) and
# compiles one new program after each (a constant makes each program distinct); prints, per
# step, jax's cache events and the entries each folder holds.
_SCRIPT = r"""
import collections, json, os, sys
from surveylm_jax import compile_cache
import jax, jax.monitoring, jax.numpy as jnp, numpy as np
events = collections.Counter()
jax.monitoring.register_event_listener(
    lambda event, **kw: events.update([event.rsplit("/", 1)[-1]]))
steps = []
for i, folder in enumerate(json.loads(sys.argv[1])):
  used = compile_cache.enable(folder, min_compile_secs=0.0)
  events.clear()
  f = jax.jit(lambda x, i=i: jnp.tanh(x @ x.T + i).sum())
  f(np.ones((8, 8), np.float32)).block_until_ready()   # numpy in: f is the only program
  steps.append({"used": used, "hits": events["cache_hits"], "misses": events["cache_misses"],
                "jax_dir": jax.config.jax_compilation_cache_dir})
print(json.dumps(steps))
"""


def _run(folders, **env):
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(folders)], cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **env),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The announcement goes to stdout (stderr is kept for one-line errors): return stdout's other lines.
  lines = proc.stdout.strip().splitlines()
  return json.loads(lines[-1]), "\n".join(lines[:-1])


def _entries(folder):
  return sorted(p for p in os.listdir(folder) if p.endswith("-cache")) if os.path.isdir(folder) else []


def test_first_process_writes_second_process_loads(tmp_path):
  folder = str(tmp_path / "cache")
  (first,), announced = _run([folder])
  written = _entries(folder)
  assert first == {"used": folder, "hits": 0, "misses": 1, "jax_dir": folder}
  assert len(written) == 1 and written[0].startswith("jit__lambda-"), written
  assert announced.count(f"compiled programs are cached in {folder}") == 1, announced

  (second,), _ = _run([folder])
  assert second == {"used": folder, "hits": 1, "misses": 0, "jax_dir": folder}
  assert _entries(folder) == written   # loaded, nothing compiled again


def test_same_folder_twice_other_folder_and_off(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  steps, announced = _run([a, a, b, ""])
  assert [s["used"] for s in steps] == [a, a, b, None]
  assert [s["jax_dir"] for s in steps] == [a, a, b, None]
  assert [s["misses"] for s in steps] == [1, 1, 1, 0]   # off: no cache read or written
  # Two programs in `a`; the third in `b` (jax had opened `a`: the switch reopened the cache);
  # nothing from the fourth.
  assert len(_entries(a)) == 2 and len(_entries(b)) == 1, (_entries(a), _entries(b))
  assert announced.count(f"cached in {a} ") == 1 and announced.count(f"cached in {b} ") == 1, announced


def test_off_and_unwritable_folder_leave_jax_alone(tmp_path, capsys):
  import jax
  before = jax.config.jax_compilation_cache_dir
  assert compile_cache.enable("") is None
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  assert compile_cache.enable(str(blocker / "cache")) is None   # a file where a folder should be
  assert "compile cache off" in capsys.readouterr().out
  assert jax.config.jax_compilation_cache_dir == before


def test_folder_names(monkeypatch):
  assert compile_cache.resolve("gs://bucket/xla") == "gs://bucket/xla"
  assert compile_cache.resolve("~/x") == os.path.join(os.path.expanduser("~"), "x")
  assert compile_cache.resolve("rel") == os.path.join(os.getcwd(), "rel")
  assert compile_cache.resolve("") == ""
  monkeypatch.delenv(compile_cache.ENV_VAR)
  monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
  assert compile_cache.default_folder() == "~/.cache/surveylm_jax/xla"
  monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
  assert compile_cache.default_folder() == "/xdg/surveylm_jax/xla"
  monkeypatch.setenv(compile_cache.ENV_VAR, "")
  assert compile_cache.default_folder() == ""


def test_the_suite_never_uses_the_users_cache():
  from configs import base
  folder = base.get_config().compile_cache.dir
  assert folder and folder == os.environ[compile_cache.ENV_VAR]   # set by tests/conftest.py
  assert not compile_cache.resolve(folder).startswith(os.path.expanduser("~/.cache"))


@pytest.mark.parametrize("main", ["train", "evaluate", "pipeline", "demo"])
def test_every_launch_main_enables_it_before_anything_else(main):
  """Read from the source: main() calls compile_cache.enable with the config's fields before
  extensions.load, which may import user code that compiles, and before any library call."""
  tree = ast.parse(open(os.path.join(REPO, "launch", f"{main}.py"), encoding="utf-8").read())
  body = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "main").body
  calls = [ast.unparse(node.value.func) for node in body
           if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
  assert "compile_cache.enable" in calls and "extensions.load" in calls, calls
  assert calls.index("compile_cache.enable") < calls.index("extensions.load"), calls
  enable = next(node.value for node in body if isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Call)
                and ast.unparse(node.value.func) == "compile_cache.enable")
  assert ast.unparse(enable.args[0]).endswith("compile_cache.dir")
  assert [ast.unparse(k.value) for k in enable.keywords] == [
      "_CONFIG.value.compile_cache.min_compile_secs"]


def test_launch_evaluate_turns_it_on_from_the_config_default(tmp_path):
  """A real launch main: the config's default folder ($SURVEYLM_COMPILE_CACHE here) is made and
  announced before the run stops at its first user error (extensions.load, which comes next:
  exit 2, one error line)."""
  folder = tmp_path / "default_cache"
  proc = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", "--config=configs/eval_gss_zero_shot.py",
       f"--workdir={tmp_path / 'run'}", "--config.extra_modules=('no_such_module_here',)"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
                         SURVEYLM_COMPILE_CACHE=str(folder)),
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "no_such_module_here" in proc.stderr, proc.stderr[-3000:]
  assert f"compiled programs are cached in {folder} " in proc.stdout, proc.stdout[-3000:]
  assert folder.is_dir()


def test_a_gs_folder_is_written_and_read_back(gcs):
  """`gs://` through jax's own epath cache, against the local GCS emulator of
  tests/test_remote_paths.py: written by one process, read by the next, no local `gs:` folder."""
  fs, env = gcs
  folder = f"gs://{BUCKET}/compile_cache"
  (first,), _ = _run([folder], **env)
  written = [p for p in fs.ls(f"{BUCKET}/compile_cache") if p.endswith("-cache")]
  assert first["used"] == folder and first["misses"] == 1 and len(written) == 1, (first, written)
  (second,), _ = _run([folder], **env)
  assert second["hits"] == 1 and second["misses"] == 0, second
  assert not os.path.exists(os.path.join(REPO, "gs:"))
