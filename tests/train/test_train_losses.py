"""Loss registry: hand-computed values, scipy W1, gradients, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from surveylm_jax.eval.metrics import ordinal_wasserstein_jax
from surveylm_jax.train import losses


def test_token_ce_is_masked_mean_of_target_nll():
  logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
  batch = {"targets": jnp.array([[0, 1, 2]]), "loss_mask": jnp.array([[1, 1, 0]])}
  value, aux = losses.token_ce(logits, batch)
  np.testing.assert_allclose(value, (-np.log(0.5) - np.log(0.8)) / 2, rtol=1e-6)
  assert aux["target_tokens"] == 2


def _option_batch(target, k_valid):
  k = len(target)
  logits = jnp.zeros((1, 4, 10)).at[0, 2, 3:3 + k].set(jnp.arange(k, dtype=jnp.float32))
  return logits, {
      "option_positions": jnp.array([[2, -1]]),
      "option_token_ids": jnp.array([[list(range(3, 3 + k))] * 2]),
      "option_mask": jnp.array([[[1] * k_valid + [0] * (k - k_valid)] * 2]),
      "option_targets": jnp.array([[target, [0.0] * k]])}


def test_option_kl_matches_hand_computation():
  target = [0.5, 0.3, 0.2, 0.0]
  logits, batch = _option_batch(target, 3)
  q = np.exp(np.arange(3)) / np.exp(np.arange(3)).sum()
  expected = sum(p * np.log(p / qq) for p, qq in zip(target[:3], q))
  value, _ = losses.option_kl(logits, batch)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_option_w1_distance_equals_scipy_on_random_distributions():
  rng = np.random.RandomState(0)
  for k in (2, 3, 5, 7):
    for _ in range(5):
      p, q = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
      ours = float(ordinal_wasserstein_jax(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)))
      ref = scipy.stats.wasserstein_distance(np.arange(k), np.arange(k), p, q)
      assert abs(ours - ref) <= 1e-5


def test_option_w1_uses_listed_order_and_normalises():
  target = [1.0, 0.0, 0.0]
  logits, batch = _option_batch(target, 3)
  q = np.exp(np.arange(3)) / np.exp(np.arange(3)).sum()
  # All target mass on position 0: W1 = sum_k k*q_k, normalised by K-1 = 2.
  value, _ = losses.option_w1(logits, batch)
  np.testing.assert_allclose(value, (q[1] + 2 * q[2]) / 2, rtol=1e-5)


def test_option_w1_gradient_matches_cdf_formula():
  p = jnp.array([0.1, 0.6, 0.3])

  def via_ott(z):
    return ordinal_wasserstein_jax(p, jax.nn.softmax(z))

  def via_cdf(z):
    return jnp.sum(jnp.abs(jnp.cumsum(p) - jnp.cumsum(jax.nn.softmax(z)))[:-1])
  z = jnp.array([0.3, -0.2, 0.5])
  np.testing.assert_allclose(jax.grad(via_ott)(z), jax.grad(via_cdf)(z), atol=1e-5)


def test_registry_errors_list_valid_names_and_custom_loss_registers():
  with pytest.raises(KeyError, match="token_ce"):
    losses.get("nope")

  @losses.register("test_constant_loss")
  def constant(logits, batch):
    return jnp.sum(logits) * 0 + 2.0, {}
  try:
    fn = losses.combined_loss({"test_constant_loss": 0.5})
    value, aux = fn(jnp.zeros((1, 2, 3)), {})
    assert float(value) == 1.0 and float(aux["loss"]) == 1.0
  finally:
    del losses.LOSSES["test_constant_loss"]
