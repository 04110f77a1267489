"""Side-by-side comparison of evaluation runs on the same test respondents: the headline numbers
of each method, one table, a summary.json, a report with plots.

`summarize(metrics, predictor)` reads one predictor out of a `runner.evaluate` result:
individual accuracy and macro-F1 (answer identity), group-level normalised W1 and
representativeness (the predictor's per-respondent distributions aggregated over each group's
test members, so every method is judged on the same respondents), and the worst subgroup by
accuracy.
"""
from __future__ import annotations

import json
import os

import numpy as np

from surveylm_jax import paths
from surveylm_jax.eval import report

CALIBRATED = "model_calibrated"      # the runner's temperature-scaled predictor
HEADLINE = ("accuracy", "macro_f1", "w1_normalized", "representativeness")
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "w1_normalized": False,
                    "representativeness": True, "nll": False, "ece": False, "brier": False}


def summarize(metrics: dict, predictor: str) -> dict:
  """Headline numbers of one predictor ('model', 'uniform', 'marginal', 'logreg', ...)."""
  individual = metrics["individual"].get(predictor)
  if individual is None:
    raise KeyError(f"no individual metrics for {predictor!r}; have: {sorted(metrics['individual'])}")
  group = metrics["group"]["summary"].get(f"{predictor}_aggregated", {})
  fair = metrics.get("fairness", {}).get(predictor, {}).get("summary", {}).get("accuracy", {})
  return {
      "accuracy": individual["accuracy"], "macro_f1": individual["macro_f1"],
      "nll": individual.get("nll"), "ece": individual.get("ece"), "brier": individual.get("brier"),
      "w1_normalized": group.get("w1_normalized"),
      "representativeness": group.get("representativeness"),
      "js": group.get("js"),
      "worst_subgroup": fair.get("worst_group"), "worst_subgroup_accuracy": fair.get("worst"),
      "records": individual.get("n"), "groups": group.get("groups"),
  }


def build_summary(zero_shot: dict, two_stage: dict, baselines=("uniform", "marginal", "logreg")) -> dict:
  """{'zero_shot', 'two_stage', 'baselines': {name: ...}, 'checks', 'data'}; baselines are read
  from the zero-shot run (both runs score the same respondents; their baselines are identical)."""
  if zero_shot["counts"] != two_stage["counts"] or zero_shot.get("sampling") != two_stage.get("sampling"):
    raise ValueError("the two runs were evaluated on different records: "
                     f"{zero_shot['counts']} / {zero_shot.get('sampling')} vs "
                     f"{two_stage['counts']} / {two_stage.get('sampling')}")
  summary = {"zero_shot": summarize(zero_shot, "model"), "two_stage": summarize(two_stage, "model"),
             "baselines": {name: summarize(zero_shot, name) for name in baselines}}
  # Temperature-scaled read-outs (eval.calibration_data): T fitted on validation respondents.
  for key, metrics in (("zero_shot", zero_shot), ("two_stage", two_stage)):
    if CALIBRATED in metrics["individual"]:
      summary[f"{key}_calibrated"] = summarize(metrics, CALIBRATED)
      summary[f"{key}_calibrated"]["temperature"] = (metrics.get("calibration") or {}).get("temperature")
  summary["checks"] = {
      f"two_stage_beats_{other}_on_{metric}": better(summary["two_stage"][metric], ref[metric], metric)
      for other, ref in [("zero_shot", summary["zero_shot"])] + list(summary["baselines"].items())
      for metric in ("accuracy", "w1_normalized", "nll")}
  summary["data"] = {"counts": zero_shot["counts"], "sampling": zero_shot.get("sampling"),
                     "noise_floor_w1_normalized": zero_shot["group"]["noise_floor"].get("w1_normalized")}
  return summary


def better(value, reference, metric: str) -> bool | None:
  if value is None or reference is None:
    return None
  return bool(value > reference) if HIGHER_IS_BETTER[metric] else bool(value < reference)


def no_worse(value, reference, metric: str) -> bool | None:
  """value at least as good as reference (ties count as no worse)."""
  if value is None or reference is None:
    return None
  return bool(value >= reference) if HIGHER_IS_BETTER[metric] else bool(value <= reference)


def rows(summary: dict) -> list[tuple[str, dict]]:
  models = [("zero-shot", summary["zero_shot"])]
  if "zero_shot_calibrated" in summary:
    models.append(("zero-shot calibrated", summary["zero_shot_calibrated"]))
  models.append(("two-stage", summary["two_stage"]))
  if "two_stage_calibrated" in summary:
    models.append(("two-stage calibrated", summary["two_stage_calibrated"]))
  return models + [(name, s) for name, s in summary["baselines"].items()]


def _fmt(value) -> str:
  return "-" if value is None else f"{value:.3f}"


def table(summary: dict) -> str:
  """A fixed-width text table (also valid Markdown)."""
  header = ["method", "accuracy", "macro-F1", "NLL", "ECE", "group W1/(K-1)", "representativeness",
            "worst subgroup (accuracy)"]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  for name, s in rows(summary):
    worst = f"{s['worst_subgroup']} ({_fmt(s['worst_subgroup_accuracy'])})" if s["worst_subgroup"] else "-"
    numbers = [_fmt(s.get(m)) for m in ("accuracy", "macro_f1", "nll", "ece", "w1_normalized",
                                         "representativeness")]
    lines.append("| " + " | ".join([name] + numbers + [worst]) + " |")
  return "\n".join(lines)


