"""Records -> token ids with a loss mask, through the tokenizer's own chat template.

The instruction (plus input) is the user turn and the output the assistant turn. The loss mask
is 1 on the assistant's answer tokens and the end-of-turn/EOS token that closes them, 0 elsewhere
(system prompt, user turn, the assistant header, anything the template adds after EOS).

Prompt and completion are tokenized separately and concatenated, which is how a model sees them
at inference (prompt first, then generated tokens), so no token straddles the boundary.

Truncation keeps the question, options and answer: when a rendered example is longer than
`max_len`, characters are cut from the start of the record's `cut_spans` (oldest history first,
then background) and replaced by an ellipsis, until it fits. If even that is not enough the example
is dropped. Both outcomes are reported on the example (`truncated`, or None for dropped) and
counted by the packer.
"""
from __future__ import annotations

import numpy as np

ELLIPSIS = "…"


class ChatTemplateTokenizer:
  """Callable record -> {'input_ids', 'loss_mask', 'truncated'} (int32 arrays) or None if dropped."""

  def __init__(self, tokenizer, max_len: int):
    self.tokenizer, self.max_len = tokenizer, max_len
    self.eos_id = tokenizer.eos_token_id

  def render(self, user_text: str, answer: str) -> tuple[str, str]:
    user = [{"role": "user", "content": user_text}]
    prompt = self.tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = self.tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}],
                                              tokenize=False)
    if not full.startswith(prompt):
      raise ValueError("the chat template renders the prompt differently once an answer follows; "
                       "cannot place the loss mask")
    return prompt, full[len(prompt):]

  def _ids(self, text: str) -> list[int]:
    return self.tokenizer(text, add_special_tokens=False)["input_ids"]

  def encode_text(self, user_text: str, answer: str) -> tuple[list[int], list[int]]:
    prompt, completion = self.render(user_text, answer)
    prompt_ids, completion_ids = self._ids(prompt), self._ids(completion)
    mask = [1] * len(completion_ids)
    if self.eos_id in completion_ids:  # nothing after the EOS that closes the answer is trained on
      end = completion_ids.index(self.eos_id) + 1
      mask = [1] * end + [0] * (len(completion_ids) - end)
    return prompt_ids + completion_ids, [0] * len(prompt_ids) + mask

  def __call__(self, record):
    text, spans = record.prompt, list(record.cut_spans)
    ids, mask = self.encode_text(text, record.target)
    truncated = False
    while len(ids) > self.max_len:
      spans = [(s, e) for s, e in spans if e - s > len(ELLIPSIS)]
      if not spans:
        return None
      start, end = spans[0]
      excess = len(ids) - self.max_len
      # Characters per token of this text, with a margin so that most records fit at the first cut.
      chars = int(excess * len(text) / len(ids) * 1.2) + 8
      cut = min(chars, end - start)
      text = text[:start] + ELLIPSIS + text[start + cut:]
      delta = len(ELLIPSIS) - cut
      spans = [(start, end + delta)] + [(s + delta if s > start else s, e + delta if e > start else e)
                                        for s, e in spans[1:]]
      if cut == end - start:
        spans = spans[1:]
      ids, mask = self.encode_text(text, record.target)
      truncated = True
    return {"input_ids": np.asarray(ids, np.int32), "loss_mask": np.asarray(mask, np.int32),
            "truncated": np.int32(truncated)}
