"""Answers grouped by grading's equivalence (maj@n now, bon's votes later), and eval counting each sample once."""

import json

import pytest

from helpers import last_error_line, run_rtool
from rtool.grade.answers import AnswerGroups, same_answer
from rtool.errors import UserError
from rtool.grade.metrics import EvalTally
from rtool.io.records import Row


@pytest.mark.parametrize("a, b, same", [
    ("0.5", "\\frac{1}{2}", True),
    ("1/2", "\\dfrac12", True),
    ("12", "12.0", True),
    ("1,000", "1000", True),
    ("\\text{(C)}", "C", True),
    ("x^2+2x+1", "(x+1)^2", True),       # math-verify, both ways
    ("4\\sqrt{2}", "\\sqrt{32}", True),
    ("1 < x < 2", "(1, 2)", False),       # verify accepts this one way only: not one answer
    ("x=2", "y = 2", True),               # one variable's value: its assignments vote together
    ("k = \\frac{1}{2}", "0.5", True),
    ("x=2,y=3", "y=2,x=3", False),        # two variables: not one value
    ("A", "B", False),
    ("0.5", "0.6", False),
    ("x+1", "x-1", False),
    (None, None, False),
    ("5", None, False),
])
def test_same_answer(a, b, same):
    assert same_answer(a, b) is same
    assert same_answer(b, a) is same


def test_answer_groups_count_weigh_and_break_ties_by_first_seen():
    groups = AnswerGroups()
    added = [groups.add(pred, weight, item=i) for i, (pred, weight) in enumerate([
        ("1/3", 0.9), ("0.5", 0.1), ("\\frac{1}{2}", 0.2), (None, 5.0), ("1/3", 0.9), ("\\dfrac12", 0.3), ("7", 0.5)])]
    assert added == [True, True, True, False, True, True, True]
    assert [g.answer for g in groups.groups()] == ["1/3", "0.5", "7"]     # each group names its first answer
    assert [g.count for g in groups.groups()] == [2, 3, 1]
    assert [g.weight for g in groups.groups()] == pytest.approx([1.8, 0.6, 0.5])
    assert groups.best().answer == "0.5" and groups.best("weight").answer == "1/3"
    assert (groups.best().first_item, groups.best().top_item) == (1, 5)   # its first sample, its heaviest
    assert groups.group_of("\\dfrac12") is groups.best() and groups.group_of("9") is None   # answers added
    tie = AnswerGroups()
    for pred in ["2", "3", "3.0", "2.00"]:
        tie.add(pred)
    assert tie.best().answer == "2" and len(tie) == 2
    assert AnswerGroups().best() is None


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [2, 3, 4, 0, 1], [4, 0, 3, 1, 2], [1, 4, 2, 0, 3]])
def test_answer_groups_are_the_union_of_equivalences_whatever_the_order(order):
    # x=2 = 2 = y=2 (math-verify both ways) but x=2 != y=2: one answer of 3 votes, which beats 5's 2 votes.
    samples = ["5", "5", "x=2", "y=2", "2"]
    groups = AnswerGroups()
    for sample in order:
        groups.add(samples[sample], order=sample, item=sample)
    best = groups.best()
    assert (best.answer, best.count, best.first_item) == ("x=2", 3, 2)
    assert [g.count for g in groups.groups()] == [2, 3]


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [2, 3, 4, 0, 1], [4, 0, 3, 1, 2], [1, 4, 2, 0, 3]])
def test_assignments_to_one_variable_vote_as_their_value_whatever_the_order(order):
    # x=2, y=2 and t = 2 say 2 (Qwen2.5-Math's strip rule), with no bare 2 to join them: 3 votes beat 5's 2.
    samples = ["5", "x=2", "5", "y=2", "t = 2"]
    groups = AnswerGroups()
    for sample in order:
        groups.add(samples[sample], order=sample, item=sample)
    best = groups.best()
    assert (best.answer, best.count, best.first_item) == ("x=2", 3, 1)
    assert groups.group_of("t = 2") is best and len(groups) == 2


def test_eval_maj_at_n_counts_assignments_as_their_value():
    texts = ["\\boxed{5}", "\\boxed{x=2}", "The answer is 5.", "\\boxed{y = 2}", "\\boxed{t=2}"]
    rows = [{"id": "p", "problem": "?", "answer": "2", "completion": text, "sample": i} for i, text in enumerate(texts)]
    result = run_rtool("eval", input="".join(json.dumps(r) + "\n" for r in rows))
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["pass@1"] == pytest.approx(3 / 5) and summary["maj@5"] == 1.0


