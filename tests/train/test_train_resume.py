"""Checkpoint/resume: a SIGKILLed run resumes and logs exactly the losses of an uninterrupted
run; a half-written checkpoint never shadows the previous one."""
import os
import signal
import time

from tests.train.conftest import losses_by_step, run_train, tiny_overrides


def _finish(proc, timeout=600):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-3000:]
  return out


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, task4_files):
  overrides = tiny_overrides(*task4_files)
  full = tmp_path / "full"
  _finish(run_train(full, overrides))
  reference = losses_by_step(full)
  assert sorted(reference) == list(range(1, 7))

  killed = tmp_path / "killed"
  proc = run_train(killed, overrides)
  deadline = time.time() + 600
  while not (killed / "checkpoints" / "2").exists():   # finalized (renamed) checkpoint
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # A checkpoint being written when the kill lands is a *.orbax-checkpoint-tmp folder; make one
  # explicitly so the check does not depend on timing.
  (killed / "checkpoints" / "4.orbax-checkpoint-tmp-999" / "state").mkdir(parents=True)
  out = _finish(run_train(killed, overrides))
  assert "resumed from" in out
  resumed = losses_by_step(killed)
  assert sorted(resumed) == list(range(1, 7))
  for step in range(1, 7):
    assert resumed[step] == reference[step], (step, resumed[step], reference[step])
  assert os.path.exists(killed / "adapter" / "adapter_config.json")
