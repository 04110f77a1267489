"""surveylm_jax.paths on the local filesystem: what every backend must do the same way.
(The same calls on gs:// run end to end in tests/test_remote_paths.py.)"""
import os

import pytest

from surveylm_jax import paths


def test_absolute_keeps_uris_and_anchors_local_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(paths.absolute("runs/x")) == os.path.join(str(tmp_path), "runs", "x")
  # os.path.abspath would give <cwd>/gs:/bucket/runs/x
  assert os.fspath(paths.absolute("gs://bucket/runs/x")) == "gs://bucket/runs/x"
  assert os.fspath(paths.join("gs://bucket/runs", "x", "adapter")) == "gs://bucket/runs/x/adapter"
  assert paths.is_remote("gs://b/x") and not paths.is_remote(tmp_path)


def test_text_is_utf8_and_atomic_writes_leave_no_temporaries(tmp_path):
  out = tmp_path / "eval" / "metrics.json"
  paths.makedirs(out.parent)
  paths.write_atomic(out, '{"answer": "5万-20万"}')
  assert paths.read_text(out) == '{"answer": "5万-20万"}'
  paths.write_atomic(out, b"{}")
  assert out.read_bytes() == b"{}" and os.listdir(out.parent) == ["metrics.json"]


def test_append_file_appends_to_what_is_there(tmp_path):
  log = tmp_path / "run" / "metrics.jsonl"
  first = paths.AppendFile(log)
  first.write('{"step": 1}\n')
  first.flush()
  assert log.read_text() == '{"step": 1}\n'   # readers see each flushed line
  first.close()
  again = paths.AppendFile(log)   # a resumed run continues the file
  again.write('{"step": 2}\n')
  again.close()
  assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_local_copy_is_the_path_itself_when_local(tmp_path):
  with paths.local_copy(tmp_path) as local:
    assert local == str(tmp_path)


def test_copy_file(tmp_path):
  (tmp_path / "a.txt").write_text("x")
  paths.copy_file(tmp_path / "a.txt", tmp_path / "b.txt")
  assert (tmp_path / "b.txt").read_text() == "x"


@pytest.mark.parametrize("where", ["/proc/nope/run", "{file}/run"])
def test_check_writable_names_what_and_where(tmp_path, where):
  (tmp_path / "file").write_text("not a folder")
  where = where.format(file=tmp_path / "file")
  with pytest.raises(paths.UnwritableLocationError, match=f"workdir {where} cannot be written"):
    paths.check_writable(where, "workdir")


def test_check_writable_creates_the_folder_and_leaves_nothing(tmp_path):
  folder = paths.check_writable(tmp_path / "new" / "run", "workdir")
  assert folder.is_dir() and not list(folder.iterdir())
