"""Common answer scales, Chinese and English, for ordering options a catalog does not list.

Each scale maps an answer (its `answer_key`) to a rank; synonyms share a rank. A question's
option set takes a scale's order only when every option is on that one scale with a rank of its
own; when two scales fit with different orders, or none fits, the question stays nominal. The
ranks run from one end of the scale to the other: which end comes first does not change W1.
"""
from __future__ import annotations

from surveylm_jax.data.answers import answer_key


def _scale(*ranks) -> dict[str, float]:
  """ranks: one tuple of synonyms per rank, in order."""
  out = {}
  for rank, words in enumerate(ranks):
    for w in words:
      out[answer_key(w)] = float(rank)
  return out


SCALES: dict[str, dict[str, float]] = {
    "agreement": _scale(
        ("strongly disagree", "completely disagree", "非常不同意", "完全不同意", "很不同意"),
        ("disagree", "不同意"),
        ("somewhat disagree", "slightly disagree", "tend to disagree", "mostly disagree", "比较不同意",
         "不太同意"),
        ("neither agree nor disagree", "neutral", "说不上同意不同意", "无所谓同意不同意", "中立"),
        ("somewhat agree", "slightly agree", "tend to agree", "mostly agree", "比较同意"),
        ("agree", "同意"),
        ("strongly agree", "completely agree", "非常同意", "完全同意")),
    "frequency": _scale(
        ("never", "从不", "从来没有", "从没有"),
        ("rarely", "seldom", "hardly ever", "很少", "偶尔"),
        ("sometimes", "occasionally", "有时", "有时候"),
        ("often", "frequently", "经常"),
        ("always", "very often", "all the time", "总是", "一直", "非常频繁")),
    "satisfaction": _scale(
        ("very dissatisfied", "completely dissatisfied", "非常不满意", "很不满意"),
        ("dissatisfied", "not satisfied", "不满意"),
        ("somewhat dissatisfied", "比较不满意", "不太满意"),
        ("neither satisfied nor dissatisfied", "so-so", "一般", "说不上满意不满意", "说不清"),
        ("somewhat satisfied", "比较满意"),
        ("satisfied", "满意"),
        ("very satisfied", "completely satisfied", "非常满意", "很满意")),
    "happiness": _scale(
        ("very unhappy", "非常不幸福", "很不幸福"),
        ("unhappy", "not happy", "not too happy", "不幸福"),
        ("somewhat unhappy", "比较不幸福", "不太幸福"),
        ("neither happy nor unhappy", "so-so", "一般", "说不上幸福不幸福"),
        ("pretty happy", "somewhat happy", "fairly happy", "比较幸福"),
        ("happy", "幸福"),
        ("very happy", "非常幸福", "很幸福")),
    "trust": _scale(
        ("no trust at all", "do not trust at all", "not at all", "完全不信任", "非常不信任", "根本不信任"),
        ("not very much", "do not trust", "不信任"),
        ("little trust", "trust a little", "不太信任", "比较不信任"),
        ("some trust", "trust somewhat", "一般", "说不上信任不信任"),
        ("quite a lot", "trust", "比较信任", "信任"),
        ("a great deal", "trust completely", "complete trust", "非常信任", "完全信任")),
    "amount": _scale(
        ("far too little", "much too little", "远远太少"),
        ("too little", "too few", "太少", "过少", "不够"),
        ("about right", "about the right amount", "just right", "正好", "合适", "适中", "刚好"),
        ("too much", "too many", "太多", "过多"),
        ("far too much", "much too much", "远远太多")),
    "level": _scale(
        ("much lower", "much below average", "far below average", "低很多", "远低于平均"),
        ("low", "lower", "below average", "低", "较低", "偏低", "更低", "低于平均"),
        ("same", "about the same", "average", "equal", "持平", "差不多", "一样", "平均水平"),
        ("high", "higher", "above average", "高", "较高", "偏高", "更高", "高于平均"),
        ("much higher", "much above average", "far above average", "高很多", "远高于平均")),
    "change": _scale(
        ("much worse", "差了很多", "差很多"),
        ("worse", "worse off", "declined", "gone down", "更差了", "变差了", "更差", "变差", "下降了", "下降"),
        ("about the same", "stayed the same", "no change", "差不多", "没什么变化", "没有变化", "不变"),
        ("better", "better off", "improved", "gone up", "更好了", "变好了", "更好", "变好", "上升了", "上升"),
        ("much better", "好了很多", "好很多")),
    "gap": _scale(
        ("narrowed a lot", "大幅缩小"),
        ("narrowed", "narrowing", "decreased", "shrunk", "缩小", "缩小了", "减小"),
        ("no change", "unchanged", "stayed the same", "没什么变化", "没有变化", "不变"),
        ("widened", "widening", "increased", "grown", "扩大", "扩大了", "增大"),
        ("widened a lot", "大幅扩大")),
    "importance": _scale(
        ("not at all important", "完全不重要", "一点也不重要"),
        ("not very important", "not too important", "不太重要", "不重要"),
        ("somewhat important", "fairly important", "比较重要", "有点重要"),
        ("very important", "非常重要", "很重要"),
        ("extremely important", "极其重要")),
    "likelihood": _scale(
        ("very unlikely", "not at all likely", "非常不可能", "完全不可能"),
        ("unlikely", "not very likely", "不太可能", "不可能"),
        ("somewhat likely", "fairly likely", "有可能", "比较可能"),
        ("likely", "very likely", "很可能", "非常可能")),
    # Task-3 stances: the canonical order is positive -> neutral -> negative.
    "stance": _scale(
        ("positive", "积极"),
        ("neutral", "中立"),
        ("negative", "消极")),
}


def infer_scale(option_texts) -> tuple[str, tuple[int, ...]] | None:
  """(scale name, listed indices in scale order) when exactly one order fits, else None."""
  keys = [answer_key(t) for t in option_texts]
  if len(keys) < 2 or len(set(keys)) != len(keys):
    return None
  fits = {}
  for name, scale in SCALES.items():
    ranks = [scale.get(k) for k in keys]
    if any(r is None for r in ranks) or len(set(ranks)) != len(ranks):
      continue
    fits[name] = tuple(sorted(range(len(keys)), key=lambda i: ranks[i]))
  orders = set(fits.values())
  reversed_orders = {o[::-1] for o in orders}
  # Two scales fitting in opposite directions order the options the same way for W1.
  if len(orders) == 1 or (len(orders) == 2 and orders == reversed_orders):
    name = sorted(fits)[0]
    return name, fits[name]
  return None
