"""Reading answers out of generated free text (the generate read-out), with every failure counted.

Models answer in many shapes: "C", "C. middle class", "(C)", "**C**", "The answer is C",
"middle class", JSON such as {"answer": "C"} or {"predict": "积极", "reason": ...} inside ```json
code fences, with or without <think>...</think> reasoning first. A parse returns a `Parsed`
whose `value` is None on failure together with a reason; `ParseTally` counts the failures by
reason so they are reported and never scored as an answer.
"""
from __future__ import annotations

import ast
import collections
import dataclasses
import json
import re

from surveylm_jax.data import prompt_layouts
from surveylm_jax.data.answers import answer_key

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_ANSWER_IS = re.compile(
    r"(?i:answer|choice|option|答案|选项|选择)\s*(?i:is|would be|:|：|为|是)?\s*[:：]?\s*\(?\**([A-Z])(?![A-Za-z])")
_LEADING_LETTER = re.compile(r"^\W{0,3}\(?\**([A-Z])\**\)?(?:[.．、:：)）\s]|$)")
_JSON_ANSWER_KEYS = ("answer", "option", "choice", "predict", "prediction", "label")


@dataclasses.dataclass(frozen=True)
class Parsed:
  value: object | None          # option index, stance name, list of values ... or None
  reason: str = "ok"            # why it failed ("ok" when value is set)
  how: str = ""                 # which form matched (letter, text, json, answer_is ...)

  @property
  def ok(self) -> bool:
    return self.value is not None


class ParseTally:
  """Counts parses and failures by reason; `summary()` goes into metrics.json."""

  def __init__(self):
    self.total = 0
    self.failures = collections.Counter()
    self.forms = collections.Counter()
    self.examples = []

  def add(self, parsed: Parsed, text: str, keep_examples: int = 5) -> Parsed:
    self.total += 1
    if parsed.ok:
      self.forms[parsed.how] += 1
    else:
      self.failures[parsed.reason] += 1
      if len(self.examples) < keep_examples:
        self.examples.append({"reason": parsed.reason, "text": text[:200]})
    return parsed

  def summary(self) -> dict:
    failed = sum(self.failures.values())
    return {"total": self.total, "parsed": self.total - failed, "failed": failed,
            "failure_rate": failed / self.total if self.total else 0.0,
            "failures_by_reason": dict(self.failures), "forms": dict(self.forms),
            "failure_examples": self.examples}


def strip_reasoning(text: str) -> str | None:
  """Drops closed <think> blocks; None if a <think> block never closes (no answer was given)."""
  text = _THINK_BLOCK.sub("", text)
  if re.search(r"<think>", text, re.I):
    return None
  return text.replace("</think>", "").strip()


def _json_payload(text: str):
  """The first JSON object/list in the text (fenced or bare), or None."""
  candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text.strip()]
  for candidate in candidates:
    start = min([i for i in (candidate.find("{"), candidate.find("[")) if i >= 0], default=-1)
    if start < 0:
      continue
    for end in range(len(candidate), start, -1):
      if candidate[end - 1] not in "}]":
        continue
      try:
        return json.loads(candidate[start:end])
      except json.JSONDecodeError:
        continue
  return None


def _json_answer_field(payload):
  if isinstance(payload, dict):
    for key in _JSON_ANSWER_KEYS:
      for k, v in payload.items():
        if str(k).lower() == key:
          return str(v)
  return None


def _answer_body(text: str):
  """(text without reasoning, None) or (None, the Parsed failure: unclosed think tag / empty)."""
  body = strip_reasoning(text)
  if body is None:
    return None, Parsed(None, "unclosed_think")
  if not body:
    return None, Parsed(None, "empty")
  return body, None


def parse_option_answer(text: str, options) -> Parsed:
  """The option index a generated answer names. `options` are (letter, text) pairs or objects with
  `.letter` and `.text`, in listed order."""
  pairs = [(o.letter, o.text) if hasattr(o, "letter") else (o[0], o[1]) for o in options]
  letters = [l for l, _ in pairs]
  body, failure = _answer_body(text)
  if failure:
    return failure
  payload = _json_payload(body)
  field = _json_answer_field(payload)
  if field is not None:
    result = _match_option(field.strip(), pairs, letters)
    return dataclasses.replace(result, how="json") if result.ok else result
  body = _FENCE.sub(lambda m: m.group(1), body).strip()
  return _match_option(body, pairs, letters)