def _plot_methods(summary: dict, path: paths.PathLike):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = [n for n, _ in rows(summary)]
  fig, axes = plt.subplots(1, len(HEADLINE), figsize=(4 * len(HEADLINE), 3.6))
  for ax, metric in zip(axes, HEADLINE):
    values = [s[metric] if s[metric] is not None else np.nan for _, s in rows(summary)]
    colors = [("tab:gray" if n.startswith("zero-shot") else "tab:blue") if i < len(names) - len(
        summary["baselines"]) else "tab:olive" for i, n in enumerate(names)]
    ax.bar(range(len(names)), values, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    arrow = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    ax.set_title(f"{metric} ({arrow} is better)", fontsize=9)
    if metric == "w1_normalized" and summary["data"].get("noise_floor_w1_normalized") is not None:
      ax.axhline(summary["data"]["noise_floor_w1_normalized"], color="k", ls="--", lw=1,
                 label="noise floor")
      ax.legend(fontsize=7)
  fig.tight_layout()
  report.save_png(fig, path)
  plt.close(fig)


def _plot_training(curves: dict, path: paths.PathLike):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.4), squeeze=False)
  for ax, (name, points) in zip(axes.flat, curves.items()):
    for key in ("loss", "token_ce", "option_kl"):
      xs = [p["step"] for p in points if key in p]
      if xs and any(p[key] for p in points if key in p):  # a loss with no terms here stays off
        ax.plot(xs, [p[key] for p in points if key in p], marker="o", ms=3, label=key)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
  fig.tight_layout()
  report.save_png(fig, path)
  plt.close(fig)


def read_curve(metrics_jsonl: paths.PathLike) -> list[dict]:
  """Training records (steps with a loss) of one stage's metrics.jsonl (local or gs://)."""
  lines = paths.read_text(metrics_jsonl).splitlines()
  return [r for r in map(json.loads, filter(str.strip, lines)) if "loss" in r]


def forgetting_table(result: dict) -> str:
  """Zero-shot vs two-stage (and that survey's baselines) on another survey's items."""
  header = ["method", "accuracy", "macro-F1", "NLL", "group W1/(K-1)"]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  entries = [("zero-shot", result["zero_shot"]), ("two-stage", result["two_stage"])]
  entries += list(result.get("baselines", {}).items())
  for name, s in entries:
    lines.append("| " + " | ".join([name] + [_fmt(s.get(m)) for m in
                                             ("accuracy", "macro_f1", "nll", "w1_normalized")]) + " |")
  return "\n".join(lines)


def write_report(out_dir: paths.PathLike, summary: dict, curves: dict, notes: list[str]) -> str:
  """summary.json, report.md and plots/ under out_dir (local or gs://); returns the report path."""
  plots = paths.makedirs(paths.join(out_dir, "plots"))
  paths.write_text(paths.join(out_dir, "summary.json"), json.dumps(summary, indent=1, ensure_ascii=False))
  _plot_methods(summary, plots / "methods.png")
  if curves:
    _plot_training(curves, plots / "training.png")
  checks = summary["checks"]
  lines = ["# Zero-shot vs two-stage LoRA vs baselines", "", table(summary), "",
           f"Test data: {summary['data']['counts']['individual']} individual records, "
           f"{summary['data']['counts']['group']} group distributions"
           + (f"; {summary['data']['sampling']}" if summary["data"]["sampling"] else "") + ".",
           f"Group noise floor (bootstrap of the human shares at each group's size): W1/(K-1) = "
           f"{_fmt(summary['data']['noise_floor_w1_normalized'])}.", "",
           "Group W1/(K-1) and representativeness aggregate each method's per-respondent "
           "distributions over the group's sampled test members; the worst subgroup is by accuracy.",
           "", "## Checks", ""]
  lines += [f"- {name.replace('_', ' ')}: {'yes' if v else ('n/a' if v is None else 'no')}"
            for name, v in checks.items()]
  other = summary.get("forgetting")
  if other:
    worse = [m for m, ok in other["no_worse"].items() if ok is False]
    lines += ["", "## No forgetting: another survey's items", "",
              f"Files (no stage trained on them): {', '.join(other['data']['files'])}; "
              f"{other['data']['counts']['individual']} individual records.", "",
              forgetting_table(other), "",
              "Two-stage no worse than zero-shot on every number: " + (
                  "yes" if not worse else f"no (worse on {', '.join(worse)})") + "."]
  if notes:
    lines += ["", "## Run", ""] + [f"- {n}" for n in notes]
  lines += ["", "## Plots", "", "![methods](plots/methods.png)"]
  if curves:
    lines.append("![training](plots/training.png)")
  lines += ["", "Per-run details (per question, per group, per subgroup): `zero_shot/eval/report.md`, "
            "`two_stage/stage2/eval/report.md`."]
  path = paths.write_text(paths.join(out_dir, "report.md"), "\n".join(lines) + "\n")
  return os.fspath(path)
