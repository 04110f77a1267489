"""LLM judge over a real HTTP round trip to a local OpenAI-compatible server."""
import http.server
import json
import threading

import ml_collections
import pytest

from surveylm_jax.eval import judge


def _serve(replies):
  seen = []

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
      body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
      seen.append((self.path, self.headers.get("Authorization"), body))
      content = replies[min(len(seen) - 1, len(replies) - 1)]
      data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
      self.send_response(200)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def log_message(self, *args):
      pass

  server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server, seen


def _config(port):
  return ml_collections.ConfigDict(dict(enabled=True, base_url=f"http://127.0.0.1:{port}/v1", model="judge-1",
                                        api_key_env="SURVEYLM_TEST_KEY", max_records=10, timeout_s=5.0))


def test_judge_scores_and_counts_bad_replies(monkeypatch):
  monkeypatch.setenv("SURVEYLM_TEST_KEY", "k123")
  server, seen = _serve(['```json\n{"naturalness": 4, "style_match": 2, "consistency": 5}\n```',
                         '{"naturalness": 7, "style_match": 2, "consistency": 5}', "I refuse"])
  try:
    out = judge.judge_answers(_config(server.server_address[1]), ["q1", "q2", "q3", "q4"],
                              ["r1", "r2", "r3", "r4"], ["a1", "a2", "a3", None])
  finally:
    server.shutdown()
  assert out["judged"] == 1 and out["naturalness"] == 4 and out["style_match"] == 2
  assert out["parse"]["failures_by_reason"] == {"bad_naturalness": 1, "no_json": 1, "no_prediction": 1}
  path, auth, body = seen[0]
  assert path == "/v1/chat/completions" and auth == "Bearer k123" and body["model"] == "judge-1"
  assert "a1" in body["messages"][0]["content"]


def test_judge_needs_endpoint():
  cfg = _config(1)
  cfg.base_url = ""
  with pytest.raises(ValueError, match="base_url and model"):
    judge.judge_answers(cfg, ["q"], ["r"], ["a"])


def test_unreachable_endpoint_is_counted():
  out = judge.judge_answers(_config(9), ["q"], ["r"], ["a"])   # nothing listens on port 9
  assert out["judged"] == 0 and out["parse"]["failed"] == 1
