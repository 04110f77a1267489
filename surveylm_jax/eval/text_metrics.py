"""Text overlap metrics for free-text answers (task 2) and stance reasons (task 3).

BLEU is sacrebleu's and ROUGE is the `rouge_score` package's, so the numbers are the field's
and not a reimplementation of them. Both libraries assume space-separated words unless told
otherwise, and AlignSurvey's answers are Chinese:
- BLEU uses sacrebleu's 'zh' tokenizer (every Chinese character and CJK punctuation mark is a
  token, the rest goes through the standard '13a' tokenizer) whenever the text holds Han
  characters, and '13a' otherwise. The tokenizer used is reported with the score.
- ROUGE gets our `CjkTokenizer`: rouge_score's default tokenizer keeps only [a-z0-9] runs, so it
  deletes every Chinese character and would score every Chinese answer 0.

All scores are on a 0-1 scale (BLEU is sacrebleu's 0-100 score divided by 100), the scale of
ROUGE and of the other metrics in the report.
"""
from __future__ import annotations

import collections
import functools
import importlib.metadata
import math
import re
import unicodedata
from typing import Sequence

import sacrebleu
from rouge_score import rouge_scorer
from rouge_score import tokenizers as rouge_tokenizers

_CJK = (r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
        r"\U00020000-\U0002a6df")
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)?", re.UNICODE)
# Han ideographs only: sacrebleu's 'zh' tokenizer splits these (not kana or hangul), so they are
# what decides whether it is the right BLEU tokenizer.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df]")

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
ROUGE_TOKENIZATION = "NFKC, casefold, one token per CJK character, words otherwise, no punctuation"


def tokenize(text: str) -> list[str]:
  """Words for alphabetic scripts, single characters for CJK; punctuation dropped."""
  return _TOKEN.findall(unicodedata.normalize("NFKC", str(text)).casefold())


class CjkTokenizer(rouge_tokenizers.Tokenizer):
  """rouge_score tokenizer that keeps Chinese: one token per CJK character, Latin words whole.

  Per character rather than a word segmenter (jieba): character n-grams are the usual ROUGE unit
  for Chinese, and they do not depend on a segmentation dictionary and its version. No stemming,
  as the answers are Chinese and stemming would only touch the occasional English word.
  """

  def tokenize(self, text):
    return tokenize(text)


def has_han(text: str) -> bool:
  return bool(_HAN.search(text or ""))


def bleu_tokenizer(texts: Sequence[str]) -> str:
  """'zh' when any text holds Han characters, else '13a'. 'zh' runs '13a' on the non-Chinese
  parts, so mixed text loses nothing by it."""
  return "zh" if any(has_han(t) for t in texts) else "13a"


@functools.lru_cache(maxsize=None)
def _rouge(rouge_types: tuple[str, ...]) -> rouge_scorer.RougeScorer:
  return rouge_scorer.RougeScorer(list(rouge_types), tokenizer=CjkTokenizer())


@functools.lru_cache(maxsize=None)
def _bleu(tokenizer: str, sentence: bool) -> sacrebleu.BLEU:
  # Sentence BLEU with effective order (sacrebleu's advice): a short answer with no 4-gram match
  # is not scored 0 just because it is short.
  return sacrebleu.BLEU(tokenize=tokenizer, effective_order=sentence)


def _check_pair(predictions: Sequence, references: Sequence[str]):
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
  for name, texts in (("reference", references), ("prediction", predictions)):
    for i, t in enumerate(texts):
      if not isinstance(t, str):
        raise TypeError(f"{name} {i} is {type(t).__name__}, not str")


def rouge_scores(prediction: str, reference: str,
                 rouge_types: Sequence[str] = ROUGE_TYPES) -> dict[str, float]:
  """ROUGE F1 per type from rouge_score (which takes the reference first)."""
  scores = _rouge(tuple(rouge_types)).score(reference, prediction)
  return {k: float(s.fmeasure) for k, s in scores.items()}


def rouge_n(prediction: str, reference: str, n: int) -> float:
  """ROUGE-N F1 on clipped n-gram overlap."""
  if not 1 <= n <= 9:
    raise ValueError(f"rouge_score computes ROUGE-1 to ROUGE-9, not ROUGE-{n}")
  return rouge_scores(prediction, reference, (f"rouge{n}",))[f"rouge{n}"]


def rouge_l(prediction: str, reference: str) -> float:
  """ROUGE-L F1 from the longest common subsequence of tokens."""
  return rouge_scores(prediction, reference, ("rougeL",))["rougeL"]


def corpus_bleu(predictions: Sequence[str], references: Sequence[str],
                tokenizer: str | None = None) -> sacrebleu.metrics.bleu.BLEUScore:
  """sacrebleu corpus BLEU (one reference each); tokenizer chosen by `bleu_tokenizer` unless set."""
  _check_pair(predictions, references)
  tokenizer = tokenizer or bleu_tokenizer(list(references) + list(predictions))
  return _bleu(tokenizer, False).corpus_score(list(predictions), [list(references)])


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
  """Corpus BLEU on a 0-1 scale."""
  return corpus_bleu(predictions, references).score / 100


def sentence_bleu(prediction: str, reference: str) -> tuple[float, str]:
  """Sentence BLEU on a 0-1 scale and the tokenizer chosen for this one pair."""
  tokenizer = bleu_tokenizer([reference, prediction])
  return _bleu(tokenizer, True).sentence_score(prediction, [reference]).score / 100, tokenizer


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


def library_versions() -> dict[str, str]:
  return {name: importlib.metadata.version(name) for name in ("sacrebleu", "rouge-score")}


def text_generation_metrics(predictions: Sequence[str | None], references: Sequence[str]) -> dict:
  """Task 2: mean ROUGE-1/2/L F1, corpus BLEU and mean sentence BLEU, all 0-1.

  A None prediction (failed generation) scores 0 on every metric and stays in every mean and in
  the corpus BLEU (as an empty hypothesis, which lowers the brevity penalty); `missing` counts
  them.
  """
  texts = ["" if p is None else p for p in predictions]
  _check_pair(texts, references)
  n = len(references)
  out = {"n": n, "missing": sum(p is None for p in predictions)}
  if n == 0:
    return {**out, **{k: 0.0 for k in ROUGE_TYPES}, "bleu": 0.0, "sentence_bleu": 0.0}
  rouge = collections.Counter()
  sentence, tokenizers = 0.0, collections.Counter()
  for p, t, r in zip(predictions, texts, references):
    if p is not None:
      rouge.update(rouge_scores(t, r))
      score, tok = sentence_bleu(t, r)
      sentence += score
      tokenizers[tok] += 1
  tokenizer = bleu_tokenizer(list(references) + texts)
  corpus = corpus_bleu(texts, references, tokenizer)
  return {**out, **{k: rouge[k] / n for k in ROUGE_TYPES},
          "bleu": corpus.score / 100, "sentence_bleu": sentence / n, "bleu_tokenizer": tokenizer,
          "bleu_signature": str(_bleu(tokenizer, False).get_signature()),
          "sentence_bleu_tokenizers": dict(tokenizers), "rouge_tokenizer": ROUGE_TOKENIZATION,
          "library_versions": library_versions()}
