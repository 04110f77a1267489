"""Evaluation: metrics (no model imports), answer parsing, baselines, groups, fairness, position
bias, report; `runner.evaluate(config, workdir)` ties them to a model.

    from surveylm_jax.eval.metrics import ordinal_wasserstein
    ordinal_wasserstein([0.2, 0.5, 0.3], [0.5, 0.3, 0.2], normalize=True)
"""
from surveylm_jax.eval import metrics
from surveylm_jax.eval.metrics import (brier_score, classification_metrics, distribution_metrics,
                                       jensen_shannon, kl_divergence, negative_log_likelihood,
                                       ordinal_wasserstein, ordinal_wasserstein_jax,
                                       ranked_probability_score, representativeness, total_variation)

__all__ = [
    "metrics", "brier_score", "classification_metrics", "distribution_metrics", "jensen_shannon",
    "kl_divergence", "negative_log_likelihood", "ordinal_wasserstein", "ordinal_wasserstein_jax",
    "ranked_probability_score", "representativeness", "total_variation",
]
