"""Small text helpers shared by the task parsers: sections, key/value blocks, lettered options.

They raise `PromptError(field, message, reason)`; the task parser adds file and record.
"""
from __future__ import annotations

import ast
import json
import re

from surveylm_jax.data.answers import OPTION_LINE, answer_key
from surveylm_jax.data.records import Option

_KEY_VALUE = re.compile(r"^([^:：\n]{1,200}?)\s*(?::|：)\s?(.*)$")
_CONTINUATION = re.compile(r"^\s*[（(]\d+[)）]")  # "（2）..." lines continue a multi-line value


class PromptError(ValueError):
  def __init__(self, field: str, message: str, reason: str = "invalid_prompt"):
    super().__init__(message)
    self.field, self.reason = field, reason


def find_marker(text: str, marker: str, field: str = "instruction", start: int = 0) -> int:
  """Offset just after `marker` (and one newline after it); PromptError when it is absent."""
  at = text.find(marker, start)
  if at < 0:
    raise PromptError(field, f"no {marker!r} section", "missing_section")
  end = at + len(marker)
  return end + 1 if text[end:end + 1] == "\n" else end


def block_until_blank(text: str, start: int) -> tuple[int, int]:
  """Span from `start` to the next blank line (or the end)."""
  end = text.find("\n\n", start)
  return start, (len(text) if end < 0 else end)


def parse_key_values(block: str) -> dict[str, str]:
  """'key: value' lines (ASCII or full-width colon); other lines continue the previous value."""
  values: dict[str, str] = {}
  last = None
  for line in block.split("\n"):
    m = _KEY_VALUE.match(line)
    if m and not _CONTINUATION.match(line):
      last = m.group(1).strip()
      values[last] = m.group(2).strip()
    elif line.strip() and last is not None:
      values[last] += "\n" + line.strip()
    elif line.strip():
      raise PromptError("instruction", f"background line {line!r} is not 'key: value'")
  return values


