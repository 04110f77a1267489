"""One parser per AlignSurvey task: a raw JSON object -> a typed record (or DataError).

`PARSERS` maps task names ('foundation_qual', 'foundation_quan', 'task1', 'task2', 'task3',
'task3_group', 'task4', 'task4_group') to parsers; `detect_task` picks one from a file's path
or, failing that, from its first record.
"""
from __future__ import annotations

import ast
import collections
import json
import re

from surveylm_jax.data import prompt_layouts as layouts
from surveylm_jax.data.answers import answer_key, parse_option_output
from surveylm_jax.data.errors import DataError
from surveylm_jax.data.json_io import RawRecord
from surveylm_jax.data.prompt_parsing import (PromptError, block_until_blank, find_marker,
                                              parse_context_pairs, parse_dict_literal, parse_distribution,
                                              parse_key_values, parse_question_and_options)
from surveylm_jax.data.records import (DialogueRecord, GroupDistributionRecord, InterviewRecord,
                                       RecordSource, RoleInferenceRecord, StanceRecord,
                                       SurveyResponseRecord)

_ALPACA = ("instruction", "input", "output")
_ID_FIELDS = ("respondent_id", "person_id", "id")


def _text(raw: RawRecord, key: str, required: bool = True) -> str:
  value = raw.fields.get(key)
  if value is None:
    if required:
      raise PromptError(key, "missing", "missing_field")
    return ""
  if not isinstance(value, str):
    raise PromptError(key, f"expected text, got {type(value).__name__}", "bad_type")
  return value


def _common(raw: RawRecord, task: str, level: str) -> dict:
  instruction = _text(raw, "instruction")
  if not instruction.strip():
    raise PromptError("instruction", "empty", "missing_field")
  return {"task": task, "level": level, "instruction": instruction, "input": _text(raw, "input", False),
          "output": _text(raw, "output"), "source": RecordSource(raw.path, raw.index, raw.line),
          "extra": {k: v for k, v in raw.fields.items() if k not in _ALPACA}}


def _respondent_id(raw: RawRecord) -> str | None:
  for key in _ID_FIELDS:
    if raw.fields.get(key) is not None:
      return str(raw.fields[key])
  return None


def _layout(text: str, kind: str) -> dict:
  """The layout of the registered prompt language whose `kind` marker the text holds."""
  lang = layouts.detect_language(text, kind)
  if lang is None:
    raise PromptError("instruction", f"none of {layouts.markers(kind)} found (the {kind} markers of "
                      f"the registered prompt languages)", "missing_section")
  return layouts.layout(kind, lang)


def _target_index(output: str, options) -> tuple[int, str]:
  if not output.strip():
    raise PromptError("output", "empty answer", "missing_field")
  letter, text = parse_option_output(output)
  if letter is not None:
    idx = next((i for i, o in enumerate(options) if o.letter == letter), None)
    if idx is None:
      raise PromptError("output", f"answer letter {letter} is not among the options "
                        f"{[o.letter for o in options]}", "target_not_in_options")
    if text and answer_key(text) != answer_key(options[idx].text):
      raise PromptError("output", f"answer {output!r} does not match option {options[idx].render()!r}",
                        "target_mismatch")
    return idx, ("letter_text" if text else "letter")
  key = answer_key(text)
  idx = next((i for i, o in enumerate(options) if answer_key(o.text) == key), None)
  if idx is None:
    raise PromptError("output", f"answer {output!r} is not among the options "
                      f"{[o.text for o in options]}", "target_not_in_options")
  return idx, "text"


def parse_survey_response(raw: RawRecord, notes, task: str = "task4") -> SurveyResponseRecord:
  common = _common(raw, task, "corpus" if task == "foundation_quan" else "individual")
  text = common["instruction"]
  layout = _layout(text, "survey_response")
  q_start = find_marker(text, layout["question"])
  bg_start = find_marker(text, layout["background"])
  bg_end = text.rfind(layout["question"])
  cut_spans = ((bg_start, bg_end),)
  context = _context_section(text, bg_start, bg_end, layout)
  if context is not None:
    # The target question is the section right after the context block: searching from the top
    # could land on a context question that happens to quote the question marker.
    bg_end, (ctx_start, ctx_end), pairs = context
    q_start = find_marker(text, layout["question"], start=ctx_end)
    cut_spans = ((bg_start, bg_end), (ctx_start, ctx_end))  # background first: prefix packing keys on it
    common["extra"]["context_pairs"] = pairs
  background = parse_key_values(text[bg_start:bg_end].strip("\n"))
  question, options, span = parse_question_and_options(text, q_start, layout["options"])
  target_index, style = _target_index(common["output"], options)
  return SurveyResponseRecord(**common, cut_spans=cut_spans, respondent_id=_respondent_id(raw),
                              background=background, question=question, options=options,
                              target_index=target_index, options_span=span, output_style=style)


