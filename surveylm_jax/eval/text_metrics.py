"""Text overlap metrics for free-text answers (task 2) and stance reasons (task 3).

Tokenisation is language aware: Latin-script words are lower-cased word tokens, and every CJK
character is its own token (an ASCII-only tokenizer, as in common ROUGE packages, drops Chinese
entirely and scores every Chinese answer 0).
"""
from __future__ import annotations

import collections
import math
import re
import unicodedata
from typing import Sequence

_CJK = (r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
        r"\U00020000-\U0002a6df")
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)?", re.UNICODE)


def tokenize(text: str) -> list[str]:
  """Words for alphabetic scripts, single characters for CJK; punctuation dropped."""
  return _TOKEN.findall(unicodedata.normalize("NFKC", str(text)).casefold())


def _ngrams(tokens, n):
  return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap, n_pred, n_ref):
  if n_pred == 0 or n_ref == 0 or overlap == 0:
    return 0.0
  p, r = overlap / n_pred, overlap / n_ref
  return 2 * p * r / (p + r)


def rouge_n(prediction: str, reference: str, n: int) -> float:
  """ROUGE-N F1 on clipped n-gram overlap."""
  pred, ref = _ngrams(tokenize(prediction), n), _ngrams(tokenize(reference), n)
  return _f1(sum((pred & ref).values()), sum(pred.values()), sum(ref.values()))


def _lcs(a, b) -> int:
  prev = [0] * (len(b) + 1)
  for x in a:
    cur = [0]
    for j, y in enumerate(b):
      cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
    prev = cur
  return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
  """ROUGE-L F1 from the longest common subsequence of tokens."""
  pred, ref = tokenize(prediction), tokenize(reference)
  return _f1(_lcs(pred, ref), len(pred), len(ref))


def bleu(predictions: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
  """Corpus BLEU (uniform weights up to `max_n`, brevity penalty), with +1 smoothing of the
  n-gram precisions above unigrams so short answers do not all score 0."""
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
  matches, totals = [0] * max_n, [0] * max_n
  pred_len = ref_len = 0
  for p, r in zip(predictions, references):
    pt, rt = tokenize(p), tokenize(r)
    pred_len, ref_len = pred_len + len(pt), ref_len + len(rt)
    for n in range(1, max_n + 1):
      pc, rc = _ngrams(pt, n), _ngrams(rt, n)
      matches[n - 1] += sum((pc & rc).values())
      totals[n - 1] += max(len(pt) - n + 1, 0)
  if pred_len == 0 or matches[0] == 0:
    return 0.0
  log_p = 0.0
  for n in range(max_n):
    num, den = (matches[n], totals[n]) if n == 0 else (matches[n] + 1, totals[n] + 1)
    log_p += math.log(num / den) / max_n
  brevity = 1.0 if pred_len > ref_len else math.exp(1 - ref_len / pred_len)
  return brevity * math.exp(log_p)


def token_jaccard(a: str, b: str) -> float:
  sa, sb = set(tokenize(a)), set(tokenize(b))
  if not sa and not sb:
    return 1.0
  return len(sa & sb) / len(sa | sb)


def token_cosine(a: str, b: str) -> float:
  """Cosine similarity of bag-of-token count vectors."""
  ca, cb = collections.Counter(tokenize(a)), collections.Counter(tokenize(b))
  dot = sum(ca[t] * cb[t] for t in ca)
  norm = math.sqrt(sum(v * v for v in ca.values())) * math.sqrt(sum(v * v for v in cb.values()))
  return dot / norm if norm else 0.0


def text_generation_metrics(predictions: Sequence[str | None], references: Sequence[str]) -> dict:
  """Task 2: mean ROUGE-1/2/L F1 and corpus BLEU; None predictions (failed generations) score 0
  and are counted."""
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
  texts = ["" if p is None else p for p in predictions]
  n = max(len(texts), 1)
  return {"n": len(texts), "missing": sum(p is None for p in predictions),
          "rouge1": sum(rouge_n(p, r, 1) for p, r in zip(texts, references)) / n,
          "rouge2": sum(rouge_n(p, r, 2) for p, r in zip(texts, references)) / n,
          "rougeL": sum(rouge_l(p, r) for p, r in zip(texts, references)) / n,
          "bleu": bleu(texts, references)}
