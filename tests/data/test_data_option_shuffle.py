"""Option shuffling keeps the answer (its text) and moves only letters; group shares follow."""
import os

import numpy as np
import pytest

from surveylm_jax import data
from surveylm_jax.data.json_io import RawRecord
from surveylm_jax.data.option_shuffle import permuted_copies, reorder_options, shuffle_options
from surveylm_jax.data.task_parsers import PARSERS

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _reparse(record):
  """A shuffled record must still be a valid record of its task."""
  task = record.task + ("_group" if record.level == "group" else "")
  return PARSERS[task](RawRecord("shuffled.json", 0, 1, record.to_alpaca()), None)


def test_reorder_keeps_answer_text_and_rewrites_letter():
  record = data.read_alignsurvey(os.path.join(FIXTURES, "task4_mixed.json"))[0]  # B. 一般
  moved = reorder_options(record, [1, 2, 0])
  assert [o.render() for o in moved.options] == ["A. 一般", "B. 不满意", "C. 满意"]
  assert moved.output == "A. 一般" and moved.answer == record.answer
  again = _reparse(moved)
  assert again.target_index == 0 and again.options == moved.options and again.question == record.question


def test_text_style_output_stays_text():
  record = data.read_alignsurvey(os.path.join(FIXTURES, "task4_mixed.json"))[2]
  moved = reorder_options(record, [2, 0, 1])
  assert moved.output == "never" and moved.target_option.letter == "A"


def test_group_distribution_follows_its_options():
  record = data.read_alignsurvey(os.path.join(FIXTURES, "task4_group.jsonl"))[0]
  moved = reorder_options(record, [2, 0, 1])
  assert moved.option_texts() == ["never", "every day", "a few times a week"]
  assert moved.distribution == pytest.approx((0.295, 0.505, 0.2))
  assert _reparse(moved).distribution == pytest.approx(moved.distribution)


def test_seeded_shuffle_is_deterministic_and_varies():
  record = data.read_alignsurvey(os.path.join(FIXTURES, "task4_mixed.json"))[0]
  orders = lambda seed: [shuffle_options(record, np.random.default_rng(seed + i)).option_texts()
                         for i in range(12)]
  assert orders(0) == orders(0)
  assert len({tuple(o) for o in orders(0)}) > 1
  assert all(shuffle_options(record, np.random.default_rng(i)).answer == "一般" for i in range(12))


def test_permuted_copies_cover_every_position():
  record = data.read_alignsurvey(os.path.join(FIXTURES, "task4_mixed.json"))[0]
  cyclic = permuted_copies(record)
  assert [c.target_option.letter for c in cyclic] == ["B", "A", "C"]
  assert cyclic[0].instruction == record.instruction.replace("A. 满意\nB. 一般\nC. 不满意", "A. 满意\nB. 一般\nC. 不满意")
  assert len(permuted_copies(record, "all")) == 6
  with pytest.raises(ValueError, match="valid: \\['all', 'cyclic'\\]"):
    permuted_copies(record, "reverse")