def _context_section(text: str, bg_start: int, question_at: int, layout):
  """(background end, (start, end) of the context lines, pairs) when the prompt shows answers in
  context between background and question, else None (also for a layout without context keys)."""
  heading = layout.get("context")
  if not heading:
    return None
  head_at = text.find(f"\n\n{heading}\n", bg_start)
  if head_at < 0 or head_at >= question_at:
    return None
  start = head_at + len(heading) + 3
  end = text.find("\n\n", start - 1)
  if end < 0 or not text.startswith(layout["question"], end + 2):
    raise PromptError("instruction", f"the {heading!r} section must end with a blank line and then "
                      f"{layout['question']!r}", "missing_section")
  pairs = parse_context_pairs(text[start:max(end, start)], layout["context_question"], layout["context_answer"])
  return head_at, (start, max(end, start)), pairs


def parse_group_distribution(raw: RawRecord, notes, task: str = "task4") -> GroupDistributionRecord:
  common = _common(raw, task, "group")
  text = common["instruction"]
  layout = _layout(text, "group_distribution")
  q_start = find_marker(text, layout["question"])
  group_start = find_marker(text, layout["group"])
  group_end = text.rfind(layout["question"])
  group = parse_key_values(text[group_start:group_end].strip("\n"))
  question, options, span = parse_question_and_options(text, q_start, layout["options"])
  distribution = parse_distribution(common["output"], options)
  declared = raw.fields.get("distribution")
  if declared is not None:  # the converter's exact shares ride along; they must agree with the text
    if (not isinstance(declared, list) or len(declared) != len(options)
        or any(abs(float(a) - b) > 0.0011 for a, b in zip(declared, distribution))):
      raise PromptError("distribution", f"{declared} disagrees with the output shares {list(distribution)}",
                        "bad_distribution")
    distribution = tuple(float(v) for v in declared)
  n = raw.fields.get("n")
  if n is not None and (not isinstance(n, int) or n <= 0):
    raise PromptError("n", f"group size {n!r} is not a positive integer", "bad_type")
  group_meta = raw.fields.get("group")
  if isinstance(group_meta, dict):
    group = {str(k): str(v) for k, v in group_meta.items()}
  return GroupDistributionRecord(**common, cut_spans=((group_start, group_end),), group=group,
                                 question=question, options=options, distribution=distribution, n=n,
                                 options_span=span)


def _split_turns(block: str, tags: dict[str, str]) -> tuple:
  """Lines opened by a speaker tag start a turn; other lines continue the previous one."""
  turns = []
  for line in block.split("\n"):
    speaker = next((name for name, tag in tags.items() if line.startswith(tag)), None)
    if speaker is not None:
      turns.append([speaker, line[len(tags[speaker]):].strip()])
    elif line.strip() and turns:
      turns[-1][1] += "\n" + line.strip()
    elif line.strip():
      raise PromptError("instruction", f"dialogue line {line[:60]!r} has no speaker tag")
  return tuple((s, t) for s, t in turns)


def _find_templated(text: str, start: int, template: str, placeholder: str, missing: str):
  """The first match after `start` of a layout sentence whose `placeholder` captures a value."""
  pattern = re.escape(template).replace(re.escape(placeholder), "(.+?)")
  m = re.search(pattern, text[start:])
  if not m:
    raise PromptError("instruction", f"{missing} ({template!r})", "missing_section")
  return m


