"""The section markers of AlignSurvey prompts, per task and language.

The readers parse with these markers and the survey converter writes with them, so what the
converter writes is exactly what the readers accept. The Chinese layouts are those of the
released files; the English task 4 / foundation_quan layout is the released GSS/ATP one; the
other English layouts are this project's translations of the Chinese ones.

Languages are a registry: `LANGUAGES[code][kind]` is the layout of one prompt kind (the keys of
`KINDS`) in that language. `register_language(code, layouts)` adds one, so a codebook with
`language: CODE` converts and its files read back; a language may give only the kinds it is used
for (task 4 needs survey_response and group_distribution), and may leave out the keys in
`OPTIONAL_KEYS` (its prompts then cannot carry that feature). Placeholders: {year} (a sentence of
survey_response/group_distribution intros, dropped when no year is known), {topic}, {survey},
{field}, {question}, {answer}.
"""
from __future__ import annotations

from surveylm_jax.data.records import STANCES

# task4 individual and foundation_quan: background lines, question, lettered options.
# The context_* keys lay out the respondent's own answers to other questions of the survey
# (imputation prompts): a heading line, then per answer a question line and an answer line, each
# opened by its tag. Two tagged lines per answer keep any question or answer text readable back,
# whatever punctuation or "A. ..." text it holds.
SURVEY_RESPONSE = {
    "zh": {"intro": "你需要模拟一位真实的问卷填写者来回答以下问题。", "background": "你的个人背景：",
           "question": "问卷问题：", "options": "选项：", "ask": "请直接输出你的答案：",
           "background_prefix": "",
           "context": "你在本问卷其他问题上的回答：", "context_question": "问题：", "context_answer": "你的回答："},
    "en": {"intro": "The survey is in {year}. You need to simulate a real survey respondent answering "
                    "the following question.",
           "background": "Your personal background:", "question": "Survey question:", "options": None,
           "ask": "Please provide your answer directly.",
           "background_prefix": "your ",   # released GSS/ATP lines read "your age: 45"
           "context": "Earlier in this survey, you answered:", "context_question": "Question: ",
           "context_answer": "Your answer: "},
}

# task4 / task3 group level: a group profile instead of one respondent's background.
GROUP_DISTRIBUTION = {
    "zh": {"intro": "你需要估计一个群体的问卷填写者如何回答以下问题。", "group": "群体画像：",
           "question": "问卷问题：", "options": "选项：",
           "ask": "请按选项给出该群体选择每个选项的比例，每行一个，格式如“A. 选项: 40.0%”："},
    "en": {"intro": "The survey is in {year}. You need to estimate how a group of survey respondents "
                    "answered the following question.",
           "group": "Group profile:", "question": "Survey question:", "options": None,
           "ask": "Give the share of the group choosing each option, one line per option, "
                  "formatted as \"A. option: 40.0%\"."},
}

# task3 individual.
STANCE = {
    "zh": {"intro": "你是一名社会学研究人员，正在分析一名受访者的访谈数据:", "background": "背景信息：",
           "ask": "请判断受访者对{topic}的倾向，并解释你的判断理由。",
           "format": "输出格式为JSON，包含\"predict\"和\"reason\"两个字段。predict字段从\"积极\"、\"消极\"或\"中立\"中选择。",
           "labels": {"positive": "积极", "neutral": "中立", "negative": "消极"},
           "reason": "受访者对“{question}”的回答是“{answer}”。", "group_question": "该群体对{topic}的倾向如何？"},
    "en": {"intro": "You are a social science researcher analysing the survey answers of one respondent.",
           "background": "Background:",
           "ask": "Judge the respondent's stance towards {topic}, and explain your judgement.",
           "format": "Answer in JSON with the fields \"predict\" and \"reason\"; \"predict\" is one of "
                     "\"positive\", \"neutral\" or \"negative\".",
           "labels": {"positive": "positive", "neutral": "neutral", "negative": "negative"},
           "reason": "Asked \"{question}\", the respondent answered \"{answer}\".",
           "group_question": "How does this group stand on {topic}?"},
}
STANCE_WORDS = {"积极": "positive", "中立": "neutral", "消极": "negative",
                "positive": "positive", "neutral": "neutral", "negative": "negative"}

# task1: an interview transcript, the field to infer and its allowed values.
ROLE_INFERENCE = {
    "zh": {"intro": "你是一名访谈问卷分析者，正在分析一个关于{survey}的调查访谈文本。", "dialogue": "==访谈对话==",
           "interviewer": "采访者：", "respondent": "受访者：",
           "ask": "请根据对话内容，预测被访者的 “{field}”。", "allowed": "可选值：", "sep": "、", "end": "。",
           "format": "请直接输出选项，不要其他解释文本。"},
    "en": {"intro": "You are analysing an interview from a survey on {survey}.", "dialogue": "== Interview ==",
           "interviewer": "Interviewer: ", "respondent": "Respondent: ",
           "ask": "Based on the interview, predict the respondent's \"{field}\".", "allowed": "Allowed values: ",
           "sep": "; ", "end": ".", "format": "Output only the value(s) as a list, with no explanation."},
}

