"""Training losses: a registry of `(logits, batch) -> (scalar, aux)` functions.

Batch contract (produced by the data pipeline):
  input_ids [B, T]  token ids; targets [B, T] the next token within the same packed segment;
  loss_mask [B, T]  1 where targets[t] is a token to learn (assistant answer tokens and EOS):
                    token loss = CE(logits[t], targets[t]) * loss_mask[t].
  Option losses additionally read, for up to M answer slots per row:
  option_positions [B, M]     position whose next-token logits give the answer letter (-1 = none)
  option_token_ids [B, M, K]  token id of each option letter, in the question's own order
  option_mask      [B, M, K]  1 for real options (padding options come last)
  option_targets   [B, M, K]  target distribution over the options (a group's shares, or the
                              one-hot answer of an individual)

Add a loss by registering a function:

    from surveylm_jax.train import losses
    @losses.register("entropy_bonus")
    def entropy_bonus(logits, batch):
      ...
      return value, {"entropy": value}

and weight it from the config: `config.loss = {"token_ce": 1.0, "entropy_bonus": 0.1}`. A loss in a
module of your own is found through `config.extra_modules` (surveylm_jax/extensions.py), and
`--config.loss.entropy_bonus=0.1` then works on the command line.
A loss that reads only the answer slots registers with `reads="slots"` (so `train.loss_positions`
need not keep logits for answer tokens); the default, "all", is always safe.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp
from surveylm_jax.eval.metrics import ordinal_wasserstein_jax

LossFn = Callable[[jnp.ndarray, dict], Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]]
LOSSES: Dict[str, LossFn] = {}
# What each loss reads: "tokens" (targets/loss_mask), "slots" (the answer slots only) or "all".
# `train.loss_positions` keeps logits only where the configured losses read them.
READS: Dict[str, str] = {}
_READ_KINDS = ("all", "tokens", "slots")


def register(name: str, reads: str = "all"):
  if reads not in _READ_KINDS:
    raise ValueError(f"loss {name!r}: reads={reads!r}; valid: {', '.join(_READ_KINDS)}")

  def wrap(fn: LossFn) -> LossFn:
    if name in LOSSES:
      raise ValueError(f"loss {name!r} is already registered")
    LOSSES[name] = fn
    READS[name] = reads
    return fn
  return wrap


def reads_tokens(names) -> bool:
  """Whether any of these losses reads token targets (loss_mask), not only answer slots."""
  for name in names:
    get(name)   # unknown names raise with the registered list
  return any(READS[name] != "slots" for name in names)


def get(name: str) -> LossFn:
  if name not in LOSSES:
    raise KeyError(f"unknown loss {name!r}; registered: {', '.join(sorted(LOSSES))}")
  return LOSSES[name]


@jax.custom_vjp
def token_nll(logits, targets):
  """-log softmax(logits)[target] at every position: logits [..., V] float, targets [...] int.

  Written as logsumexp - target logit with a hand-written backward pass, because autodiff of
  `log_softmax` + `take_along_axis` stores exp(logits) as a residual and scatters the target
  gradient into a zero-filled [..., V] array: three extra passes over the largest array of a
  small model's step. The backward here is one elementwise pass, softmax - one_hot, from the
  logits and the saved logsumexp."""
  return _token_nll_fwd(logits, targets)[0]


def _token_nll_fwd(logits, targets):
  peak = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  lse = jnp.log(jnp.sum(jnp.exp(logits - peak), axis=-1)) + peak[..., 0]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return lse - target_logit, (logits, targets, lse)


def _token_nll_bwd(res, g):
  logits, targets, lse = res
  vocab = jax.lax.broadcasted_iota(targets.dtype, logits.shape, logits.ndim - 1)
  one_hot = (vocab == targets[..., None]).astype(logits.dtype)
  return (jnp.exp(logits - lse[..., None]) - one_hot) * g[..., None], None


token_nll.defvjp(_token_nll_fwd, _token_nll_bwd)


@register("token_ce", reads="tokens")
def token_ce(logits, batch):
  """Masked next-token cross-entropy, averaged over target tokens."""
  targets = batch["targets"]
  weights = batch["loss_mask"].astype(jnp.float32)
  nll = token_nll(logits.astype(jnp.float32), targets)
  total = jnp.sum(nll * weights)
  count = jnp.sum(weights)
  loss = total / jnp.maximum(count, 1.0)
  return loss, {"token_ce": loss, "target_tokens": count}


def option_distribution(logits, batch):
  """Model probability of each option letter at each answer slot, renormalised over the
  question's options. Returns (probs [B, M, K], slot_valid [B, M])."""
  pos = batch["option_positions"]
  valid = pos >= 0
  rows = jnp.take_along_axis(logits, jnp.maximum(pos, 0)[..., None], axis=1)   # [B, M, V]
  letter_logits = jnp.take_along_axis(rows, batch["option_token_ids"], axis=-1)  # [B, M, K]
  mask = batch["option_mask"].astype(bool)
  letter_logits = jnp.where(mask, letter_logits.astype(jnp.float32), -1e30)
  probs = jax.nn.softmax(letter_logits, axis=-1) * mask
  return probs, valid & mask.any(-1)


