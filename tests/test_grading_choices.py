"""Multiple-choice rows (MedQA's format): the model sees the options, and answers are graded by option."""

import json

import pytest

from helpers import jsonl, last_error_line, run_rtool
from rtool.grade.answers import grade, grade_many
from rtool.errors import UserError
from rtool.grade.fields import FieldMap
from rtool.generate.core import Completion, SamplingParams
from rtool.io.records import Row
from rtool.generate.traces import sample_traces

OPTIONS = {"A": "Hypertension", "B": "Heart failure", "C": "Aortic stenosis", "D": "Atrial fibrillation",
           "E": "Pericarditis"}


def medqa_row(**extra):
    return Row({"question": "A 70-year-old man has a crescendo-decrescendo systolic murmur. Which is most likely?",
                "options": OPTIONS, "answer": "Aortic stenosis", "answer_idx": "C", **extra}, "medqa.jsonl", 3)


# (completion, gold, expected pred, expected correct); options are OPTIONS unless the row says otherwise.
CHOICE_CASES = [
    ("The answer is (C).", "C", "C", True),
    ("Answer: C", "C", "C", True),
    ("C", "C", "C", True),
    ("The correct option is C", "C", "C", True),
    ("The answer is aortic stenosis.", "C", "C", True),               # the option's text, in other case
    ("Aortic stenosis", "C", "C", True),                            # only the text, no statement
    ("\\boxed{C}", "Aortic stenosis", "C", True),                    # gold given as the option's text
    ("The answer is C. Aortic stenosis", "Aortic stenosis", "C", True),
    ("The answer is (B) Heart failure.", "C", "B", False),
    ("The answer is heart failure.", "Aortic stenosis", "B", False),
    ("Answer: F", "C", "F", False),                                  # not an option
    ("The answer is mitral regurgitation.", "C", "mitral regurgitation", False),
    ("I am not sure.", "C", None, False),
    ("<think>Maybe (B).</think>\nFinal answer: (C)", "C", "C", True),
    ("The answer is (C).", None, "C", None),                          # no gold: ungradable
]


@pytest.mark.parametrize("completion, gold, pred, correct", CHOICE_CASES)
def test_grade_by_letter_or_option_text(completion, gold, pred, correct):
    assert grade(gold, completion, OPTIONS) == (pred, correct)


def test_choices_as_a_list_and_numeric_options():
    assert grade("B", "Answer: Heart failure", ["Hypertension", "Heart failure"]) == ("B", True)
    # A number names the option with that value: "0.5" is option B ("1/2").
    assert grade("B", "The answer is 0.5", ["1/3", "1/2", "3"]) == ("B", True)
    assert grade("1/2", "\\boxed{\\frac{1}{3}}", ["1/3", "1/2", "3"]) == ("A", False)
    # A gold that names no option is graded as without options.
    assert grade("7", "\\boxed{7}", ["1/3", "1/2"]) == ("7", True)


def test_grade_many_passes_choices():
    triples = [("C", "The answer is (C).", OPTIONS), ("C", "Heart failure", OPTIONS), ("4", "\\boxed{4}", None),
               ("x^2+1", "\\boxed{1+x^2}", None)]
    assert list(grade_many(triples)) == [("C", True), ("B", False), ("4", True), ("1+x^2", True)]
    assert list(grade_many(triples, workers=2, chunk_size=1)) == list(grade_many(triples))


def test_fieldmap_choices():
    fields = FieldMap()
    assert fields.choices(medqa_row()) == OPTIONS
    assert fields.choices(Row({"question": "q", "options": ["x", 2]})) == {"A": "x", "B": "2"}
    assert fields.choices(Row({"question": "q", "options": {"b": "y", "a": "x"}})) == {"A": "x", "B": "y"}
    assert fields.choices(Row({"question": "q", "answer": "4"})) is None


