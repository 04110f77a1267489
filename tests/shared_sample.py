"""AlignSurvey's published sample records: `../shared/alignsurvey_sample` beside the checkout.

They are not part of the project (their licence keeps them out of it), so a clone may lack them.
Tests that read them call `shared_sample(name)`: a clone without the folder skips those tests and
names the folder it looked for; a folder that is there but lacks a file fails, since that is a
broken copy, not a clone without the samples. The project's own release-layout fixtures
(tests/data/fixtures/release/, tests/data/test_data_release_fixtures.py) exercise the same
readers and formats in every checkout.
"""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SAMPLES = os.path.join(os.path.dirname(REPO), "shared", "alignsurvey_sample")


def shared_sample(name: str) -> str:
  """The path of sample file `name`, or a skip naming the missing folder."""
  if not os.path.isdir(SHARED_SAMPLES):
    pytest.skip(f"AlignSurvey sample folder {SHARED_SAMPLES} not found (a clone without ../shared)")
  path = os.path.join(SHARED_SAMPLES, name)
  if not os.path.isfile(path):
    pytest.fail(f"{path} is missing: the sample folder {SHARED_SAMPLES} is there but incomplete")
  return path