def parse_role_inference(raw: RawRecord, notes, task: str = "task1") -> RoleInferenceRecord:
  common = _common(raw, task, "individual")
  text = common["instruction"]
  layout = _layout(text, "role_inference")
  d_start = find_marker(text, layout["dialogue"])
  m = _find_templated(text, d_start, layout["ask"], "{field}", "no question asking for the field")
  d_end = d_start + m.start()
  field = m.group(1)
  if "field" in raw.fields and str(raw.fields["field"]) != field:
    raise PromptError("field", f"{raw.fields['field']!r} differs from the field asked for ({field!r})",
                      "target_mismatch")
  dialogue = _split_turns(text[d_start:d_end].strip("\n"), {"interviewer": layout["interviewer"],
                                                             "respondent": layout["respondent"]})
  allowed = ()
  allowed_at = text.find(layout["allowed"], d_end)
  if allowed_at >= 0:
    line = text[allowed_at + len(layout["allowed"]):].split("\n", 1)[0].strip()
    line = line[:-len(layout["end"])] if line.endswith(layout["end"]) else line
    allowed = tuple(v.strip() for v in line.split(layout["sep"]) if v.strip())
  output = common["output"].strip()
  if not output:
    raise PromptError("output", "empty answer", "missing_field")
  if output.startswith("["):
    try:
      values = ast.literal_eval(output)
    except (ValueError, SyntaxError):
      raise PromptError("output", f"{output!r} is not a list literal", "invalid_target") from None
    if not isinstance(values, (list, tuple)) or not values:
      raise PromptError("output", f"{output!r} is not a non-empty list", "invalid_target")
    targets = tuple(str(v) for v in values)
  else:
    targets = (output,)
  if allowed:
    keys = {answer_key(v) for v in allowed}
    bad = [t for t in targets if answer_key(t) not in keys]
    if bad:
      raise PromptError("output", f"values {bad} are not among the allowed values {list(allowed)}",
                        "target_not_in_options")
  return RoleInferenceRecord(**common, cut_spans=((d_start, d_end),), respondent_id=_respondent_id(raw),
                             dialogue=dialogue, field=field, allowed_values=allowed, target_values=targets)


def parse_interview(raw: RawRecord, notes, task: str = "task2") -> InterviewRecord:
  common = _common(raw, task, "individual")
  text = common["instruction"]
  layout = _layout(text, "interview")
  bg_start = find_marker(text, layout["background"])
  h_start = find_marker(text, layout["history"], start=bg_start)
  c_start = find_marker(text, layout["current"], start=h_start)
  bg_end = text.rfind(layout["history"], 0, h_start)
  h_end = text.rfind(layout["current"], 0, c_start)
  bg_block = text[bg_start:bg_end].strip()
  background = parse_dict_literal(bg_block) if bg_block.startswith("{") else parse_key_values(bg_block)
  history = _parse_history(text[h_start:h_end].strip(), layout)
  _, q_end = block_until_blank(text, c_start)
  question = text[c_start:q_end].strip()
  # Released task 2 files hold turns with no question or no answer (the transcript ended there):
  # the sections are all present, so they are kept, and counted in the report's notes.
  if not question:
    notes["empty_question"] += 1
  if not common["output"].strip():
    notes["empty_answer"] += 1
  return InterviewRecord(**common, cut_spans=((h_start, h_end), (bg_start, bg_end)),
                         respondent_id=_respondent_id(raw), background=background, history=history,
                         question=question, answer=common["output"])


def _parse_history(block: str, layout) -> tuple:
  if not block:
    return ()
  q_tag, a_tag = layout["question_tag"].rstrip(":"), layout["answer_tag"].rstrip(":")
  pieces = re.split(f"({re.escape(q_tag)}[:：]|{re.escape(a_tag)}[:：])", block)
  if pieces[0].strip():
    raise PromptError("instruction", f"earlier dialogue starts without a speaker tag: {pieces[0][:60]!r}")
  pairs, question = [], None
  for tag, content in zip(pieces[1::2], pieces[2::2]):
    if tag.startswith(q_tag):
      if question is not None:
        pairs.append((question, ""))
      question = content.strip()
    else:
      pairs.append((question or "", content.strip()))
      question = None
  if question is not None:
    pairs.append((question, ""))
  return tuple(pairs)


