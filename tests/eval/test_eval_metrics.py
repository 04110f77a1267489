"""Metrics on hand-computed cases; ott-jax W1 against scipy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import f1_score

from surveylm_jax.eval import metrics
from surveylm_jax.eval.metrics import MetricInputError, ordinal_wasserstein


def test_w1_hand_cases():
  assert ordinal_wasserstein([1, 0, 0], [0, 0, 1]) == pytest.approx(2.0)
  assert ordinal_wasserstein([1, 0, 0], [0, 0, 1], normalize=True) == pytest.approx(1.0)
  assert ordinal_wasserstein([0.5, 0.5, 0], [0, 0.5, 0.5]) == pytest.approx(1.0)
  assert ordinal_wasserstein([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-7)
  # |CDF diff| = |0.4-0.1| + |0.7-0.8| = 0.4
  assert ordinal_wasserstein([0.4, 0.3, 0.3], [0.1, 0.7, 0.2]) == pytest.approx(0.4, abs=1e-6)
  assert ordinal_wasserstein([1.0], [1.0]) == 0.0


def test_listed_order_not_alphabetical():
  """积极/中立/消极 in the question's order (positive, neutral, negative). All mass moving from
  positive to negative is 2 steps; the reference's alphabetical sort (中立, 消极, 积极 by code
  point) would put positive and negative next to each other (1 step)."""
  labels = ["积极", "中立", "消极"]
  human = np.array([1.0, 0.0, 0.0])
  model = np.array([0.0, 0.0, 1.0])
  assert ordinal_wasserstein(model, human) == pytest.approx(2.0)
  order = sorted(range(3), key=lambda i: labels[i])
  assert [labels[i] for i in order] == ["中立", "消极", "积极"]
  assert ordinal_wasserstein(model[order], human[order]) == pytest.approx(1.0)  # the flaw we avoid


def test_support_differs_counts_every_option():
  """Options with zero mass still hold their ordinal place (the reference only counted options
  that appeared, which collapses [0.5, 0, 0.5] vs [0, 1, 0] into a 2-point problem)."""
  assert ordinal_wasserstein([0.5, 0.0, 0.5], [0.0, 1.0, 0.0]) == pytest.approx(1.0)
  assert ordinal_wasserstein([0, 0, 0, 1], [1, 0, 0, 0]) == pytest.approx(3.0)
  assert ordinal_wasserstein([0, 0, 0, 1], [1, 0, 0, 0], normalize=True) == pytest.approx(1.0)


def test_w1_matches_scipy_on_random_ordinal_distributions():
  rng = np.random.default_rng(0)
  for k in (2, 3, 4, 5, 7, 11):
    p = rng.dirichlet(np.ones(k), size=20)
    q = rng.dirichlet(np.ones(k) * 0.3, size=20)   # sparse-ish: supports differ
    ours = ordinal_wasserstein(p, q)
    ref = [scipy.stats.wasserstein_distance(np.arange(k), np.arange(k), a, b) for a, b in zip(p, q)]
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_w1_is_a_differentiable_loss():
  q = jnp.array([0.1, 0.2, 0.7])
  loss = lambda logits: metrics.ordinal_wasserstein_jax(jax.nn.softmax(logits), q)
  g = jax.grad(loss)(jnp.zeros(3))
  assert np.all(np.isfinite(g)) and float(jnp.abs(g).sum()) > 0
  assert g[2] < 0   # more mass on the last option lowers the distance


def test_other_distances_hand_cases():
  assert metrics.total_variation([1, 0], [0, 1]) == pytest.approx(1.0)
  assert metrics.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
  assert metrics.jensen_shannon([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
  assert metrics.kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(
      0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75))
  assert metrics.representativeness([1, 0, 0], [0, 0, 1]) == pytest.approx(0.0)
  d = metrics.distribution_metrics([0.5, 0.5, 0], [0, 0.5, 0.5])
  assert d["w1"] == pytest.approx(1.0) and d["w1_normalized"] == pytest.approx(0.5)
  assert d["representativeness"] == pytest.approx(0.5)


def test_bad_distributions_are_named():
  with pytest.raises(MetricInputError, match="does not sum to 1"):
    ordinal_wasserstein([0.5, 0.2], [0.5, 0.5])
  with pytest.raises(MetricInputError, match="negative"):
    ordinal_wasserstein([1.2, -0.2], [0.5, 0.5])
  with pytest.raises(MetricInputError, match="same options in the same order"):
    ordinal_wasserstein([1.0, 0.0], [0.5, 0.25, 0.25])


def test_probabilistic_scores_hand_cases():
  probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
  targets = [0, 1]
  assert metrics.negative_log_likelihood(probs, targets) == pytest.approx(-(np.log(0.5) + np.log(0.1)) / 2)
  brier = ((0.5 ** 2 + 0.3 ** 2 + 0.2 ** 2) + (0.1 ** 2 + 0.9 ** 2 + 0.8 ** 2)) / 2
  assert metrics.brier_score(probs, targets) == pytest.approx(brier)
  # RPS: cdfs [0.5, 0.8] vs [1, 1] -> 0.25 + 0.04; [0.1, 0.2] vs [0, 1] -> 0.01 + 0.64; / (K-1)
  assert metrics.ranked_probability_score(probs, targets) == pytest.approx(((0.29 + 0.65) / 2) / 2)
  with pytest.raises(MetricInputError, match="target indices"):
    metrics.brier_score(probs, [0, 3])


def test_macro_f1_over_answer_identity_matches_sklearn():
  true = ["too little", "about right", "too much", "too little", "about right", "too little"]
  pred = ["too little", "too little", "too much", "about right", "about right", None]
  out = metrics.classification_metrics(true, pred)
  sk_pred = [p if p is not None else "<failed>" for p in pred]
  # sklearn sees the failure as an extra class; ours counts it wrong without a class of its own.
  labels = sorted(set(true))
  assert out["accuracy"] == pytest.approx(3 / 6)
  assert out["macro_f1"] == pytest.approx(f1_score(true, sk_pred, labels=labels, average="macro"))
  assert out["weighted_f1"] == pytest.approx(f1_score(true, sk_pred, labels=labels, average="weighted"))
  assert out["parse_failures"] == 1
  assert metrics.per_option_accuracy(true, pred) == {"about right": 0.5, "too little": 1 / 3, "too much": 1.0}
