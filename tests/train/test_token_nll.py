"""`losses.token_nll` (logsumexp - target logit, hand-written backward) against autodiff of
log_softmax + take_along_axis, the expression it replaces in `token_ce`."""
import jax
import jax.numpy as jnp
import numpy as np

from surveylm_jax.train import losses


def _reference_ce(logits, targets, weights):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _batch(scale=4.0, dtype=jnp.float32):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  logits = (scale * jax.random.normal(keys[0], (3, 9, 50))).astype(dtype)
  targets = jax.random.randint(keys[1], (3, 9), 0, 50)
  mask = (jax.random.uniform(keys[2], (3, 9)) > 0.4).astype(jnp.int32)
  return logits, {"targets": targets, "loss_mask": mask}


def _loss_and_grad(fn, logits, batch):
  return jax.jit(jax.value_and_grad(fn))(logits, batch)


def test_token_ce_and_its_gradient_equal_log_softmax_autodiff():
  logits, batch = _batch()
  want = _loss_and_grad(lambda lg, b: _reference_ce(lg, b["targets"], b["loss_mask"]),
                        logits, batch)
  got = _loss_and_grad(lambda lg, b: losses.token_ce(lg, b)[0], logits, batch)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)
  # Positions without loss get exactly zero gradient.
  off = np.asarray(batch["loss_mask"]) == 0
  assert off.any() and not np.asarray(got[1])[off].any()


def test_large_logits_stay_finite_and_exact():
  logits, batch = _batch(scale=3e4)
  got = _loss_and_grad(lambda lg, b: losses.token_ce(lg, b)[0], logits, batch)
  want = _loss_and_grad(lambda lg, b: _reference_ce(lg, b["targets"], b["loss_mask"]),
                        logits, batch)
  assert np.isfinite(got[0]) and np.isfinite(np.asarray(got[1])).all()
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  np.testing.assert_allclose(got[1], want[1], atol=1e-6)


def test_bfloat16_logits_get_a_bfloat16_gradient_equal_to_the_reference():
  logits, batch = _batch(dtype=jnp.bfloat16)
  got = _loss_and_grad(lambda lg, b: losses.token_ce(lg, b)[0], logits, batch)
  want = _loss_and_grad(lambda lg, b: _reference_ce(lg, b["targets"], b["loss_mask"]),
                        logits, batch)
  assert got[1].dtype == jnp.bfloat16
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(got[1], np.float32), np.asarray(want[1], np.float32),
                             atol=1e-3)