def test_weighted_ties_are_decided_by_the_tie_rule_not_float_rounding():
    # 0.1 + 0.2 = 0.30000000000000004 > 0.15 + 0.15 = 0.3 in floats: a tie, so more votes (then first) decide.
    groups = AnswerGroups()
    for order, (pred, weight) in enumerate([("4", 0.1), ("5", 0.15), ("4", 0.2), ("5", 0.15), ("5", 0.0)]):
        groups.add(pred, weight, order=order)
    assert groups.best("weight", "count").answer == "5"
    first_wins = AnswerGroups()
    for order, (pred, weight) in enumerate([("5", 0.15), ("4", 0.1), ("4", 0.2), ("5", 0.15)]):
        first_wins.add(pred, weight, order=order)
    assert first_wins.best("weight", "count").answer == "5"


def test_majority_votes_over_equivalent_answers():
    # Gold 1/2: three samples say one half in three spellings, two say 1/3. By exact string "1/3" (2) would win.
    tally = EvalTally()
    for pred, correct in [("1/3", False), ("0.5", True), ("1/3", False), ("\\frac{1}{2}", True),
                          ("\\dfrac12", True)]:
        tally.add("p", pred, correct, None, None)
    assert tally.summary()["maj@5"] == 1.0


def test_majority_groups_equivalent_wrong_answers():
    # Gold 7: two samples say 7; three say one half in three spellings, which is the majority answer (wrong).
    tally = EvalTally()
    for pred, correct in [("7", True), ("0.5", False), ("\\frac{1}{2}", False), ("7", True), ("1/2", False)]:
        tally.add("p", pred, correct, None, None)
    assert tally.summary()["maj@5"] == 0.0
    assert [g.count for g in tally.prompts["p"].votes.groups()] == [2, 3]


@pytest.mark.parametrize("votes, majority", [
    ([("2", False), ("1", True)], False),             # a tie goes to the answer seen first
    ([("1", True), ("2", False)], True),
    ([(None, False), (None, False), ("1", True)], True),   # no answer is no vote
    ([(None, False)], False),
    ([("3", False), ("1", True), ("1.0", True), ("3", False), ("4", False)], False),
])
def test_majority_ties_and_missing_answers(votes, majority):
    tally = EvalTally()
    for pred, correct in votes:
        tally.add("p", pred, correct, None, None)
    assert tally.prompts["p"].majority_correct() is majority


def test_eval_maj_at_n_groups_equivalent_answers():
    texts = ["\\boxed{1/3}", "\\boxed{0.5}", "The answer is 1/3.", "\\boxed{\\frac{1}{2}}", "\\boxed{\\dfrac12}"]
    rows = [{"id": "p", "problem": "half?", "answer": "\\frac{1}{2}", "completion": text, "sample": i}
            for i, text in enumerate(texts)]
    result = run_rtool("eval", input="".join(json.dumps(r) + "\n" for r in rows))
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["pass@1"] == pytest.approx(3 / 5) and summary["maj@5"] == 1.0


def test_tally_refuses_a_repeated_sample():
    tally = EvalTally()
    for sample in (0, 2, 1, 3):
        tally.add("p", "1", True, None, None, sample=sample)
    tally.add("q", "1", True, None, None, sample=0)
    with pytest.raises(UserError) as caught:
        tally.add("p", "1", True, None, None, sample=2, source=Row({}, "graded.jsonl", 9))
    assert str(caught.value).startswith("graded.jsonl:9: repeated sample 2 of id 'p'")
    assert tally.summary()["samples"] == 5   # the refused row was not counted


def test_tally_numbers_rows_without_sample_in_order():
    tally = EvalTally()
    for _ in range(3):
        tally.add("p", "1", True, None, None)
    assert tally.prompts["p"].samples == 3
    with pytest.raises(UserError, match="repeated sample 1 of id 'p'"):
        tally.add("p", "1", True, None, None, sample=1)
    with pytest.raises(UserError, match="must be a whole number"):
        tally.add("p", "1", True, None, None, sample="3")


def completion_rows(with_sample):
    rows = []
    for pid, gold in (("p1", "4"), ("p2", "7")):
        for i, text in enumerate(["\\boxed{4}", "\\boxed{7}"]):
            row = {"id": pid, "problem": "?", "answer": gold, "completion": text}
            rows.append({**row, "sample": i} if with_sample else row)
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_eval_refuses_a_file_appended_to_itself():
    once = completion_rows(with_sample=True)
    assert run_rtool("eval", input=once).returncode == 0
    result = run_rtool("eval", input=once + once)
    assert result.returncode == 2
    assert last_error_line(result) == ("rtool: error: <stdin>:5: repeated sample 0 of id 'p1' (each (id, sample) "
                                       "may appear once; was a file appended twice?)")


def test_eval_numbers_rows_without_sample_per_id():
    result = run_rtool("eval", input=completion_rows(with_sample=False))
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["samples_per_prompt"] == 2 and summary["pass@1"] == 0.5
    assert summary["bench"] is None   # stdin
