"""Optional LLM judge for task 2 answers: naturalness, style match and consistency (1-5 each),
through any OpenAI-compatible `/chat/completions` endpoint (vLLM, llama.cpp server, a hosted API).

Off by default (config.eval.judge.enabled). The API key, if any, is read from the environment
variable named in config (never from the config itself). Replies that do not hold the three scores
as integers 1-5 are counted as failures, not guessed.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from surveylm_jax.cli import ConfigError
from surveylm_jax.eval.answer_parsing import ParseTally, Parsed, _json_payload

CRITERIA = ("naturalness", "style_match", "consistency")

_PROMPT = """You are grading a simulated survey interview answer against the real respondent's answer.
Background and question:
{question}

Real answer:
{reference}

Simulated answer:
{prediction}

Score the simulated answer from 1 (worst) to 5 (best) on: naturalness (reads like a person
speaking), style_match (sounds like the real respondent), consistency (agrees with the background
and the real answer). Reply with JSON only: {{"naturalness": n, "style_match": n, "consistency": n}}"""


def _post(url: str, payload: dict, api_key: str | None, timeout: float) -> dict:
  request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                   headers={"Content-Type": "application/json",
                                            **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
  with urllib.request.urlopen(request, timeout=timeout) as response:
    return json.loads(response.read().decode())


def parse_scores(text: str) -> Parsed:
  payload = _json_payload(text or "")
  if not isinstance(payload, dict):
    return Parsed(None, "no_json")
  scores = {}
  for c in CRITERIA:
    v = payload.get(c)
    if not isinstance(v, (int, float)) or not 1 <= v <= 5 or int(v) != v:
      return Parsed(None, f"bad_{c}")
    scores[c] = int(v)
  return Parsed(scores, how="json")


def judge_answers(judge_config, questions, references, predictions) -> dict:
  """Mean scores per criterion over the judged records, with failures counted by reason."""
  if not judge_config.base_url or not judge_config.model:
    raise ConfigError("config.eval.judge needs base_url and model when enabled")
  url = judge_config.base_url.rstrip("/") + "/chat/completions"
  api_key = os.environ.get(judge_config.api_key_env) if judge_config.api_key_env else None
  tally, sums, judged = ParseTally(), dict.fromkeys(CRITERIA, 0.0), 0
  limit = judge_config.max_records if judge_config.max_records > 0 else len(questions)
  for q, ref, pred in list(zip(questions, references, predictions))[:limit]:
    if pred is None:
      tally.add(Parsed(None, "no_prediction"), "")
      continue
    body = {"model": judge_config.model, "temperature": 0.0,
            "messages": [{"role": "user", "content": _PROMPT.format(question=q, reference=ref, prediction=pred)}]}
    try:
      reply = _post(url, body, api_key, judge_config.timeout_s)
      text = reply["choices"][0]["message"]["content"]
    except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as e:
      tally.add(Parsed(None, f"request_failed:{type(e).__name__}"), str(e))
      continue
    parsed = tally.add(parse_scores(text), text)
    if parsed.ok:
      judged += 1
      for c in CRITERIA:
        sums[c] += parsed.value[c]
  return {"judged": judged, **{c: (sums[c] / judged if judged else float("nan")) for c in CRITERIA},
          "parse": tally.summary()}