# task2: background, earlier dialogue, current question.
INTERVIEW = {
    "zh": {"intro": "你是一名被访者，正在进行一个关于{survey}的调查。", "background": "==你的背景==",
           "history": "==先前对话==", "current": "==当前问题==", "question_tag": "提问:",
           "answer_tag": "回答:", "ask": "请输出你的回答：",
           "tag_space": ""},   # released Chinese transcripts write "提问:..." with no space
    "en": {"intro": "You are a respondent taking part in a survey on {survey}.", "background": "== Your background ==",
           "history": "== Earlier dialogue ==", "current": "== Current question ==",
           "question_tag": "Interviewer:", "answer_tag": "Respondent:", "ask": "Answer in your own words:",
           "tag_space": " "},
}

# --- the language registry -----------------------------------------------------------------------
KINDS = {"survey_response": SURVEY_RESPONSE, "group_distribution": GROUP_DISTRIBUTION, "stance": STANCE,
         "role_inference": ROLE_INFERENCE, "interview": INTERVIEW}
# The key whose marker tells a prompt's language when it is read back.
MARKERS = {"survey_response": "question", "group_distribution": "question", "stance": "background",
           "role_inference": "dialogue", "interview": "history"}
# Keys a registered language may leave out, per kind: they came after languages were registered
# without them, and are needed only by prompts that use the feature (they go all or none).
OPTIONAL_KEYS = {"survey_response": ("context", "context_question", "context_answer")}
# Placeholders the readers match on: a layout without them could not be read back.
_PLACEHOLDERS = {("stance", "ask"): "{topic}", ("role_inference", "ask"): "{field}"}
LANGUAGES = {code: {kind: table[code] for kind, table in KINDS.items()} for code in ("zh", "en")}


def register_language(code: str, layouts: dict) -> None:
  """Adds prompt language `code`: `layouts` maps some of the KINDS to a dict with every key the
  English layout of that kind has (copy one from this file and translate its values)."""
  if code in LANGUAGES:
    raise ValueError(f"prompt language {code!r} is already registered")
  unknown = sorted(set(layouts) - set(KINDS))
  if unknown or not layouts:
    raise ValueError(f"prompt language {code!r}: kinds {unknown or '(none)'}; valid kinds: {list(KINDS)}")
  for kind, layout in layouts.items():
    optional = OPTIONAL_KEYS.get(kind, ())
    missing = [k for k in KINDS[kind]["en"] if k not in layout and k not in optional]
    if missing:
      raise ValueError(f"prompt language {code!r}, {kind}: missing keys {missing} (see "
                       f"prompt_layouts.{kind.upper()}['en'])")
    given = [k for k in optional if k in layout]
    if given and len(given) < len(optional):
      raise ValueError(f"prompt language {code!r}, {kind}: has {given} but not "
                       f"{[k for k in optional if k not in layout]}; give all of {list(optional)} or none")
    empty = [k for k in given if not isinstance(layout[k], str) or not layout[k].strip()]
    if empty:  # the readers find these sections by their text
      raise ValueError(f"prompt language {code!r}, {kind}: keys {empty} must be non-empty text")
    for (k_kind, key), placeholder in _PLACEHOLDERS.items():
      if kind == k_kind and placeholder not in layout[key]:
        raise ValueError(f"prompt language {code!r}, {kind}.{key} needs the placeholder {placeholder}")
    if not layout[MARKERS[kind]]:
      raise ValueError(f"prompt language {code!r}, {kind}.{MARKERS[kind]} is empty: the readers find "
                       "the language by it")
    if kind == "stance":
      if sorted(layout["labels"]) != sorted(STANCES):
        raise ValueError(f"prompt language {code!r}, stance.labels must name each of {list(STANCES)}")
      clash = {label: STANCE_WORDS[label] for stance, label in layout["labels"].items()
               if STANCE_WORDS.get(label, stance) != stance}
      if clash:
        raise ValueError(f"prompt language {code!r}: stance labels {clash} already name other stances")
  for kind, layout in layouts.items():
    KINDS[kind][code] = dict(layout)
    if kind == "stance":
      STANCE_WORDS.update({label: stance for stance, label in layout["labels"].items()})
  LANGUAGES[code] = {kind: KINDS[kind][code] for kind in layouts}


def layout(kind: str, code: str) -> dict:
  """The layout of one prompt kind in language `code`; errors list what is registered."""
  if code not in LANGUAGES:
    raise ValueError(f"unknown prompt language {code!r}; registered: {sorted(LANGUAGES)}")
  if kind not in LANGUAGES[code]:
    raise ValueError(f"prompt language {code!r} has no {kind} layout; it has {sorted(LANGUAGES[code])}")
  return LANGUAGES[code][kind]


def detect_language(text: str, kind: str) -> str | None:
  """The language whose `kind` marker is in `text` (the longest marker found wins), or None."""
  key = MARKERS[kind]
  found = [code for code, lays in LANGUAGES.items() if kind in lays and lays[kind][key] in text]
  return max(found, key=lambda code: len(LANGUAGES[code][kind][key])) if found else None


def markers(kind: str) -> list[str]:
  """The `kind` marker of every registered language (zh and en first)."""
  return [lays[kind][MARKERS[kind]] for lays in LANGUAGES.values() if kind in lays]


def stance_language(label: str) -> str:
  """The language whose stance labels include `label`."""
  for code, lays in LANGUAGES.items():
    if "stance" in lays and label in lays["stance"]["labels"].values():
      return code
  raise ValueError(f"stance label {label!r} is in no registered language ({sorted(LANGUAGES)})")
