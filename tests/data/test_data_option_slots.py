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
