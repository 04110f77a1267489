"""Answer slots: each lettered survey answer marks the position whose next token is its letter."""
import numpy as np

from surveylm_jax.data import read_alignsurvey
from surveylm_jax.data.grain_pipeline import PipelineConfig, build_dataset, pipeline_counts
from surveylm_jax.data.packing import MAX_OPTION_SLOTS, batch_shapes
from tests.train.conftest import write_task4


def test_slots_point_at_the_answer_letter(tmp_path, smollm2_tokenizer):
  path = write_task4(str(tmp_path / "task4" / "individual" / "train.json"), 6, 3)
  records = read_alignsurvey(path)
  config = PipelineConfig(seq_len=512, batch_size=2, shuffle=False, process_index=0,
                          process_count=1, drop_remainder=False)
  it = iter(build_dataset(records, smollm2_tokenizer, config))
  seen = 0
  for batch in it:
    assert {k: v.shape for k, v in batch.items()} == batch_shapes(len(batch["input_ids"]), 512)
    for r in range(len(batch["input_ids"])):
      for s in range(MAX_OPTION_SLOTS):
        pos = batch["option_positions"][r, s]
        if pos < 0:
          continue
        k = batch["option_mask"][r, s].sum()
        answer = int(np.argmax(batch["option_targets"][r, s]))
        # The slot's target token is the answer's letter token, and it is a trained token.
        assert batch["targets"][r, pos] == batch["option_token_ids"][r, s, answer]
        assert batch["loss_mask"][r, pos] == 1
        letters = [smollm2_tokenizer.decode([t]) for t in batch["option_token_ids"][r, s, :k]]
        assert letters == list("ABCDEFG"[:k])
        seen += 1
  assert seen == len(records)
  assert pipeline_counts(it)["option_slots"] == len(records)


def test_group_records_can_train_their_shares_as_slot_targets(smollm2_tokenizer):
  """group_answers="distribution": no token loss on a group record, one slot whose soft target
  is the group's shares, at the position that predicts the answer's first letter; with and
  without shared-prefix packing (the small survey's group records share group profiles)."""
  import os
  import tempfile

  from surveylm_jax.data.codebook import load_codebook
  from surveylm_jax.data.survey_converter import convert_survey, write_conversion
  out = tempfile.mkdtemp()
  write_conversion(convert_survey(load_codebook(os.path.join(
      os.path.dirname(__file__), "fixtures", "codebook_small_zh.yaml"))), out)
  records = list(read_alignsurvey(os.path.join(out, "task4/group/train.json")))
  shares = sorted(tuple(np.round(np.asarray(r.distribution, np.float32), 4).tolist()) for r in records)
  for share in (False, True):
    config = PipelineConfig(seq_len=1024, batch_size=1, shuffle=False, process_index=0,
                            process_count=1, drop_remainder=False, share_prefixes=share,
                            group_answers="distribution")
    it = iter(build_dataset(records, smollm2_tokenizer, config))
    got = []
    for batch in it:
      assert batch["loss_mask"].sum() == 0
      for s in np.flatnonzero(batch["option_positions"][0] >= 0):
        pos, k = batch["option_positions"][0, s], batch["option_mask"][0, s].sum()
        assert batch["targets"][0, pos] == batch["option_token_ids"][0, s, 0]  # "A" starts the answer
        got.append(tuple(np.round(batch["option_targets"][0, s, :k], 4).tolist()))
    assert sorted(got) == shares
    counts = pipeline_counts(it)
    assert counts["option_slots"] == len(records)
    assert (counts.get("shared_tokens_saved", 0) > 0) == share
  text = iter(build_dataset(records, smollm2_tokenizer, PipelineConfig(
      seq_len=1024, batch_size=1, shuffle=False, process_index=0, process_count=1,
      drop_remainder=False)))
  assert sum(int(b["loss_mask"].sum()) for b in text) > 0 and pipeline_counts(text)["option_slots"] == 0