def _slot_mean(values, valid):
  w = valid.astype(jnp.float32)
  return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


@register("option_kl", reads="slots")
def option_kl(logits, batch):
  """Forward KL(target || model) over the option letters, averaged over answer slots."""
  probs, valid = option_distribution(logits, batch)
  target = batch["option_targets"].astype(jnp.float32)
  terms = jnp.where(target > 0, target * (jnp.log(jnp.maximum(target, 1e-30))
                                          - jnp.log(jnp.maximum(probs, 1e-30))), 0.0)
  loss = _slot_mean(jnp.sum(terms, -1), valid)
  return loss, {"option_kl": loss}


@register("option_w1", reads="slots")
def option_w1(logits, batch):
  """Differentiable W1 over the options in the slot's order, normalised by K-1. The pipeline
  lists slot options in the question's canonical order; nominal slots (option_ordinal 0) are
  left out."""
  probs, valid = option_distribution(logits, batch)
  if "option_ordinal" in batch:
    valid = valid & (batch["option_ordinal"] > 0)
  target = batch["option_targets"].astype(jnp.float32)
  flat_p = target.reshape(-1, target.shape[-1])
  flat_q = probs.reshape(-1, probs.shape[-1])
  # Empty slots get a dummy point mass so the solver sees proper distributions; masked below.
  empty = (flat_p.sum(-1) <= 0) | (flat_q.sum(-1) <= 0)
  dummy = jnp.zeros_like(flat_p).at[:, 0].set(1.0)
  flat_p = jnp.where(empty[:, None], dummy, flat_p / jnp.maximum(flat_p.sum(-1, keepdims=True),
                                                                 1e-30))
  flat_q = jnp.where(empty[:, None], dummy, flat_q)
  # ott-jax's exact 1-D solver, the same function the evaluation reports.
  w1 = ordinal_wasserstein_jax(flat_p, flat_q).reshape(target.shape[:-1])
  k = jnp.maximum(batch["option_mask"].sum(-1).astype(jnp.float32) - 1.0, 1.0)
  loss = _slot_mean(w1 / k, valid)
  return loss, {"option_w1": loss}


def active(weights: Dict[str, float]) -> Dict[str, float]:
  """The losses that count: a weight of 0 switches a loss off (so a stage's config section can
  drop a loss its base config sets). Unknown names raise even at weight 0."""
  for name in weights:
    get(name)
  out = {name: float(w) for name, w in weights.items() if float(w) != 0.0}
  if not out:
    raise ValueError(f"every loss weight is 0: {dict(weights)}; give at least one loss a weight")
  return out


def combined_loss(weights: Dict[str, float]) -> LossFn:
  """Weighted sum of registered losses (zero weights off); aux metrics of every part are kept."""
  weights = active(weights)
  fns = {name: get(name) for name in weights}

  def loss_fn(logits, batch):
    total, aux = 0.0, {}
    for name, fn in fns.items():
      value, parts = fn(logits, batch)
      total = total + weights[name] * value
      aux.update(parts)
    aux["loss"] = total
    return total, aux
  return loss_fn
