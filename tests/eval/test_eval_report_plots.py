"""Report plots read right: questions by their words with the id beside, `$` shown as written, long
labels wrapped or cut and inside the figure."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from surveylm_jax.eval import groups, report  # noqa: E402

INCOME = "yearly income=$50,000 to $89,999"
LONG = ("highest degree=graduate degree or professional school beyond the bachelor's degree, "
        "as the respondent reported it")
NATSPAC = "Are we spending too much, too little, or about the right amount on the space exploration program?"


def _fairness():
  gaps = {INCOME: 0.05, "yearly income=$90,000 or more": -0.03, "sex=female": 0.01, LONG: 0.02}
  return {name: {"summary": {"accuracy": {"gap_to_overall": dict(gaps)}}} for name in ("model", "marginal")}


def _group_row(qid, question=None, group=None):
  row = {"question_id": qid, "group": group or {"yearly income": "$50,000 to $89,999"},
         "human": [0.5, 0.3, 0.2], "options": ["too little", "about right", "too much"],
         "predictions": {"model_aggregated": [0.4, 0.4, 0.2], "marginal": [0.3, 0.3, 0.4]}}
  if question is not None:
    row["question"] = question
  return row


def _drawn_texts(fig):
  """Every text artist of a drawn figure (tick labels exist only once drawn)."""
  fig.canvas.draw()
  return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def _inside(fig, text) -> bool:
  box, renderer = fig.bbox, fig.canvas.get_renderer()
  extent = text.get_window_extent(renderer)
  return extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1 and extent.y0 >= box.y0 - 1 \
      and extent.y1 <= box.y1 + 1


def test_subgroup_gaps_show_dollar_labels_as_written_and_unclipped():
  with report.plain_text():
    fig = report.subgroup_gaps_figure(_fairness())
    texts = _drawn_texts(fig)
  try:
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert INCOME in labels and "yearly income=$90,000 or more" in labels
    # Shown as written: no text of the figure goes through math text (or TeX).
    assert texts and all(t.get_parse_math() is False and not t.get_usetex() for t in texts)
    long = next(label for label in labels if label.startswith("highest degree"))
    assert "\n" in long and long.endswith("…")  # wrapped to two lines, the rest cut
    assert max(report._width(line) for line in long.split("\n")) <= report.LABEL_COLUMNS
    ax = fig.axes[0]
    shown = list(ax.get_yticklabels()) + [ax.xaxis.label] + list(ax.get_legend().get_texts())
    assert all(_inside(fig, t) for t in shown), "a label sticks out of the figure"
  finally:
    plt.close(fig)


def test_subgroup_gaps_png_is_written(tmp_path):
  path = tmp_path / "subgroup_gaps.png"
  assert report._plot_subgroup_gaps(_fairness(), str(path))
  assert matplotlib.image.imread(str(path)).shape[0] > 100
  assert not report._plot_subgroup_gaps({"model": {"summary": {}}}, str(tmp_path / "none.png"))
  assert matplotlib.rcParams["text.parse_math"] is True  # settings are restored after plotting


def test_group_panels_are_titled_by_question_text_with_the_id():
  rows = [_group_row("natspac", NATSPAC), _group_row("natcity"),
          _group_row("q_life", "与五年前相比，您现在的生活如何？" * 8, {"居住地区": "城镇"})]
  with report.plain_text():
    fig = report.groups_figure(rows)
    texts = _drawn_texts(fig)
  try:
    titles = [ax.get_title() for ax in fig.axes[:3]]
    flat = [" ".join(t.split("\n")) for t in titles]
    assert flat[0].startswith(NATSPAC + " (natspac)")  # short enough to keep whole
    assert "yearly income=$50,000 to $89,999" in titles[0]  # `$` kept, as written
    assert titles[1].split("\n")[0] == "natcity"  # no text on the row: the id
    question_line = "".join(titles[2].split("\n")[:-1])
    assert question_line.startswith("与五年前相比") and question_line.endswith("… (q_life)")
    assert all(report._width(line) <= report.PANEL_TITLE_COLUMNS for t in titles for line in t.split("\n"))
    assert all(t.get_parse_math() is False for t in texts)
  finally:
    plt.close(fig)


def test_question_title_shortens_text_and_keeps_the_id():
  long = "Are we spending too much, too little, or about the right amount on " + "things " * 40
  title = report.question_title({"question_id": "natx", "question": long})
  assert title.endswith("… (natx)") and title.startswith("Are we spending")
  assert report._width(title[:-len(" (natx)")]) <= report.QUESTION_COLUMNS
  # When the id is the question text (records without a converter id) it is said once.
  assert report.question_title({"question_id": NATSPAC, "question": NATSPAC}) == NATSPAC
  assert report.question_title({"question_id": "natx"}) == "natx"


@pytest.mark.parametrize("text,columns,expected", [
    ("yearly income=$50,000 to $89,999", 20, "yearly\nincome=$50,000 to\n$89,999"),
    ("与五年前相比，您现在的生活如何？", 12, "与五年前相比\n，您现在的生\n活如何？"),
    ("short", 20, "short"),
])
def test_wrap_counts_display_columns(text, columns, expected):
  assert report.wrap(text, columns) == expected


def test_group_rows_keep_the_question_text():
  entries = [{"id": "g0", "question_id": "natspac", "question": NATSPAC, "group": {"sex": "male"}, "n": 30,
              "human": [0.5, 0.5], "predictions": {"model": [0.4, 0.6]}},
             {"id": "g1", "question_id": "natcity", "group": {"sex": "male"}, "n": 30,
              "human": [0.5, 0.5], "predictions": {"model": [0.4, 0.6]}}]
  rows = groups.evaluate_groups(entries, draws=5)["per_group"]
  assert rows[0]["question"] == NATSPAC and "question" not in rows[1]