def _match_option(body: str, pairs, letters) -> Parsed:
  keys = [answer_key(t) for _, t in pairs]
  # 1) the whole answer is an option text, or "C. text" with a matching text
  if answer_key(body) in keys:
    return Parsed(keys.index(answer_key(body)), how="text")
  first_line = body.split("\n", 1)[0].strip()
  m = _LEADING_LETTER.match(first_line)
  if m and m.group(1) in letters:
    index = letters.index(m.group(1))
    rest = answer_key(first_line[m.end():])
    if rest and rest in keys and keys.index(rest) != index:
      return Parsed(None, "letter_text_mismatch")
    return Parsed(index, how="letter")
  m = _ANSWER_IS.search(body)
  if m and m.group(1) in letters:
    index = letters.index(m.group(1))
    # "The answer is A. too much" where A is not "too much": ambiguous, so a failure.
    rest = answer_key(re.sub(r"^[\s.．、:：)）*]+", "", body[m.end():]).split("\n", 1)[0])
    named = [i for i, k in enumerate(keys) if k and rest.startswith(k)]
    if named and index not in named:
      return Parsed(None, "letter_text_mismatch")
    return Parsed(index, how="answer_is")
  # 2) exactly one option text appears in the answer (longest match wins over its substrings)
  lowered = answer_key(body)
  found = [i for i, k in enumerate(keys) if k and k in lowered]
  found = [i for i in found if not any(j != i and keys[i] in keys[j] and keys[j] in lowered for j in found)]
  if len(found) == 1:
    return Parsed(found[0], how="text_in_answer")
  if len(found) > 1:
    return Parsed(None, "several_options")
  if m and m.group(1) not in letters:
    return Parsed(None, "letter_not_an_option")
  return Parsed(None, "no_option_found")


def _stance_words() -> dict:
  """Stance label (lower case) -> stance, over every registered prompt language."""
  return {label.lower(): stance for label, stance in prompt_layouts.STANCE_WORDS.items()}


def parse_stance(text: str) -> Parsed:
  """Task 3: (stance, reason) from {"predict": ..., "reason": ...} JSON or a bare stance word."""
  body, failure = _answer_body(text)
  if failure:
    return failure
  payload = _json_payload(body)
  if isinstance(payload, dict):
    label = _json_answer_field(payload)
    if label is None:
      return Parsed(None, "json_without_predict")
    stance_words = _stance_words()
    stance = stance_words.get(label.strip().lower())
    if stance is None:
      return Parsed(None, "unknown_stance")
    return Parsed((stance, str(payload.get("reason", ""))), how="json")
  stance_words = _stance_words()
  words = {w for w in stance_words if re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", body.lower())}
  stances = {stance_words[w] for w in words}
  if len(stances) == 1:
    return Parsed((stances.pop(), body), how="word")
  return Parsed(None, "several_stances" if stances else "no_stance_found")


def parse_values(text: str, allowed=()) -> Parsed:
  """Task 1: the value(s) named, from a list literal / JSON list or separated text, checked against
  `allowed` (compared by answer identity) when it is given."""
  body = strip_reasoning(text)
  if body is None:
    return Parsed(None, "unclosed_think")
  body = _FENCE.sub(lambda m: m.group(1), body).strip()
  if not body:
    return Parsed(None, "empty")
  values = None
  start, end = body.find("["), body.rfind("]")
  if 0 <= start < end:
    try:
      literal = ast.literal_eval(body[start:end + 1])
      if isinstance(literal, (list, tuple)):
        values = [str(v).strip() for v in literal if str(v).strip()]
    except (ValueError, SyntaxError):
      values = None
  if values is None:
    values = [v.strip() for v in re.split(r"[、;；,，\n]", body) if v.strip()]
  if not values:
    return Parsed(None, "empty")
  if allowed:
    by_key = {answer_key(a): a for a in allowed}
    matched = [by_key[answer_key(v)] for v in values if answer_key(v) in by_key]
    if not matched:  # free text mentioning exactly one allowed value is still an answer
      mentioned = [a for k, a in by_key.items() if k and k in answer_key(body)]
      if len(mentioned) == 1:
        return Parsed((mentioned[0],), how="mentioned")
      return Parsed(None, "not_an_allowed_value")
    return Parsed(tuple(dict.fromkeys(matched)), how="list" if start >= 0 else "text")
  return Parsed(tuple(values), how="list" if start >= 0 else "text")
