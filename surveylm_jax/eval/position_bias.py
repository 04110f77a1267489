"""Position bias of an option read-out: does the model prefer a letter rather than an answer?

For each item we score copies with the options shown in different orders (all K! orders for
K <= 4; else the K cyclic shifts, the reversal and a few seeded random orders) and map every
copy's probabilities back to the original option order. Then:
  a_bias            mean over copies of P(first shown option) - 1/K (0 for an unbiased model);
  order_sensitivity mean total variation between the back-mapped distributions of two orders
                    (0 = the answer does not depend on the order);
  debiased          the permutation-averaged distribution per item, scored like any prediction.
"""
from __future__ import annotations

import itertools

import numpy as np

from surveylm_jax.eval import metrics


def option_orders(k: int, random_orders: int = 2, seed: int = 0) -> list[list[int]]:
  """Orders to show (new position i shows original option order[i]); the listed order first."""
  if k <= 4:
    return [list(p) for p in itertools.permutations(range(k))]
  orders = [[(s + i) % k for i in range(k)] for s in range(k)] + [list(range(k))[::-1]]
  rng = np.random.default_rng(seed)
  while len(orders) < k + 1 + random_orders:
    order = rng.permutation(k).tolist()
    if order not in orders:
      orders.append(order)
  return orders


def to_original_order(probs_shown, order) -> np.ndarray:
  """Probabilities over shown positions -> probabilities over the original options."""
  out = np.zeros(len(order))
  out[np.asarray(order)] = np.asarray(probs_shown)
  return out


def position_bias_metrics(items) -> dict:
  """`items`: per item, a list of (order, probs over shown positions), the listed order first.

  Returns a_bias, order_sensitivity (means over items) and per item the debiased distribution.
  """
  a_bias, sensitivity, debiased, first_letter = [], [], [], []
  for copies in items:
    k = len(copies[0][0])
    back = np.stack([to_original_order(p, o) for o, p in copies])
    a_bias.append(float(np.mean([p[0] for _, p in copies]) - 1.0 / k))
    pairs = list(itertools.combinations(range(len(copies)), 2))
    if pairs:
      sensitivity.append(float(np.mean([metrics.total_variation(back[i], back[j]) for i, j in pairs])))
    mean = back.mean(axis=0)
    debiased.append(mean / mean.sum())
    first_letter.append(float(np.mean([np.argmax(p) == 0 for _, p in copies])))
  return {"items": len(items), "a_bias": float(np.mean(a_bias)) if a_bias else float("nan"),
          "order_sensitivity": float(np.mean(sensitivity)) if sensitivity else float("nan"),
          "share_argmax_first_shown": float(np.mean(first_letter)) if first_letter else float("nan"),
          "debiased": debiased}
