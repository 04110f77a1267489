"""What a model's answer position knows about the question: a diagnostic for task-4 fine-tuning.

For the prompts of a few training respondents, takes the final hidden state at the answer
position (where option scoring reads the letter) and reports
  - how well a linear probe recovers the question from it (cross-validated accuracy),
  - the share of its variance that lies between questions, and the size of the component every
    question shares (the norm of the mean against the spread around it),
  - how much the model's own answer shares differ between questions, next to the humans'.
A question that is perfectly decodable at the answer position while the answer shares hardly move
between questions means the information is there and the read-out ignores it; that is what a
fine-tune has to change. Writes DIR/answer_features.json and DIR/answer_features.png.

    python -m tools.answer_features --model checkpoints/smollm2-135m-instruct \
        --records data/gss2018/task4/individual/train.json --respondents 16 --out runs/diagnostics
"""
import argparse
import collections
import json
import os

import numpy as np


def _letter(record) -> int:
  answer = record["output"].strip()
  if not answer or answer[0] not in "ABCDEFGHIJ":
    raise ValueError(f"record {record.get('respondent_id')}/{record.get('question_id')}: output "
                     f"{record['output']!r} does not start with an option letter")
  return "ABCDEFGHIJ".index(answer[0])


def answer_states(model_path: str, records: list, batch: int = 8):
  """(hidden [N, E] at each prompt's answer position, option-letter probabilities [N, 3])."""
  import jax
  import jax.numpy as jnp
  import transformers
  from surveylm_jax import models
  from surveylm_jax.data.chat_format import ChatTemplateTokenizer
  tok = transformers.AutoTokenizer.from_pretrained(model_path)
  chat = ChatTemplateTokenizer(tok, max_len=4096)
  model, params = models.load_pretrained(model_path)
  letters = [tok("ABC"[i], add_special_tokens=False)["input_ids"][0] for i in range(3)]

  @jax.jit
  def run(ids, mask, last):
    hidden = model.apply({"params": params}, ids, attention_mask=mask, return_hidden=True)
    logits = model.apply({"params": params}, ids, attention_mask=mask, logit_positions=last[:, None])
    return hidden[jnp.arange(ids.shape[0]), last], jax.nn.softmax(logits[:, 0, letters], -1)

  prompts = [tok(chat.render(r["instruction"], "")[0], add_special_tokens=False)["input_ids"]
             for r in records]
  length = max(len(p) for p in prompts)
  length = -(-length // 32) * 32
  states, probs = [], []
  for start in range(0, len(prompts), batch):
    chunk = prompts[start:start + batch]
    chunk = chunk + [chunk[-1]] * (batch - len(chunk))          # fixed shape: one compile
    ids = np.zeros((batch, length), np.int32)
    mask = np.zeros((batch, length), np.int32)
    for i, p in enumerate(chunk):
      ids[i, :len(p)], mask[i, :len(p)] = p, 1
    last = mask.sum(1) - 1
    h, p = run(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(last))
    keep = min(batch, len(prompts) - start)
    states.append(np.asarray(h)[:keep])
    probs.append(np.asarray(p)[:keep])
    print(f"\r{start + keep}/{len(prompts)} prompts", end="", flush=True)
  print()
  return np.concatenate(states), np.concatenate(probs)


def summarize(states, probs, questions, letters) -> dict:
  from sklearn.linear_model import LogisticRegression
  from sklearn.model_selection import cross_val_score
  questions = np.asarray(questions)
  names = sorted(set(questions))
  centred = states - states.mean(0)
  scaled = centred / (states.std(0) + 1e-6)
  folds = min(4, min(collections.Counter(questions).values()))
  probe = cross_val_score(LogisticRegression(max_iter=3000, C=0.1), scaled, questions, cv=folds)
  means = np.stack([states[questions == q].mean(0) for q in names])
  total_var = states.var(0).sum()
  model_shares = np.stack([probs[questions == q].mean(0) for q in names])
  human_shares = np.stack([np.bincount(np.asarray(letters)[questions == q], minlength=3)
                           / (questions == q).sum() for q in names])
  return {
      "prompts": int(len(states)), "questions": len(names),
      "question_probe_accuracy": float(probe.mean()), "probe_folds": int(folds),
      "between_question_variance_share": float(means.var(0).sum() / total_var),
      "mean_norm_over_rms_spread": float(np.linalg.norm(states.mean(0))
                                         / np.sqrt(total_var)),
      "model_letter_share_std_across_questions": model_shares.std(0).round(4).tolist(),
      "human_letter_share_std_across_questions": human_shares.std(0).round(4).tolist(),
      "model_argmax_by_question": {q: "ABC"[int(s.argmax())] for q, s in zip(names, model_shares)},
      "human_majority_by_question": {q: "ABC"[int(s.argmax())] for q, s in zip(names, human_shares)},
  }


def plot(states, questions, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  centred = states - states.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  xy = centred @ vt[:2].T
  fig, ax = plt.subplots(figsize=(7, 5))
  for q in sorted(set(questions)):
    sel = np.asarray(questions) == q
    ax.scatter(xy[sel, 0], xy[sel, 1], s=8, label=q)
  ax.set_title("answer-position hidden states (top 2 principal components)")
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="checkpoints/smollm2-135m-instruct")
  parser.add_argument("--records", default="data/gss2018/task4/individual/train.json")
  parser.add_argument("--respondents", type=int, default=16)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="runs/diagnostics")
  args = parser.parse_args()
  with open(args.records, encoding="utf-8") as f:
    records = json.load(f)
  by_respondent = collections.defaultdict(list)
  for r in records:
    by_respondent[r["respondent_id"]].append(r)
  rng = np.random.RandomState(args.seed)
  chosen = rng.choice(sorted(by_respondent), args.respondents, replace=False)
  picked = [r for rid in chosen for r in by_respondent[rid]]
  states, probs = answer_states(args.model, picked)
  questions = [r["question_id"] for r in picked]
  letters = [_letter(r) for r in picked]
  result = dict(summarize(states, probs, questions, letters), model=args.model,
                records=args.records, respondents=int(args.respondents))
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "answer_features.json"), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  plot(states, questions, os.path.join(args.out, "answer_features.png"))
  print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
  main()