def parse_dict_literal(block: str) -> dict[str, str]:
  """A background written as a Python dict literal (task 2 releases); lists become 'a, b'."""
  try:
    value = ast.literal_eval(block.strip())
  except (ValueError, SyntaxError) as e:
    raise PromptError("instruction", f"background is not a Python dict literal ({e})") from None
  if not isinstance(value, dict):
    raise PromptError("instruction", "background is not a dict")
  return {str(k): (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
          for k, v in value.items()}


def parse_question_and_options(text: str, start: int, options_marker: str | None):
  """Question lines then lettered option lines, from `start` to the next blank line.

  Returns (question, options, (options_start, options_end)) with offsets into `text`.
  """
  _, end = block_until_blank(text, start)
  lines, offset = [], start
  for line in text[start:end].split("\n"):
    lines.append((offset, line))
    offset += len(line) + 1
  if options_marker is not None:
    marker_at = next((i for i, (_, l) in enumerate(lines) if l.strip() == options_marker), None)
    if marker_at is None:
      raise PromptError("instruction", f"no {options_marker!r} line after the question", "missing_section")
    question_lines, option_lines = lines[:marker_at], lines[marker_at + 1:]
  else:
    first = len(lines)
    while first > 0 and OPTION_LINE.match(lines[first - 1][1]):
      first -= 1
    question_lines, option_lines = lines[:first], lines[first:]
  question = "\n".join(l for _, l in question_lines).strip()
  if not question:
    raise PromptError("instruction", "empty survey question", "missing_field")
  options = []
  for _, line in option_lines:
    m = OPTION_LINE.match(line)
    if not m:
      raise PromptError("instruction", f"option line {line!r} is not 'LETTER. text'", "bad_option")
    options.append(Option(m.group(1), m.group(2)))
  check_options(options)
  span = (option_lines[0][0], option_lines[-1][0] + len(option_lines[-1][1]))
  return question, tuple(options), span


def parse_context_pairs(block: str, question_tag: str, answer_tag: str) -> tuple:
  """(question, answer) pairs from the lines of an answers-in-context block: a line opened by
  `question_tag`, then one opened by `answer_tag`, per pair. Each text is exactly one line, so
  what a text says ("A. too little", "Survey question:") never changes how it is read."""
  tags = (question_tag.rstrip(), answer_tag.rstrip())  # tolerate a missing space after the tag
  lines = block.split("\n")
  if not block.strip():
    raise PromptError("instruction", "the answers-in-context section lists no answers", "missing_field")
  if len(lines) % 2:
    raise PromptError("instruction", f"the answers-in-context section ends with a question and no "
                      f"answer: {lines[-1][:60]!r}", "invalid_prompt")
  texts = []
  for i, line in enumerate(lines):
    tag = tags[i % 2]
    if not line.startswith(tag):
      raise PromptError("instruction", f"answers-in-context line {line[:60]!r} should start with {tag!r}",
                        "invalid_prompt")
    text = line[len(tag):].strip()
    if not text:
      raise PromptError("instruction", f"answers-in-context line {line!r} is empty", "missing_field")
    texts.append(text)
  return tuple(zip(texts[0::2], texts[1::2]))


def check_options(options) -> None:
  if not options:
    raise PromptError("instruction", "no lettered options", "no_options")
  letters = [o.letter for o in options]
  duplicates = sorted({l for l in letters if letters.count(l) > 1})
  if duplicates:
    raise PromptError("instruction", f"duplicate option letters {duplicates}", "duplicate_letter")
  for o in options:
    if not o.text.strip():
      raise PromptError("instruction", f"option {o.letter} is empty", "empty_option")
  keys = [answer_key(o.text) for o in options]
  same = sorted({k for k in keys if keys.count(k) > 1})
  if same:
    raise PromptError("instruction", f"options repeat the same text {same}", "duplicate_option")


_SHARE_LINE = re.compile(r"^\s*(?:([A-Z])\s*[.．、]\s*)?(.*?)\s*[:：]\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")


def _resolve_label(label_letter, label_text, options) -> int:
  if label_letter is not None:
    idx = next((i for i, o in enumerate(options) if o.letter == label_letter), None)
    if idx is None:
      raise PromptError("output", f"distribution names letter {label_letter} that is not an option",
                        "target_not_in_options")
    if label_text and answer_key(label_text) != answer_key(options[idx].text):
      raise PromptError("output", f"distribution line {label_letter}. {label_text!r} does not match "
                        f"option {options[idx].render()!r}", "target_mismatch")
    return idx
  key = answer_key(label_text)
  idx = next((i for i, o in enumerate(options) if answer_key(o.text) == key), None)
  if idx is None:
    raise PromptError("output", f"distribution names {label_text!r}, which is not an option",
                      "target_not_in_options")
  return idx


def parse_distribution(output: str, options) -> tuple[float, ...]:
  """Shares in option order from 'A. 满意: 45%' lines or a JSON object / list; must sum to 1 ± 0.01."""
  entries = []  # (letter, text, share)
  text = output.strip()
  parsed = None
  if text[:1] in "{[":
    try:
      parsed = json.loads(text)
    except json.JSONDecodeError as e:
      raise PromptError("output", f"distribution is not valid JSON ({e})", "invalid_target") from None
  if isinstance(parsed, list):
    if len(parsed) != len(options):
      raise PromptError("output", f"distribution lists {len(parsed)} shares for {len(options)} options",
                        "bad_distribution")
    entries = [(o.letter, o.text, v) for o, v in zip(options, parsed)]
  elif isinstance(parsed, dict):
    for label, v in parsed.items():
      letter, label_text = (label, "") if re.fullmatch(r"[A-Z]", label) else (None, label)
      m = OPTION_LINE.match(label)
      if m and letter is None:
        letter, label_text = m.group(1), m.group(2)
      entries.append((letter, label_text, v))
  else:
    for line in text.split("\n"):
      if not line.strip():
        continue
      m = _SHARE_LINE.match(line)
      if not m:
        raise PromptError("output", f"distribution line {line!r} is not 'A. option: 45%'", "bad_distribution")
      entries.append((m.group(1), m.group(2), m.group(3) + m.group(4)))
  shares = [None] * len(options)
  for letter, label_text, value in entries:
    idx = _resolve_label(letter, label_text, options)
    if shares[idx] is not None:
      raise PromptError("output", f"option {options[idx].render()!r} appears twice", "bad_distribution")
    shares[idx] = _share_value(value)
  missing = [options[i].render() for i, s in enumerate(shares) if s is None]
  if missing:
    raise PromptError("output", f"distribution has no share for {missing}", "bad_distribution")
  check_distribution(shares)
  return tuple(shares)


def _share_value(value) -> float:
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  if isinstance(value, str):
    v = value.strip()
    try:
      return float(v[:-1]) / 100.0 if v.endswith("%") else float(v)
    except ValueError:
      pass
  raise PromptError("output", f"share {value!r} is not a number or percentage", "bad_distribution")


def check_distribution(shares) -> None:
  if any(s < 0 for s in shares):
    raise PromptError("output", f"negative share in {list(shares)}", "bad_distribution")
  total = sum(shares)
  if abs(total - 1.0) > 0.01:
    raise PromptError("output", f"shares sum to {total:.4f}, not 1 ± 0.01", "distribution_sum")
