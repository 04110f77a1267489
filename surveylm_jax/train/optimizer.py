"""AdamW with linear warmup + cosine decay and global-norm clipping (the SurveyLM recipe:
lr 1e-4, 10% warmup, cosine)."""
from __future__ import annotations

import optax


def learning_rate_schedule(lr: float, total_steps: int, warmup_fraction: float):
  warmup = max(int(round(total_steps * warmup_fraction)), 0)
  if warmup == 0:
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=0.0)


def make_optimizer(train_cfg, total_steps: int):
  """Returns (optax transformation, schedule)."""
  schedule = learning_rate_schedule(train_cfg.lr, total_steps, train_cfg.warmup_fraction)
  parts = []
  if train_cfg.grad_clip and train_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(train_cfg.grad_clip))
  parts.append(optax.adamw(schedule, b1=0.9, b2=0.999, eps=train_cfg.adam_eps,
                           weight_decay=train_cfg.weight_decay))
  return optax.chain(*parts), schedule
