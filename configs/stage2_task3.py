"""Stage II on task 3 (attitude stance modeling), continuing the Stage I adapter: three epochs.

python -m launch.train --config=configs/stage2_task3.py --workdir=runs/stage2_task3 \
    --config.lora.init_from=runs/stage1/adapter
"""
from configs import stage1


def get_config():
  config = stage1.get_config()
  config.data.train = "data/gss2018/task3/individual/train.json"
  config.data.eval = "data/gss2018/task3/individual/test.json"
  config.lora.init_from = "runs/stage1/adapter"
  config.lora.stacking = "continue"
  config.train.epochs = 3
  config.train.eval_every = 500
  return config
