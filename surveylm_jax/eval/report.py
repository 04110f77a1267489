"""Writes an evaluation: metrics.json, predictions.jsonl, report.md and plots/*.png.

The report puts the model beside the baselines in every table; plots show predicted vs human
distributions per question and group, subgroup gaps, and calibration of the model's top answer
(with `eval.calibration_data`, before and after temperature scaling: plots/reliability.png).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import unicodedata

import numpy as np

from surveylm_jax import paths


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


def _extra_metrics_table(extra: dict) -> str:
  """One row per metric (per key of a metric that returns a dict), one column per predictor."""
  predictors = list(dict.fromkeys(p for by_predictor in extra.values() for p in by_predictor))
  rows = []
  for name, by_predictor in extra.items():
    keys = sorted({k for v in by_predictor.values() if isinstance(v, dict) for k in v})
    if not keys:
      rows.append([name] + [by_predictor.get(p) for p in predictors])
    for key in keys:
      rows.append([f"{name}.{key}"] + [(by_predictor.get(p) or {}).get(key) for p in predictors])
  return _table(["metric"] + predictors, rows)


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
              _table(["predictor", "accuracy", "macro F1", "weighted F1", "NLL", "Brier", "RPS", "ECE",
                      "parse failures"],
                     [[n, m["accuracy"], m["macro_f1"], m["weighted_f1"], m["nll"], m["brier"], m["rps"],
                       m.get("ece"), m["parse_failures"]] for n, m in result["individual"].items()]),
              "", "ECE: expected calibration error of the top answer (10 equal-width confidence bins, "
              "|accuracy - mean confidence| weighted by the bin's share of records)."]
  if result.get("calibration"):
    parts += ["", calibration_markdown(result["calibration"])]
  if result.get("extra_metrics"):
    parts += ["", "## Registered metrics (config.eval.metrics)", "", _extra_metrics_table(result["extra_metrics"])]
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


def calibration_markdown(cal: dict) -> str:
  """The temperature, where it was fitted, and the model before/after it on the test records."""
  lines = ["## Calibration (temperature scaling)", "",
           f"T = {cal['temperature']:.3f}, fitted on {cal['validation_scored']} of {cal['validation_records']} "
           f"validation records ({', '.join(cal['data'])}; never on test records) by minimising their mean "
           f"NLL; predictor `{cal['predictor']}` is the model's distributions p^(1/T), renormalised. "
           "T changes no top answer, so accuracy and F1 stay; group W1/(K-1) is of the aggregated members."
           + (f" T is at the end of the searched range {list(cal['bounds'])}." if cal.get("at_bound") else ""), ""]
  header = ["model", "accuracy", "macro F1", "NLL", "Brier", "ECE", "group W1/(K-1)"]
  rows = [[f"{label} (test)", m["accuracy"], m["macro_f1"], m["nll"], m["brier"], m["ece"], m.get("w1_normalized")]
          for label, m in cal["test"].items()]
  rows += [[f"{label} (validation)", m["accuracy"], None, m["nll"], m["brier"], m["ece"], None]
           for label, m in cal["validation"].items()]
  return "\n".join(lines + [_table(header, rows)])


# --- plots ---------------------------------------------------------------------------------------
# Labels come from the data: question texts, options and subgroup values such as
# "yearly income=$50,000 to $89,999". They are drawn as written (no math text, no TeX), cut or
# wrapped to a width counted in display columns (a CJK character takes two), and figures are
# saved with a tight bounding box so that no label is clipped at the edge.
_WIDE = r"\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f" \
        r"\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6"
_TOKENS = re.compile(rf"\s+|[{_WIDE}]|[^\s{_WIDE}]+")
_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC",
              "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC",
              "Heiti SC", "AR PL UMing CN")
PANEL_TITLE_COLUMNS = 46   # one line of a group panel's title (three panels across 12 inches)
QUESTION_COLUMNS = 120     # question text kept in a panel title, before its id (GSS items
                           # differ at their end: "... on the space exploration program?")
LABEL_COLUMNS = 40         # one line of a subgroup label


def _width(text: str) -> int:
  """Display columns: East Asian wide and full-width characters take two."""
  return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def shorten(text: str, columns: int) -> str:
  """`text` cut to at most `columns` display columns, ending in '…' when cut (at a space when one
  is near the end, so English words stay whole)."""
  text = " ".join(str(text).split())
  if _width(text) <= columns:
    return text
  out = ""
  for ch in text:
    if _width(out + ch) > columns - 1:
      break
    out += ch
  space = out.rfind(" ")
  if space >= 0 and _width(out[:space]) >= 2 * columns // 3:
    out = out[:space]
  return out.rstrip(" ,;:") + "…"


def wrap(text: str, columns: int, max_lines: int = 3) -> str:
  """Lines of at most `columns` display columns, broken at spaces or between CJK characters (a
  single longer word stays whole); past `max_lines` the rest is cut with '…' on the last line."""
  text = " ".join(str(text).split())
  lines, starts, line = [], [], ""
  for match in _TOKENS.finditer(text):
    token = match.group()
    if token.isspace():
      line += " " if line else ""
      continue
    if line.strip() and _width(line + token) > columns:
      lines.append(line.rstrip())
      line = ""
    if not line:
      starts.append(match.start())
    line += token
  if line.strip():
    lines.append(line.rstrip())
  if len(lines) > max_lines:
    lines = lines[:max_lines - 1] + [shorten(text[starts[max_lines - 1]:], columns)]
  return "\n".join(lines)


def question_title(row: dict) -> str:
  """A group's question as readers know it: its text, shortened, with the id beside it
  ("Are we spending too much ... on space exploration? (natspac)"); the id alone when the row
  carries no text, or the text alone when the id is the text."""
  qid = str(row.get("question_id") or "")
  text = " ".join(str(row.get("question") or "").split())
  if not text or text == qid:
    return shorten(qid or text, QUESTION_COLUMNS)
  return f"{shorten(text, QUESTION_COLUMNS)} ({qid})"


def _font_families() -> list:
  """DejaVu Sans, then any CJK font installed, so Chinese labels fall back to real glyphs."""
  from matplotlib import font_manager
  installed = {f.name for f in font_manager.fontManager.ttflist}
  return ["DejaVu Sans"] + [name for name in _CJK_FONTS if name in installed]


@contextlib.contextmanager
def plain_text():
  """Matplotlib settings under which every text created or drawn is shown as written. Text
  objects take `parse_math` from rcParams when made, and tick labels are made while saving, so
  both building and saving a figure happen inside this."""
  import matplotlib
  matplotlib.use("Agg")
  rc = {"text.parse_math": False, "text.usetex": False}
  families = _font_families()
  if len(families) > 1:
    rc["font.family"] = families
  with matplotlib.rc_context(rc):
    yield


def _save(fig, path: paths.PathLike):
  import matplotlib.pyplot as plt
  save_png(fig, path, bbox_inches="tight")  # tight: the saved image grows to hold every label
  plt.close(fig)


def save_png(fig, path: paths.PathLike, **kwargs) -> None:
  """`fig.savefig` to a local or gs:// path: matplotlib writes local names or file objects only,
  so it is given the epath's file object (and the format, which it cannot take from a stream)."""
  with paths.as_path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=90, **kwargs)


