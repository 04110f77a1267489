"""Temperature scaling and calibration scores (surveylm_jax/eval/calibration.py)."""
import time

import numpy as np
import pytest

from surveylm_jax.eval import calibration


def _softmax(z):
  z = np.exp(z - z.max())
  return z / z.sum()


def _synthetic(t0: float, n: int, seed: int):
  """Records with 2-6 options: answers drawn from softmax(z / t0), the model says softmax(z)."""
  rng = np.random.default_rng(seed)
  model, truth, answers = [], [], []
  for k in rng.integers(2, 7, size=n):
    z = rng.normal(0.0, 2.0, size=k)
    p_true = _softmax(z / t0)
    model.append(_softmax(z))
    truth.append(p_true)
    answers.append(int(min(np.searchsorted(np.cumsum(p_true), rng.random()), k - 1)))
  return model, truth, answers


@pytest.mark.parametrize("t0", [2.5, 0.6])
def test_fit_recovers_the_temperature(t0):
  model, _, answers = _synthetic(t0, 20000, seed=1)
  t = calibration.fit_temperature(calibration.log_probs(model), answers)
  assert t == pytest.approx(t0, rel=0.05)
  # Logits work as well as log-probabilities: a per-record constant drops out.
  shifted = [lp + 7.0 * i % 3 for i, lp in enumerate(calibration.log_probs(model))]
  assert calibration.fit_temperature(shifted, answers) == pytest.approx(t, rel=1e-4)
  # Calibration lowers the NLL and the ECE.
  calibrated = [calibration.apply_temperature(p, t) for p in model]
  assert calibration.nll(calibrated, answers) < calibration.nll(model, answers)
  assert (calibration.expected_calibration_error(calibrated, answers)
          < calibration.expected_calibration_error(model, answers))


def test_fit_is_fast_deterministic_and_bounded():
  model, _, answers = _synthetic(2.5, 10000, seed=2)
  lp = calibration.log_probs(model)
  start = time.perf_counter()
  t = calibration.fit_temperature(lp, answers)
  assert time.perf_counter() - start < 1.0
  assert calibration.fit_temperature(lp, answers) == t
  # Answers always on the model's top option: sharper is always better, so T stops at the bound.
  top = [int(np.argmax(p)) for p in model]
  assert calibration.fit_temperature(lp, top) == pytest.approx(calibration.T_BOUNDS[0], rel=1e-3)


def test_fit_without_information_is_one():
  # One-hot predictions (a generate read-out) do not change with T.
  onehots = [np.eye(3)[0], np.eye(4)[2]]
  assert calibration.fit_on_distributions(onehots, [0, 1]) == 1.0


def test_ragged_options_and_zero_mass():
  p = [np.array([0.7, 0.3]), np.array([0.5, 0.2, 0.2, 0.1]), np.array([0.0, 0.6, 0.4])]
  t = calibration.fit_on_distributions(p, [1, 0, 2])
  assert calibration.T_BOUNDS[0] <= t <= calibration.T_BOUNDS[1]
  # Padding: the same records in a different order (widest first) give the same T.
  assert calibration.fit_on_distributions(p[::-1], [2, 0, 1]) == pytest.approx(t, rel=1e-6)
  out = calibration.apply_temperature(p[2], 3.0)
  assert out[0] == 0.0 and out.sum() == pytest.approx(1.0)
  assert out[1] / out[2] == pytest.approx((0.6 / 0.4) ** (1 / 3))
  assert calibration.apply_temperature(None, 2.0) is None


def test_nll_and_brier_by_hand():
  probs = [np.array([0.8, 0.2]), np.array([0.1, 0.3, 0.6])]
  answers = [0, 1]
  assert calibration.nll(probs, answers) == pytest.approx(-(np.log(0.8) + np.log(0.3)) / 2)
  # (0.2^2 + 0.2^2) and (0.1^2 + 0.7^2 + 0.6^2)
  assert calibration.brier(probs, answers) == pytest.approx((0.08 + 0.86) / 2)
  # Records without a prediction are left out of every score.
  assert calibration.nll(probs + [None], answers + [0]) == calibration.nll(probs, answers)


def test_ece_small_when_calibrated_large_when_overconfident():
  _, truth, answers = _synthetic(1.0, 20000, seed=3)
  assert calibration.expected_calibration_error(truth, answers) < 0.02
  sharp = [calibration.apply_temperature(p, 0.2) for p in truth]
  assert calibration.expected_calibration_error(sharp, answers) > 0.15


def test_reliability_bins_by_hand():
  probs = [np.array([0.95, 0.05]), np.array([0.9, 0.1]), np.array([0.35, 0.3, 0.35]),
           np.array([1.0, 0.0])]
  answers = [0, 1, 0, 0]
  bins = calibration.reliability(probs, answers)
  assert [(b["lower"], b["count"]) for b in bins] == [(0.3, 1), (0.9, 3)]   # c = 1 is in the last bin
  assert bins[1]["confidence"] == pytest.approx((0.95 + 0.9 + 1.0) / 3)
  assert bins[1]["accuracy"] == pytest.approx(2 / 3)
  # ECE = 1/4 * |1 - 0.35| + 3/4 * |2/3 - 0.95|
  expected = 0.25 * 0.65 + 0.75 * abs(2 / 3 - 0.95)
  assert calibration.expected_calibration_error(probs, answers) == pytest.approx(expected)
  m = calibration.calibration_metrics(probs + [None], answers + [1])
  assert m["scored"] == 4 and m["ece"] == pytest.approx(expected) and m["accuracy"] == 0.75
