"""A random tiny Llama-shaped model on the built-in GSS data: a few steps in well under a minute
on a CPU. Used by tests and as a smoke run of every training path.

python -m launch.train --config=configs/tiny.py --workdir=runs/tiny
"""
import ml_collections

from configs import base


def get_config():
  config = base.get_config()
  config.model.random_init = ml_collections.ConfigDict(dict(
      model_type="llama", vocab_size=49152, hidden_size=64, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
      bos_token_id=1, eos_token_id=2, pad_token_id=2))
  config.model.tokenizer = "checkpoints/smollm2-135m-instruct"
  config.data.train = "data/gss2018/task4/individual/train.json"
  config.data.eval = "data/gss2018/task4/individual/test.json"
  config.data.seq_len = 256
  config.data.batch_size = 8
  config.data.max_records = 256
  config.lora.rank = 4
  config.train.steps = 8
  config.train.lr = 1e-3
  config.train.log_every = 2
  config.checkpoint.every_steps = 4
  config.eval.max_records = 32
  return config
