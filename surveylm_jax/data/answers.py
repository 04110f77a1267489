"""Answer identity: options are compared by their text, never by their letter or position."""
from __future__ import annotations

import re
import unicodedata

_TRAILING_PUNCT = ".。!！?？;；,，:： "
OPTION_LINE = re.compile(r"^\s*([A-Z])\s*[.．、)）]\s*(.*?)\s*$")


def answer_key(text: str) -> str:
  """Comparable form of an answer: NFKC, case-folded, whitespace collapsed, end punctuation off."""
  text = unicodedata.normalize("NFKC", str(text)).casefold()
  text = re.sub(r"\s+", " ", text).strip()
  return text.strip(_TRAILING_PUNCT)


def parse_option_output(output: str) -> tuple[str | None, str]:
  """Splits an answer like 'C. middle class', 'C' or 'middle class' into (letter, text)."""
  stripped = output.strip()
  m = OPTION_LINE.match(stripped)
  if m and "\n" not in stripped:
    return m.group(1), m.group(2)
  if re.fullmatch(r"[A-Z]", stripped):
    return stripped, ""
  return None, stripped