def parse_stance(raw: RawRecord, notes, task: str = "task3") -> StanceRecord:
  common = _common(raw, task, "individual")
  text = common["instruction"]
  layout = _layout(text, "stance")
  bg_start = find_marker(text, layout["background"])
  m = _find_templated(text, bg_start, layout["ask"], "{topic}", "no stance question")
  bg_end = bg_start + m.start()
  background = parse_key_values(text[bg_start:bg_end].strip("\n"))
  try:
    target = json.loads(common["output"])
  except json.JSONDecodeError as e:
    raise PromptError("output", f"not JSON with 'predict' and 'reason' ({e})", "invalid_target") from None
  if not isinstance(target, dict) or "predict" not in target:
    raise PromptError("output.predict", "missing", "missing_field")
  label = str(target["predict"]).strip()
  if label not in layouts.STANCE_WORDS:
    raise PromptError("output.predict", f"{label!r} is not one of {sorted(layouts.STANCE_WORDS)}",
                      "target_not_in_options")
  if not isinstance(target.get("reason"), str):
    raise PromptError("output.reason", "missing", "missing_field")
  return StanceRecord(**common, cut_spans=((bg_start, bg_end),), respondent_id=_respondent_id(raw),
                      background=background, topic=m.group(1), stance=layouts.STANCE_WORDS[label],
                      stance_label=label, reason=target["reason"])


def parse_dialogue(raw: RawRecord, notes, task: str = "foundation_qual") -> DialogueRecord:
  common = _common(raw, task, "corpus")
  if not common["input"].strip():
    raise PromptError("input", "no dialogue context", "missing_field")
  if not common["output"].strip():
    raise PromptError("output", "empty response", "missing_field")
  turns = []
  for line in common["input"].split("\n"):
    m = re.match(r"^([^:：\n]{1,40})[:：]\s?(.*)$", line)
    if m:
      turns.append((m.group(1).strip(), m.group(2).strip()))
    elif line.strip() and turns:
      turns[-1] = (turns[-1][0], turns[-1][1] + "\n" + line.strip())
    elif line.strip():
      raise PromptError("input", f"dialogue line {line[:60]!r} has no speaker", "invalid_prompt")
  start = len(common["instruction"]) + 2  # the input follows the instruction after a blank line
  return DialogueRecord(**common, cut_spans=((start, start + len(common["input"])),), turns=tuple(turns))


PARSERS = {
    "foundation_qual": lambda raw, notes: parse_dialogue(raw, notes, "foundation_qual"),
    "foundation_quan": lambda raw, notes: parse_survey_response(raw, notes, "foundation_quan"),
    "task1": lambda raw, notes: parse_role_inference(raw, notes, "task1"),
    "task2": lambda raw, notes: parse_interview(raw, notes, "task2"),
    "task3": lambda raw, notes: parse_stance(raw, notes, "task3"),
    "task3_group": lambda raw, notes: parse_group_distribution(raw, notes, "task3"),
    "task4": lambda raw, notes: parse_survey_response(raw, notes, "task4"),
    "task4_group": lambda raw, notes: parse_group_distribution(raw, notes, "task4"),
}


def parser_for(task: str):
  if task not in PARSERS:
    raise DataError(f"unknown task {task!r}; valid tasks: {sorted(PARSERS)}", reason="unknown_task")
  return PARSERS[task]


def task_from_path(path: str) -> str | None:
  """'.../task4/group/test.json' -> 'task4_group'; 'task1.json' -> 'task1'; None if no task named."""
  lowered = path.replace("\\", "/").lower()
  names = re.findall(r"foundation_qual|foundation_quan|task[1-4]", lowered)
  if not names:
    return None
  task = names[-1]
  tail = lowered[lowered.rfind(task):]
  if task in ("task3", "task4") and re.search(r"(^|[/_\-.])group([/_\-.]|$)", tail):
    task += "_group"
  return task


def task_from_content(raw: RawRecord) -> str | None:
  fields = raw.fields
  instruction = str(fields.get("instruction", ""))
  output = str(fields.get("output", ""))
  def holds(kind, key):
    return any(lays[kind][key] in instruction for lays in layouts.LANGUAGES.values() if kind in lays)
  if "field" in fields or holds("role_inference", "dialogue"):
    return "task1"
  if holds("interview", "history"):
    return "task2"
  if '"predict"' in output or holds("stance", "background"):
    return "task3"
  if holds("group_distribution", "group"):
    words = set(layouts.STANCE_WORDS)
    option_texts = re.findall(r"^[A-Z]\. (.+)$", instruction, flags=re.M)
    return "task3_group" if option_texts and set(option_texts) <= words else "task4_group"
  if holds("survey_response", "question"):
    return "task4"
  if str(fields.get("input", "")).strip() and "dialogue" in instruction.lower():
    return "foundation_qual"
  return None


def empty_notes() -> collections.Counter:
  return collections.Counter()
