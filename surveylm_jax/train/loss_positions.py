"""Logits only where a loss reads them (`train.loss_positions`).

A survey answer is a few tokens after a long prompt, so most positions of a packed row carry no
loss, yet projecting every position onto a 49k-token vocabulary (and its log-softmax, and their
backward pass) costs about as much as several transformer layers of a 135M model. With
`train.loss_positions = R > 0` each row keeps its first R positions that a loss reads (loss-mask
tokens and answer slots), in row order; the model computes logits there only, and the batch is
re-indexed to match, so every registered loss runs unchanged on [B, R, V] logits.

Rows that need more than R positions are refused on the host before the step
(`check_rows`), never cut silently.
"""
from __future__ import annotations

from typing import Dict

import jax.numpy as jnp
import numpy as np


class LossPositionsError(ValueError):
  pass


def _needed(loss_mask, option_positions, np_like, tokens: bool = True):
  need = (loss_mask > 0) if tokens else np_like.zeros(loss_mask.shape, bool)
  if option_positions is not None:
    length = loss_mask.shape[1]
    hits = ((option_positions[..., None] == np_like.arange(length))
            & (option_positions[..., None] >= 0))                       # [B, M, T]
    need = need | hits.any(axis=1)
  return need


def check_rows(batch: Dict[str, np.ndarray], limit: int, where: str,
               tokens: bool = True) -> None:
  """Raise if a row of this host batch needs more than `limit` logit positions (`tokens`:
  whether a configured loss reads answer tokens, not only answer slots)."""
  need = _needed(np.asarray(batch["loss_mask"]),
                 np.asarray(batch["option_positions"]) if "option_positions" in batch else None,
                 np, tokens).sum(axis=1)
  worst = int(need.argmax())
  read = "answer tokens and answer slots" if tokens else "answer slots"
  if need[worst] > limit:
    raise LossPositionsError(
        f"{where}: row {worst} has {int(need[worst])} positions that a loss reads ({read}) "
        f"but train.loss_positions is {limit}; raise it (or set 0 for logits at every "
        f"position)")


def select(batch: dict, limit: int, tokens: bool = True):
  """(positions [B, R], batch re-indexed to them) for the jitted step.

  Positions a loss reads come first in row order; the remaining slots point at unread positions
  and carry no loss. Answer slots are renumbered to their index among the kept positions. With
  `tokens=False` (only slot-reading losses configured) answer tokens are not kept.
  """
  option_positions = batch.get("option_positions")
  need = _needed(batch["loss_mask"], option_positions, jnp, tokens)
  order = jnp.argsort(jnp.logical_not(need), axis=1, stable=True)[:, :limit]   # [B, R]
  kept = jnp.take_along_axis(need, order, axis=1)
  out = dict(batch)
  out["targets"] = jnp.take_along_axis(batch["targets"], order, axis=1)
  out["loss_mask"] = jnp.take_along_axis(batch["loss_mask"], order, axis=1) * kept
  if option_positions is not None:
    match = (order[:, None, :] == option_positions[..., None]) & kept[:, None, :]   # [B, M, R]
    found = match.any(-1) & (option_positions >= 0)
    out["option_positions"] = jnp.where(found, jnp.argmax(match, axis=-1), -1).astype(
        option_positions.dtype)
  return order, out
