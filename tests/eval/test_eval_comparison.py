"""Comparison of evaluation runs: headline numbers, checks, table, summary.json and report."""
import json
import os

import pytest

from surveylm_jax.eval import comparison


def _metrics(model_acc, model_w1, sampling="24 of 481"):
  def individual(acc):
    return {"accuracy": acc, "macro_f1": acc / 2, "nll": 1.0, "n": 100}

  def group(w1):
    return {"w1_normalized": w1, "representativeness": 1 - w1, "js": 0.01, "groups": 7}

  def fair(name, worst):
    return {"summary": {"accuracy": {"worst_group": name, "worst": worst}}}
  return {
      "counts": {"individual": 100, "group": 7, "train": 900},
      "sampling": sampling,
      "individual": {"model": individual(model_acc), "uniform": individual(0.4),
                     "marginal": individual(0.55), "logreg": individual(0.58)},
      "group": {"summary": {"model_aggregated": group(model_w1), "uniform_aggregated": group(0.2),
                            "marginal_aggregated": group(0.05), "logreg_aggregated": group(0.06)},
                "noise_floor": {"w1_normalized": 0.04}},
      "fairness": {"model": fair("race=other", model_acc - 0.1), "uniform": fair("sex=male", 0.3),
                   "marginal": fair("race=black", 0.4), "logreg": fair("race=black", 0.5)},
  }


def test_summary_checks_and_table(tmp_path):
  summary = comparison.build_summary(_metrics(0.46, 0.125), _metrics(0.50, 0.10))
  assert set(summary) >= {"zero_shot", "two_stage", "baselines"}
  assert set(summary["baselines"]) == {"uniform", "marginal", "logreg"}
  for entry in [summary["zero_shot"], summary["two_stage"], *summary["baselines"].values()]:
    assert set(comparison.HEADLINE) <= set(entry)
  assert summary["two_stage"]["worst_subgroup"] == "race=other"
  checks = summary["checks"]
  assert checks["two_stage_beats_zero_shot_on_accuracy"] is True
  assert checks["two_stage_beats_zero_shot_on_w1_normalized"] is True   # lower W1 is better
  assert checks["two_stage_beats_marginal_on_accuracy"] is False
  assert checks["two_stage_beats_uniform_on_w1_normalized"] is True
  text = comparison.table(summary)
  assert text.splitlines()[2].startswith(
      "| zero-shot | 0.460 | 0.230 | 1.000 | - | 0.125 | 0.875 | race=other (0.360)")
  report = comparison.write_report(str(tmp_path), summary, {"Stage II": [
      {"step": 1, "loss": 2.0, "token_ce": 1.0, "option_kl": 1.0},
      {"step": 2, "loss": 1.0, "token_ce": 0.5, "option_kl": 0.5}]}, ["zero-shot: 10 s"])
  assert json.load(open(tmp_path / "summary.json"))["two_stage"]["accuracy"] == 0.5
  assert os.path.getsize(tmp_path / "plots" / "methods.png") > 0
  assert os.path.getsize(tmp_path / "plots" / "training.png") > 0
  assert "two stage beats zero shot on accuracy: yes" in open(report).read()


def test_runs_on_different_records_are_refused():
  with pytest.raises(ValueError, match="different records"):
    comparison.build_summary(_metrics(0.4, 0.1), _metrics(0.5, 0.1, sampling="30 of 481"))
  with pytest.raises(KeyError, match="no individual metrics for 'nope'"):
    comparison.summarize(_metrics(0.4, 0.1), "nope")


def _calibrated(metrics, nll, temperature):
  metrics["individual"]["model_calibrated"] = dict(metrics["individual"]["model"], nll=nll, ece=0.02)
  metrics["group"]["summary"]["model_calibrated_aggregated"] = metrics["group"]["summary"][
      "model_aggregated"]
  metrics["fairness"]["model_calibrated"] = metrics["fairness"]["model"]
  metrics["calibration"] = {"temperature": temperature}
  return metrics


def test_calibrated_rows_follow_their_model(tmp_path):
  summary = comparison.build_summary(_calibrated(_metrics(0.46, 0.125), 0.9, 1.7),
                                     _calibrated(_metrics(0.50, 0.10), 0.8, 1.3))
  names = [name for name, _ in comparison.rows(summary)]
  assert names[:4] == ["zero-shot", "zero-shot calibrated", "two-stage", "two-stage calibrated"]
  assert summary["two_stage_calibrated"]["temperature"] == 1.3
  assert summary["two_stage_calibrated"]["nll"] == 0.8 and summary["two_stage"]["nll"] == 1.0
  assert "| two-stage calibrated | 0.500 | 0.250 | 0.800 | 0.020 |" in comparison.table(summary)


def test_forgetting_section_says_where_two_stage_is_worse(tmp_path):
  other = comparison.build_summary(_metrics(0.46, 0.125), _metrics(0.40, 0.10))
  result = {"zero_shot": other["zero_shot"], "two_stage": other["two_stage"], "baselines": {},
            "data": {"files": ["wvs/test.json"], "counts": other["data"]["counts"]},
            "no_worse": {m: comparison.no_worse(other["two_stage"][m], other["zero_shot"][m], m)
                         for m in ("accuracy", "nll", "w1_normalized")}}
  assert result["no_worse"] == {"accuracy": False, "nll": True, "w1_normalized": True}
  summary = dict(comparison.build_summary(_metrics(0.46, 0.125), _metrics(0.50, 0.10)),
                 forgetting=result)
  text = open(comparison.write_report(str(tmp_path), summary, {}, [])).read()
  assert "## No forgetting: another survey's items" in text
  assert "| two-stage | 0.400 |" in text and "no (worse on accuracy)" in text
