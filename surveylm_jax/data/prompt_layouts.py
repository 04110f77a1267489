"""The section markers of AlignSurvey prompts, per task and language.

The readers parse with these markers and the survey converter writes with them, so what the
converter writes is exactly what the readers accept. The Chinese layouts are those of the
released files; the English task 4 / foundation_quan layout is the released GSS/ATP one; the
other English layouts are this project's translations of the Chinese ones.
"""
from __future__ import annotations

# task4 individual and foundation_quan: background lines, question, lettered options.
SURVEY_RESPONSE = {
    "zh": {"intro": "你需要模拟一位真实的问卷填写者来回答以下问题。", "background": "你的个人背景：",
           "question": "问卷问题：", "options": "选项：", "ask": "请直接输出你的答案："},
    "en": {"intro": "The survey is in {year}. You need to simulate a real survey respondent answering "
                    "the following question.",
           "background": "Your personal background:", "question": "Survey question:", "options": None,
           "ask": "Please provide your answer directly."},
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
           "labels": {"positive": "积极", "neutral": "中立", "negative": "消极"}},
    "en": {"intro": "You are a social science researcher analysing the survey answers of one respondent.",
           "background": "Background:",
           "ask": "Judge the respondent's stance towards {topic}, and explain your judgement.",
           "format": "Answer in JSON with the fields \"predict\" and \"reason\"; \"predict\" is one of "
                     "\"positive\", \"neutral\" or \"negative\".",
           "labels": {"positive": "positive", "neutral": "neutral", "negative": "negative"}},
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
           "answer_tag": "回答:", "ask": "请输出你的回答："},
    "en": {"intro": "You are a respondent taking part in a survey on {survey}.", "background": "== Your background ==",
           "history": "== Earlier dialogue ==", "current": "== Current question ==",
           "question_tag": "Interviewer:", "answer_tag": "Respondent:", "ask": "Answer in your own words:"},
}
