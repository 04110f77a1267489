"""Writes an evaluation: metrics.json, predictions.jsonl, report.md and plots/*.png.

The report puts the model beside the baselines in every table; plots show predicted vs human
distributions per question and group, subgroup gaps, and calibration of the model's top answer.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"cannot write {type(x).__name__} to JSON")


def _fmt(x, digits: int = 3) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "–"
  return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _table(header, rows) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def markdown(result: dict, plots: list[str]) -> str:
  parts = [f"# Evaluation: {result['model']}" + (f" + {result['adapter']}" if result.get("adapter") else ""),
           "", f"Read-out: **{result['readout']}**. Data: {', '.join(result['data'])}.",
           f"Records: {result['counts']['individual']} individual, {result['counts']['group']} group; "
           f"{result['counts']['train']} training records for the baselines."
           + (f" Subsample: {result['sampling']}; group human shares are over the whole test split, "
              "the aggregated predictions over the sampled members." if result.get("sampling") else ""), ""]
  if result.get("limits") and (result["limits"]["max_respondents"] > 0 or result["limits"]["max_records"] > 0):
    lim = result["limits"]
    parts.append(f"Limits: max_respondents {lim['max_respondents']}, max_records {lim['max_records']}; kept "
                 + ", ".join(f"{k} {v}" for k, v in lim["kept"].items())
                 + f"; position bias on {lim.get('position_bias_records', 0)} records.")
  cat = result.get("question_catalog")
  if cat and cat["questions"]:
    parts.append(f"Question catalog: {cat['questions']} questions; option order from "
                 + ", ".join(f"{k} {v}" for k, v in cat["by_source"].items() if v) + ".")
    if cat["inferred"]:
      parts += ["", "Inferred option orders (check them):", "",
                _table(["question", "scale", "canonical order"],
                       [[str(i["question"])[:80], i["scale"], " < ".join(i["order"])] for i in cat["inferred"]])]
    if cat["nominal"]:
      parts += ["", f"{len(cat['nominal'])} nominal questions (no known order: no W1, no RPS): "
                + "; ".join(str(n["question"])[:60] for n in cat["nominal"][:10]) + "."]
    parts.append("")
  if result.get("records_per_second"):
    parts.append(f"Read-out speed: {result['records_per_second']:.2f} records/s "
                 f"({result['readout_seconds']:.0f} s).")
  if result.get("option_mass"):
    parts.append(f"Mean probability mass on option letters: {result['option_mass']['mean']:.3f} "
                 f"(min {result['option_mass']['min']:.3f}).")
  if result.get("parse"):
    p = result["parse"]
    parts.append(f"Parse failures: {p['failed']} of {p['total']} ({p['failure_rate']:.1%}), by reason "
                 f"{p['failures_by_reason']}; failures count as wrong answers.")
  if result["individual"]:
    parts += ["", "## Task 4, individual responses", "",
              _table(["predictor", "accuracy", "macro F1", "weighted F1", "NLL", "Brier", "RPS", "parse failures"],
                     [[n, m["accuracy"], m["macro_f1"], m["weighted_f1"], m["nll"], m["brier"], m["rps"],
                       m["parse_failures"]] for n, m in result["individual"].items()])]
  g = result["group"]
  if g["summary"]:
    parts += ["", "## Group distributions (tasks 3 and 4)", "",
              "Distances over the options in each question's canonical order (question catalog below); "
              "nominal questions get JS, TV and KL only, so W1 columns are over the ordinal groups. Noise "
              "floor = mean distance of a multinomial resample at the group's size from the human shares: "
              + ", ".join(f"{k} {_fmt(v)}" for k, v in g["noise_floor"].items()) + ".", "",
              _table(["predictor", "groups", "ordinal", "W1", "W1/(K-1)", "repr.", "JS (bits)", "TV", "KL",
                      "gap closed vs uniform", "vs marginal"],
                     [[n, s.get("groups"), s.get("ordinal_groups"), s.get("w1"), s.get("w1_normalized"),
                       s.get("representativeness"),
                       s.get("js"), s.get("tv"), s.get("kl"), s.get("gap_closed_vs_uniform_of_means"),
                       s.get("gap_closed_vs_marginal_of_means")] for n, s in sorted(g["summary"].items())]),
              "", "`*_aggregated`: mean of the distributions predicted for the group's test respondents. "
              "`model_group_prompt`: the option-letter distribution at the start of the answer to the group "
              "prompt; that prompt asks for share lines that begin with \"A.\", so this read-out leans "
              "towards the first option. Gap closed is of the mean W1 (baseline - model) / (baseline - floor)."]
  if result["fairness"]:
    parts += ["", "## Subgroups (fairness)", ""]
    rows = []
    for name, f in result["fairness"].items():
      s = f["summary"].get("accuracy")
      if s:
        rows.append([name, s["overall"], s["worst_group"], s["worst"], s["range"]])
    parts.append(_table(["predictor", "overall accuracy", "worst subgroup", "its accuracy", "range"], rows))
    model_groups = result["fairness"].get("model", {}).get("subgroups", {})
    if model_groups:
      parts += ["", _table(["subgroup (model)", "n", "accuracy", "macro F1", "NLL", "W1/(K-1)"],
                           [[k, v["n"], v["accuracy"], v["macro_f1"], v["nll"], v["w1_normalized"]]
                            for k, v in model_groups.items()])]
  if result.get("position_bias"):
    b = result["position_bias"]
    parts += ["", "## Position bias", "",
              f"{b['items']} items, every option order (K ≤ 4). A-bias {b['a_bias']:+.3f}; order sensitivity "
              f"(mean TV between orders) {b['order_sensitivity']:.3f}; top answer in the first shown slot "
              f"{b['share_argmax_first_shown']:.1%}.", "",
              _table(["scores", "accuracy", "macro F1", "NLL"],
                     [["listed order", b["listed_order"]["accuracy"], b["listed_order"]["macro_f1"],
                       b["listed_order"]["nll"]],
                      ["permutation-averaged", b["debiased"]["accuracy"], b["debiased"]["macro_f1"],
                       b["debiased"]["nll"]]])]
  for task, m in (result.get("generated_tasks") or {}).items():
    parse = m["parse"]
    parts += ["", f"## {task} (generate, then parse)", "",
              f"Parse failures: {parse['failed']} of {parse['total']}, by reason {parse['failures_by_reason']}.", ""]
    scalars = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    parts.append(_table(list(scalars), [list(scalars.values())]))
    gen = m.get("generation")
    if gen:
      parts += ["", f"Generation: at most {gen['max_new_tokens']} new tokens; {gen['cut_at_max_new_tokens']} of "
                f"{gen['outputs']} answers cut at that limit; {gen['programs']} compiled shapes."]
    if "accuracy_per_field" in m:
      parts += ["", _table(["field", "accuracy"], list(m["accuracy_per_field"].items()))]
  if plots:
    parts += ["", "## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots]
  return "\n".join(parts) + "\n"


def _plot_groups(per_group, path, max_panels: int = 12):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = per_group[:max_panels]
  cols = 3
  fig, axes = plt.subplots(math.ceil(len(rows) / cols), cols, figsize=(12, 3.2 * math.ceil(len(rows) / cols)),
                           squeeze=False)
  names = ["model_aggregated", "model_group_prompt", "logreg_aggregated", "marginal"]
  for ax, row in zip(axes.flat, rows):
    k = len(row["human"])
    x = np.arange(k)
    shown = [n for n in names if n in row["predictions"]]
    width = 0.8 / (len(shown) + 1)
    ax.bar(x, row["human"], width, label="human", color="black")
    for j, n in enumerate(shown):
      ax.bar(x + (j + 1) * width, row["predictions"][n], width, label=n)
    ax.set_xticks(x + 0.4 - width / 2, [str(o)[:14] for o in row.get("options", x)], fontsize=7)
    ax.set_title(f"{row['question_id']} | {', '.join(f'{k}={v}' for k, v in (row['group'] or {}).items())}"[:70],
                 fontsize=8)
  for ax in list(axes.flat)[len(rows):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def _plot_share_scatter(per_group, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 5))
  for n in ("model_aggregated", "model_group_prompt", "logreg_aggregated", "marginal"):
    xs = [h for r in per_group if n in r["predictions"] for h in r["human"]]
    ys = [p for r in per_group if n in r["predictions"] for p in r["predictions"][n]]
    if xs:
      ax.scatter(xs, ys, s=6, alpha=0.5, label=n)
  ax.plot([0, 1], [0, 1], "k--", lw=1)
  ax.set_xlabel("human share")
  ax.set_ylabel("predicted share")
  ax.set_title("Group option shares, all groups and questions")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def _plot_subgroup_gaps(fairness_metrics, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = [n for n in ("model", "logreg", "marginal") if n in fairness_metrics
           and "accuracy" in fairness_metrics[n]["summary"]]
  if not names:
    return False
  groups_ = sorted(fairness_metrics[names[0]]["summary"]["accuracy"]["gap_to_overall"])
  fig, ax = plt.subplots(figsize=(10, 0.3 * len(groups_) + 1.5))
  y = np.arange(len(groups_))
  h = 0.8 / len(names)
  for j, n in enumerate(names):
    gaps = fairness_metrics[n]["summary"]["accuracy"]["gap_to_overall"]
    ax.barh(y + j * h, [gaps.get(g, np.nan) for g in groups_], h, label=n)
  ax.set_yticks(y + 0.4 - h / 2, groups_, fontsize=7)
  ax.axvline(0, color="k", lw=1)
  ax.set_xlabel("accuracy gap to the whole sample")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return True


def _plot_calibration(rows, path, bins: int = 10):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  conf, hit = [], []
  for r in rows:
    if r["task"] != "task4" or r.get("predicted_distribution") is None:
      continue
    conf.append(max(r["predicted_distribution"]))
    hit.append(float(r["predicted_answer"] == r["target"]))
  if not conf:
    return False
  conf, hit = np.asarray(conf), np.asarray(hit)
  edges = np.linspace(0, 1, bins + 1)
  which = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
  mid = [(edges[b] + edges[b + 1]) / 2 for b in range(bins) if np.any(which == b)]
  acc = [hit[which == b].mean() for b in range(bins) if np.any(which == b)]
  cnt = [int(np.sum(which == b)) for b in range(bins) if np.any(which == b)]
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.plot([0, 1], [0, 1], "k--", lw=1)
  ax.plot(mid, acc, "o-")
  for m, a, c in zip(mid, acc, cnt):
    ax.annotate(str(c), (m, a), fontsize=6)
  ax.set_xlabel("model probability of its top answer")
  ax.set_ylabel("accuracy")
  ax.set_title("Calibration (task 4, counts per bin)")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return True


def write_report(out_dir: str, result: dict, rows: list, per_group: list) -> dict:
  """Writes everything under out_dir; returns the paths written."""
  plots_dir = os.path.join(out_dir, "plots")
  os.makedirs(plots_dir, exist_ok=True)
  plots = []
  if per_group:
    _plot_groups(per_group, os.path.join(plots_dir, "group_distributions.png"))
    _plot_share_scatter(per_group, os.path.join(plots_dir, "group_shares_scatter.png"))
    plots += [os.path.join(plots_dir, "group_distributions.png"),
              os.path.join(plots_dir, "group_shares_scatter.png")]
  if result.get("fairness") and _plot_subgroup_gaps(result["fairness"],
                                                    os.path.join(plots_dir, "subgroup_gaps.png")):
    plots.append(os.path.join(plots_dir, "subgroup_gaps.png"))
  if _plot_calibration(rows, os.path.join(plots_dir, "calibration.png")):
    plots.append(os.path.join(plots_dir, "calibration.png"))
  paths = {"metrics": os.path.join(out_dir, "metrics.json"),
           "predictions": os.path.join(out_dir, "predictions.jsonl"),
           "groups": os.path.join(out_dir, "groups.jsonl"),
           "report": os.path.join(out_dir, "report.md"), "plots": plots}
  with open(paths["metrics"], "w") as f:
    json.dump(result, f, indent=1, ensure_ascii=False, default=_json_default)
  with open(paths["predictions"], "w") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
  with open(paths["groups"], "w") as f:
    for row in per_group:
      f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
  with open(paths["report"], "w") as f:
    f.write(markdown(result, plots))
  return paths