def _panel_title(row: dict) -> str:
  group = ", ".join(f"{k}={v}" for k, v in (row.get("group") or {}).items())
  title = wrap(question_title(row), PANEL_TITLE_COLUMNS, 3)
  return title + ("\n" + wrap(group, PANEL_TITLE_COLUMNS, 2) if group else "")


def groups_figure(per_group, max_panels: int = 12):
  """Human vs predicted option shares, one panel per group (the first `max_panels`). Call inside
  `plain_text()`."""
  import matplotlib.pyplot as plt
  rows = per_group[:max_panels]
  cols, nrows = 3, math.ceil(len(rows) / 3)
  fig, axes = plt.subplots(nrows, cols, figsize=(12, 3.8 * nrows), squeeze=False, layout="constrained")
  names = ["model_aggregated", "model_group_prompt", "logreg_aggregated", "marginal"]
  for ax, row in zip(axes.flat, rows):
    x = np.arange(len(row["human"]))
    shown = [n for n in names if n in row["predictions"]]
    width = 0.8 / (len(shown) + 1)
    ax.bar(x, row["human"], width, label="human", color="black")
    for j, n in enumerate(shown):
      ax.bar(x + (j + 1) * width, row["predictions"][n], width, label=n)
    ax.set_xticks(x + 0.4 - width / 2, [wrap(o, 14, 2) for o in row.get("options", x)], fontsize=7)
    ax.set_title(_panel_title(row), fontsize=8)
  for ax in list(axes.flat)[len(rows):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=6)
  return fig


def _plot_groups(per_group, path, max_panels: int = 12):
  with plain_text():
    _save(groups_figure(per_group, max_panels), path)


def _plot_share_scatter(per_group, path):
  import matplotlib.pyplot as plt
  with plain_text():
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
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
    _save(fig, path)


