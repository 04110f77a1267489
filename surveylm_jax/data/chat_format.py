"""Records -> token ids with a loss mask, through the tokenizer's own chat template.

The instruction (plus input) is the user turn and the output the assistant turn. The loss mask
is 1 on the assistant's answer tokens and the end-of-turn/EOS token that closes them, 0 elsewhere
(system prompt, user turn, the assistant header, anything the template adds after EOS).

Prompt and completion are tokenized separately and concatenated, which is how a model sees them
at inference (prompt first, then generated tokens), so no token straddles the boundary.

Survey-response records whose answer starts with its option letter also carry an answer slot:
`option_ids` (the token of each option letter, in the question's canonical order when a question
catalog is given, else the listed order), `option_ordinal` (0 for a nominal question), `option_target` (one-hot
on the answer) and `option_position` (the position whose logits predict the answer's first
token), so the option losses and validation option accuracy can read the model's distribution
over the letters there. Group records are trained one of two ways (`group_answers`): "text"
(token loss on the written shares, "A. option: 40.0%" lines) or "distribution" (no token loss;
an answer slot whose target is the group's shares, so the option losses teach the letter
distribution at the start of the answer to match the group).

Truncation keeps the question, options and answer: when a rendered example is longer than
`max_len`, characters are cut from the start of the record's `cut_spans` (oldest history first,
then background) and replaced by an ellipsis, until it fits. If even that is not enough the example
is dropped. Both outcomes are reported on the example (`truncated`, or None for dropped) and
counted by the packer.
"""
from __future__ import annotations

import numpy as np

from surveylm_jax.data.records import GroupDistributionRecord, SurveyResponseRecord

GROUP_ANSWERS = ("text", "distribution")

ELLIPSIS = "…"


class ChatTemplateTokenizer:
  """Callable record -> {'input_ids', 'loss_mask', 'truncated'} (int32 arrays) or None if dropped."""

  def __init__(self, tokenizer, max_len: int, group_answers: str = "text", catalog=None):
    if group_answers not in GROUP_ANSWERS:
      raise ValueError(f"unknown group_answers {group_answers!r}; valid: {list(GROUP_ANSWERS)}")
    self.tokenizer, self.max_len, self.group_answers = tokenizer, max_len, group_answers
    self.catalog = catalog   # a QuestionCatalog: answer slots list options in canonical order
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
    example = {"input_ids": np.asarray(ids, np.int32), "loss_mask": np.asarray(mask, np.int32),
               "truncated": np.int32(truncated)}
    if isinstance(record, GroupDistributionRecord) and self.group_answers == "distribution":
      example.update(self.distribution_slot(record, example))
      example["loss_mask"] = np.zeros_like(example["loss_mask"])
    else:
      example.update(self.answer_slot(record, example))
    return example

  def _slot(self, record, example, first_letter_index: int, target) -> dict:
    letter_ids = [self._ids(option.letter) for option in record.options]
    first_answer = int(np.argmax(example["loss_mask"]))
    # The letter must be exactly the first answer token, or the slot would read the wrong logit.
    if (any(len(t) != 1 for t in letter_ids)
        or letter_ids[first_letter_index][0] != example["input_ids"][first_answer]):
      return {}
    # The slot lists options in the question's canonical order (letters go along), so the
    # ordinal option losses see the same order however the record listed them; a nominal
    # question's slot is flagged so option_w1 skips it.
    order, ordinal = np.arange(len(record.options)), True
    if self.catalog is not None:
      canonical = self.catalog.resolve_record(record)
      order, ordinal = canonical.permutation(record.option_texts()), canonical.ordinal
    return {"option_ids": np.asarray([letter_ids[i][0] for i in order], np.int32),
            "option_target": np.asarray(target, np.float32)[order],
            "option_ordinal": np.int32(ordinal),
            "option_position": np.int32(first_answer - 1)}

  def answer_slot(self, record, example) -> dict:
    """Letter token ids and one-hot target of a lettered survey answer ({} when not one)."""
    if not (isinstance(record, SurveyResponseRecord) and record.options
            and record.output_style in ("letter_text", "letter") and record.target_index >= 0):
      return {}
    target = np.zeros(len(record.options), np.float32)
    target[record.target_index] = 1.0
    return self._slot(record, example, record.target_index, target)

  def distribution_slot(self, record, example) -> dict:
    """A group's shares as the soft target at the start of its answer ({} when the answer does
    not start with the first option's letter)."""
    if not record.options or len(record.distribution) != len(record.options):
      return {}
    return self._slot(record, example, 0, record.distribution)
