"""Stage I of SurveyLM: one epoch on the social foundation corpus (interview turns and survey
records), LoRA rank 8 / alpha 16 on all seven projections, lr 1e-4, cosine with 10% warmup, bf16.

python -m launch.train --config=configs/stage1.py --workdir=runs/stage1 \
    --config.model.path=checkpoints/qwen2.5-7b-instruct --config.mesh.fsdp=8
"""
from configs import base


def get_config():
  config = base.get_config()
  config.data.train = "data/gss2018/foundation_quan/train.json"
  config.data.seq_len = 1024
  config.data.batch_size = 32
  config.model.dtype = "bfloat16"
  config.model.compute_dtype = "bfloat16"
  config.model.remat_policy = "dots_saveable"
  config.train.epochs = 1
  config.checkpoint.every_steps = 500
  return config
