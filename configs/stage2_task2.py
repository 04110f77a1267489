"""Stage II on task 2 (semi-structured interview modeling), continuing the Stage I adapter: three epochs.

python -m launch.train --config=configs/stage2_task2.py --workdir=runs/stage2_task2 \
    --config.lora.init_from=runs/stage1/adapter
"""
from configs import stage1


def get_config():
  config = stage1.get_config()
  config.data.train = "data/gss2018/task2/train.json"
  config.data.eval = "data/gss2018/task2/test.json"
  config.lora.init_from = "runs/stage1/adapter"
  config.lora.stacking = "continue"
  config.train.epochs = 3
  config.train.eval_every = 500
  return config
