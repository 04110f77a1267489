"""Checks shared by the pipeline tests."""
import json

import numpy as np

from surveylm_jax.data import grain_pipeline as gp


def assert_resumes_at_the_same_element(ds, skip: int = 3, compare: int = 4):
  """Saves the iterator state after `skip` batches (through JSON, as a checkpoint stores it) and
  checks that a fresh iterator restored from it yields the same next batches and counts."""
  it = iter(ds)
  for _ in range(skip):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(compare)]
  resumed = iter(ds)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  assert gp.pipeline_counts(resumed) == gp.pipeline_counts(it)
