"""Registered metrics: numbers of the researcher's own, beside the built-in ones.

A metric is `fn(records, probs) -> number | {name: number}`: `records` are the task-4 individual
test records (`SurveyResponseRecord`: options, target_index, answer, background, extra), `probs`
one predictor's distribution over each record's *listed* options (None: no prediction, e.g. an
unparsable generated answer). The evaluation computes every metric named in
`config.eval.metrics` for the model and for each baseline, and writes it to metrics.json as
`extra_metrics[metric][predictor]` and to report.md.

    from surveylm_jax.eval import extra_metrics

    @extra_metrics.register_metric("top_share")
    def top_share(records, probs):
      return float(np.mean([p.max() for p in probs if p is not None]))
"""
from __future__ import annotations

import numbers
from typing import Callable, Dict, Sequence

from surveylm_jax import registry

MetricFn = Callable[[Sequence, Sequence], object]
METRICS: Dict[str, MetricFn] = {}


register_metric = registry.registrar(METRICS, "metric")


def check(names: Sequence[str]) -> None:
  registry.check_names(METRICS, list(names), "config.eval.metrics")


def _number(name: str, predictor: str, value) -> float | None:
  if value is None:
    return None
  if isinstance(value, numbers.Real) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0):
    return float(value)
  raise TypeError(f"metric {name!r} on {predictor!r} returned {type(value).__name__}; a metric "
                  "returns a number or a dict of numbers")


def compute(names: Sequence[str], records, predictors: dict) -> dict:
  """{metric: {predictor: number | {key: number}}} for the named metrics and every predictor."""
  check(names)
  out = {}
  for name in names:
    out[name] = {}
    for predictor, probs in predictors.items():
      value = METRICS[name](records, probs)
      if isinstance(value, dict):
        out[name][predictor] = {str(k): _number(name, predictor, v) for k, v in value.items()}
      else:
        out[name][predictor] = _number(name, predictor, value)
  return out
