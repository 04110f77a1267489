"""The SurveyLM reproduction recipe (AlignSurvey): Qwen2.5-7B-Instruct, LoRA rank 8 / alpha 16 on
all seven projections, lr 1e-4 with cosine decay after 10% warmup, bfloat16, 2048-token rows.
Stage I trains one epoch on the social foundation corpus; Stage II trains three epochs per task,
continuing the Stage I adapter. The config argument picks the stage (default stage1):

    python -m launch.train --config=configs/surveylm_qwen25_7b.py:stage1 \
        --workdir=runs/surveylm_qwen25_7b/stage1
    python -m launch.train --config=configs/surveylm_qwen25_7b.py:task4 \
        --workdir=runs/surveylm_qwen25_7b/task4
    python -m launch.evaluate --config=configs/surveylm_qwen25_7b.py:task4 \
        --workdir=runs/surveylm_qwen25_7b/task4

Data is read from `data_root` in the release's layout (README, "Using the real AlignSurvey
release"); `--config.data_root=/path/alignsurvey` moves every path. Stage II reads the Stage I
adapter from `run_root`/stage1/adapter and evaluates `run_root`/TASK/adapter, so the workdirs
above are `run_root`/STAGE.
"""
import ml_collections

from configs import base

# One Stage II run per task, and per level where the release has two (its scripts train
# task 3 and task 4 individual and group adapters separately).
STAGES = ("stage1", "task1", "task2", "task3", "task3_group", "task4", "task4_group")

# Stage -> (train files, test files) under data_root.
_FILES = {
    "stage1": (("foundation_quan/train.json", "foundation_qual/train.json"), ()),
    "task1": (("task1/train.json",), ("task1/test.json",)),
    "task2": (("task2/train.json",), ("task2/test.json",)),
    "task3": (("task3/individual/train.json",), ("task3/individual/test.json",)),
    "task3_group": (("task3/group/train.json",), ("task3/group/test.json",)),
    "task4": (("task4/individual/train.json",), ("task4/individual/test.json",)),
    "task4_group": (("task4/group/train.json",), ("task4/group/test.json",)),
}


def _under(root, names):
  """Comma-separated paths below `root`, a reference: overriding the root later moves them."""
  joined = ""
  for i, name in enumerate(names):
    path = root + f"/{name}"
    joined = path if i == 0 else joined + "," + path
  return joined


def get_config(stage: str = "stage1") -> ml_collections.ConfigDict:
  stage = stage or "stage1"
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
  c = base.get_config()
  c.data_root = "data/alignsurvey"
  c.run_root = "runs/surveylm_qwen25_7b"
  data_root, run_root = c.get_ref("data_root"), c.get_ref("run_root")

  c.model.path = "checkpoints/qwen2.5-7b-instruct"
  c.model.dtype = "bfloat16"
  c.model.compute_dtype = "bfloat16"
  # Full remat keeps one 2048-token row per chip within a v5e chip's 16 GiB
  # (tools/bench/tpu_memory_plan.py); larger slices can trade it for dots_saveable.
  c.model.remat_policy = "full"

  c.lora.enabled = True
  c.lora.rank = 8
  c.lora.alpha = 16.0
  c.lora.dropout = 0.0
  c.lora.targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

  c.train.lr = 1e-4
  c.train.warmup_fraction = 0.1    # linear warmup, then cosine decay to 0 (train/optimizer.py)
  c.train.weight_decay = 0.0
  c.train.grad_clip = 1.0

  # The release's cutoff of 2048 tokens. A longer example loses its oldest history, then its
  # background, until it fits (data/chat_format.py); the question and answer are always kept.
  c.data.seq_len = 2048
  c.data.pack = True
  # The release's scripts update once per 8 examples x 8 accumulation steps on each of 4 (Stage I)
  # or 2 (Stage II) GPUs, unpacked. Here a row packs several examples; 16 rows per update in two
  # microbatches of 8 puts one row per chip on an 8-chip slice, which fits a v5e-8 (the memory
  # plan: each further microbatch adds temporaries, 4 x 8 rows no longer fit).
  c.data.batch_size = 16
  c.train.microbatches = 2
  # Parameters sharded over every chip: bf16 7B weights do not fit one 16 GiB chip unsharded.
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1

  train, test = _FILES[stage]
  c.data.train = _under(data_root, train)
  c.data.eval = _under(data_root, test)
  c.checkpoint.every_steps = 500
  if stage == "stage1":
    c.train.epochs = 1
    c.lora.init_from = ""
  else:
    c.train.epochs = 3
    c.train.eval_every = 500
    c.lora.init_from = run_root + "/stage1/adapter"
    c.lora.stacking = "continue"
    c.eval.adapter = run_root + f"/{stage}/adapter"
    if stage == "task4":
      # The baselines beside the model fit on the task's training answers.
      c.eval.train_data = _under(data_root, train)
  return c