@pytest.mark.parametrize("options, fragment", [
    ({"1": "x", "2": "y"}, "must have letters A-J as keys"),
    ("A. x B. y", "must be a {letter: text} object or a list of texts, got str"),
    ([str(i) for i in range(11)], "at most 10"),
    ({"A": ["x"]}, "option A of field 'options' must be a string"),
])
def test_fieldmap_choices_refuses_bad_options(options, fragment):
    with pytest.raises(UserError) as caught:
        FieldMap().choices(Row({"question": "q", "options": options}, "bench.jsonl", 4))
    assert str(caught.value).startswith("bench.jsonl:4: ") and fragment in str(caught.value)


def test_the_model_sees_the_options():
    messages = FieldMap().messages(medqa_row(), system="Reason step by step.")
    assert messages[0] == {"role": "system", "content": "Reason step by step."}
    assert messages[1]["role"] == "user"
    assert messages[1]["content"] == (medqa_row()["question"] + "\n\nA. Hypertension\nB. Heart failure\n"
                                      "C. Aortic stenosis\nD. Atrial fibrillation\nE. Pericarditis")
    # A conversation prompt gets them on its last user turn.
    chat = Row({"prompt": [{"role": "user", "content": "Pick one."}], "options": ["x", "y"]})
    assert FieldMap().messages(chat) == [{"role": "user", "content": "Pick one.\n\nA. x\nB. y"}]
    # Rows without options are sent as before.
    assert FieldMap().messages(Row({"question": "2+2?"})) == [{"role": "user", "content": "2+2?"}]


class ScriptedBackend:
    """Answers each conversation with the next scripted text, and keeps what it was sent."""

    name = kind = "scripted"

    def __init__(self, texts):
        self.texts = list(texts)
        self.sent = []

    def generate(self, conversations, params, seeds=None):
        self.sent.extend(conversations)
        return [[Completion(self.texts.pop(0), "stop", 5) for _ in range(params.n)] for _ in conversations]


def test_sampled_traces_see_and_are_graded_by_the_options():
    backend = ScriptedBackend(["The answer is aortic stenosis.", "The answer is (B)."])
    rows = [medqa_row(id="q1"), medqa_row(id="q2")]
    traces = list(sample_traces(backend, rows, FieldMap(), SamplingParams(n=1, temperature=0.0)))
    assert [(t.pred, t.correct) for t in traces] == [("C", True), ("B", False)]
    assert all("\n\nA. Hypertension\n" in conversation[-1]["content"] for conversation in backend.sent)


def test_eval_grades_medqa_rows(tmp_path):
    rows = [{**medqa_row(), "id": "q1", "sample": i, "completion": text}
            for i, text in enumerate(["The answer is (C).", "Aortic stenosis", "C", "The answer is B."])]
    # answer_idx alone (no answer field) is the gold too.
    rows.append({"id": "q2", "question": "Which valve?", "options": ["mitral", "aortic"], "answer_idx": "B",
                 "completion": "Answer: aortic", "sample": 0})
    records = tmp_path / "graded.jsonl"
    result = run_rtool("eval", "--records", records, input="".join(json.dumps(r) + "\n" for r in rows))
    assert result.returncode == 0, result.stderr.decode()
    summary, graded = json.loads(result.stdout), jsonl(records.read_text())
    assert [(r["pred"], r["correct"]) for r in graded] == [("C", True), ("C", True), ("C", True), ("B", False),
                                                           ("B", True)]
    assert summary["pass@1"] == pytest.approx((3 / 4 + 1) / 2)


def test_eval_names_the_line_of_bad_options():
    rows = [{"id": "q", "question": "q?", "options": "A. x", "answer": "A", "completion": "A"}]
    result = run_rtool("eval", input="".join(json.dumps(r) + "\n" for r in rows))
    assert result.returncode == 2
    assert last_error_line(result).startswith("rtool: error: <stdin>:1: field 'options' must be")