def subgroup_gaps_figure(fairness_metrics):
  """Accuracy gap of each subgroup to the whole sample, per predictor; None without accuracy.
  Call inside `plain_text()`."""
  import matplotlib.pyplot as plt
  names = [n for n in ("model", "logreg", "marginal") if n in fairness_metrics
           and "accuracy" in fairness_metrics[n]["summary"]]
  if not names:
    return None
  groups_ = sorted(fairness_metrics[names[0]]["summary"]["accuracy"]["gap_to_overall"])
  labels = [wrap(g, LABEL_COLUMNS, 2) for g in groups_]
  row_height = 0.45 if any("\n" in label for label in labels) else 0.3
  fig, ax = plt.subplots(figsize=(10, row_height * len(groups_) + 1.5), layout="constrained")
  y = np.arange(len(groups_))
  h = 0.8 / len(names)
  for j, n in enumerate(names):
    gaps = fairness_metrics[n]["summary"]["accuracy"]["gap_to_overall"]
    ax.barh(y + j * h, [gaps.get(g, np.nan) for g in groups_], h, label=n)
  ax.set_yticks(y + 0.4 - h / 2, labels, fontsize=7)
  ax.invert_yaxis()  # subgroups read top to bottom in sorted order
  ax.axvline(0, color="k", lw=1)
  ax.set_xlabel("accuracy gap to the whole sample")
  ax.legend(fontsize=7)
  return fig


def _plot_subgroup_gaps(fairness_metrics, path):
  with plain_text():
    fig = subgroup_gaps_figure(fairness_metrics)
    if fig is None:
      return False
    _save(fig, path)
  return True


def _plot_calibration(rows, path, bins: int = 10):
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
  with plain_text():
    fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.plot(mid, acc, "o-")
    for m, a, c in zip(mid, acc, cnt):
      ax.annotate(str(c), (m, a), fontsize=6)
    ax.set_xlabel("model probability of its top answer")
    ax.set_ylabel("accuracy")
    ax.set_title("Calibration (task 4, counts per bin)")
    _save(fig, path)
  return True


def reliability_figure(curves: dict):
  """Reliability diagram: accuracy against mean confidence per bin, one line per
  {label: reliability bins} on the same axes, with the diagonal. Call inside `plain_text()`."""
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
  ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
  for label, bins in curves.items():
    if not bins:
      continue
    conf = [b["confidence"] for b in bins]
    line, = ax.plot(conf, [b["accuracy"] for b in bins], "o-", label=label)
    for b in bins:
      ax.annotate(str(b["count"]), (b["confidence"], b["accuracy"]), fontsize=6, color=line.get_color())
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_xlabel("mean probability of the top answer (bin)")
  ax.set_ylabel("accuracy (bin)")
  ax.set_title("Reliability, task 4 test records (counts per bin)")
  ax.legend(fontsize=7)
  return fig


def _plot_reliability(cal: dict, path) -> bool:
  t = cal["temperature"]
  curves = {"uncalibrated": cal["test"]["uncalibrated"]["reliability"],
            f"calibrated (T = {t:.2f})": cal["test"]["calibrated"]["reliability"]}
  if not any(curves.values()):
    return False
  with plain_text():
    _save(reliability_figure(curves), path)
  return True


def _jsonl(items) -> str:
  return "".join(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n" for row in items)


def write_report(out_dir: paths.PathLike, result: dict, rows: list, per_group: list) -> dict:
  """Writes everything under out_dir (local or gs://); returns the paths written."""
  plots_dir = paths.makedirs(paths.join(out_dir, "plots"))
  plots = []
  if per_group:
    _plot_groups(per_group, plots_dir / "group_distributions.png")
    _plot_share_scatter(per_group, plots_dir / "group_shares_scatter.png")
    plots += [plots_dir / "group_distributions.png", plots_dir / "group_shares_scatter.png"]
  if result.get("fairness") and _plot_subgroup_gaps(result["fairness"],
                                                    plots_dir / "subgroup_gaps.png"):
    plots.append(plots_dir / "subgroup_gaps.png")
  if _plot_calibration(rows, plots_dir / "calibration.png"):
    plots.append(plots_dir / "calibration.png")
  if result.get("calibration") and _plot_reliability(result["calibration"], plots_dir / "reliability.png"):
    plots.append(plots_dir / "reliability.png")
  plots = [os.fspath(p) for p in plots]
  written = {"metrics": paths.join(out_dir, "metrics.json"),
             "predictions": paths.join(out_dir, "predictions.jsonl"),
             "groups": paths.join(out_dir, "groups.jsonl"),
             "report": paths.join(out_dir, "report.md")}
  paths.write_text(written["predictions"], _jsonl(rows))
  paths.write_text(written["groups"], _jsonl(per_group))
  paths.write_text(written["report"], markdown(result, plots))
  # Last and whole: an existing metrics.json marks a finished evaluation (`finished_metrics`).
  paths.write_atomic(written["metrics"],
                     json.dumps(result, indent=1, ensure_ascii=False, default=_json_default))
  return {**{k: os.fspath(v) for k, v in written.items()}, "plots": plots}


def finished_metrics(workdir) -> dict | None:
  """The metrics of a finished `runner.evaluate(config, workdir)` (WORKDIR/eval/metrics.json,
  local or gs://), or None: launch.demo and the no-forgetting check reuse finished runs."""
  metrics = paths.join(workdir, "eval", "metrics.json")
  return json.loads(paths.read_text(metrics)) if metrics.exists() else None
