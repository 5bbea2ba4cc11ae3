"""rtool difficulty: pass rates per prompt over mixed samples, teachers and files; grades; cv; --keep, --keep-cv;
bad input."""

import hashlib
import json
import math
import statistics

import pytest

from helpers import jsonl, run_in_process, run_rtool
from rtool.curate.difficulty import (DifficultyStats, coefficient_of_variation, difficulty_of, grade_difficulty,
                                     in_window, parse_keep)
from rtool.errors import UserError
from rtool.grade.fields import FieldMap
from rtool.io.records import Row


@pytest.mark.parametrize("rate, grade", [
    (1.0, "trivial"), (0.875, "easy"), (0.75, "easy"), (0.7499, "medium"), (0.5, "medium"), (0.25, "medium"),
    (0.2499, "hard"), (0.125, "hard"), (0.0, "unsolved"), (None, None)])
def test_difficulty_bins(rate, grade):
    assert difficulty_of(rate) == grade


@pytest.mark.parametrize("text, window", [("0.1:0.9", (0.1, 0.9)), ("0:1", (0.0, 1.0)), ("0.5:0.5", (0.5, 0.5))])
def test_parse_keep(text, window):
    assert parse_keep(text) == window


@pytest.mark.parametrize("text, message", [
    ("0.9:0.1", "--keep 0.9:0.1: LO 0.9 is above HI 0.1 (did you mean --keep 0.1:0.9?)"),
    ("0.5", "--keep takes LO:HI, two pass rates in [0, 1], got '0.5' (e.g. --keep 0.1:0.9)"),
    ("a:b", "--keep takes LO:HI, two pass rates in [0, 1], got 'a:b' (e.g. --keep 0.1:0.9)"),
    ("0:1.5", "--keep takes LO:HI, two pass rates in [0, 1], got '0:1.5' (e.g. --keep 0.1:0.9)")])
def test_parse_keep_refuses(text, message):
    with pytest.raises(UserError) as error:
        parse_keep(text)
    assert error.value.render() == message


@pytest.mark.parametrize("rate, inside", [(0.0, False), (0.01, True), (0.5, True), (0.99, True), (1.0, False),
                                          (None, False)])
def test_teachable_window_drops_always_and_never_solved(rate, inside):
    assert in_window(rate, (0.01, 0.99)) is inside


def sample(id, correct, teacher=None, **extra):
    row = {"id": id, "problem": f"problem {id}", "answer": "4", "completion": "\\boxed{4}", "correct": correct,
           "pred": "4", "sample": 0, "finish_reason": "stop", "completion_tokens": 5, **extra}
    if teacher is not None:
        row["teacher"] = teacher
    return Row(row, "t.jsonl", 1)


def test_pass_rates_counted_by_hand_across_teachers_with_ungraded_samples():
    rows = [sample("a", True, "T1"), sample("b", False, "T1"), sample("a", False, "T2"), sample("a", None, "T2"),
            sample("a", True, "T1"), sample("b", False, "T2"), Row({"id": "a", "problem": "problem a"}, "t", 9)]
    stats = DifficultyStats()
    out = list(grade_difficulty(rows, FieldMap(), stats=stats))
    assert out == [
        {"id": "a", "problem": "problem a", "answer": "4", "samples": 5, "graded": 3, "correct": 2,
         "pass_rate": 2 / 3, "pass_rate_by": {"T1": 1.0, "T2": 0.0}, "cv": 1.0, "difficulty": "medium"},
        {"id": "b", "problem": "problem b", "answer": "4", "samples": 2, "graded": 2, "correct": 0,
         "pass_rate": 0.0, "pass_rate_by": {"T1": 0.0, "T2": 0.0}, "cv": None, "difficulty": "unsolved"}]
    assert (stats.rows, stats.ungraded, stats.prompts, stats.no_grade, stats.no_cv) == (7, 2, 2, 0, 1)


@pytest.mark.parametrize("rates, cv", [
    ([1.0, 0.0], 1.0),                                # mean 0.5, population std 0.5
    ([0.5, 0.25, 0.75], math.sqrt(0.125 / 3) / 0.5),  # squared deviations 0, 1/16, 1/16 over 3 groups
    ([0.5, 0.5, 0.5], 0.0),                           # every teacher alike
    ([0.25, 1.0], 0.375 / 0.625),
    ([0.0, 0.0], None),                               # mean 0: 0/0
    ([0.75], None), ([], None)])                      # one group: no spread to measure
def test_cv_is_population_std_over_mean(rates, cv):
    assert coefficient_of_variation(rates) == pytest.approx(cv)
    if cv is not None:  # the same as the standard library's population form
        assert cv == pytest.approx(statistics.pstdev(rates) / statistics.mean(rates))


@pytest.mark.parametrize("text, window", [("0:0.5", (0.0, 0.5)), ("0.5:inf", (0.5, math.inf)), ("1:2", (1.0, 2.0))])
def test_parse_keep_cv(text, window):
    assert parse_keep(text, "--keep-cv") == window


@pytest.mark.parametrize("text, message", [
    ("-1:1", "--keep-cv takes LO:HI, two CVs >= 0, got '-1:1' (e.g. --keep-cv 0:0.5)"),
    ("0.5:0.1", "--keep-cv 0.5:0.1: LO 0.5 is above HI 0.1 (did you mean --keep-cv 0.1:0.5?)")])
def test_parse_keep_cv_refuses(text, message):
    with pytest.raises(UserError) as error:
        parse_keep(text, "--keep-cv")
    assert error.value.render() == message


def test_cli_cv_across_passes_and_keep_cv(tmp_path, capfd):
    """Two passes of one teacher (field `run`, --by run): "agree" 2/4 in each -> cv 0, kept; "split" 4/4 and 0/4 ->
    cv 1, dropped; "once" was drawn in one pass only -> no cv, dropped with a warning. The --by field is a sample's,
    not the prompt's: it is not in the output row."""
    verdicts = {("agree", "A"): [1, 0, 1, 0], ("agree", "B"): [0, 1, 1, 0], ("split", "A"): [1, 1, 1, 1],
                ("split", "B"): [0, 0, 0, 0], ("once", "A"): [1, 0, 0, 0]}
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(sample(id, bool(c), "T", run=run)) + "\n"
                            for (id, run), cs in verdicts.items() for c in cs))
    code, out, err = run_in_process(capfd, "difficulty", "-i", rows, "--by", "run")
    assert code == 0, err
    assert [(r["id"], r["pass_rate_by"], r["cv"]) for r in jsonl(out)] == [
        ("agree", {"A": 0.5, "B": 0.5}, 0.0), ("split", {"A": 1.0, "B": 0.0}, 1.0), ("once", {"A": 0.25}, None)]
    assert all("run" not in r for r in jsonl(out))
    code, out, err = run_in_process(capfd, "difficulty", "-i", rows, "--by", "run", "--keep-cv", "0:0.5",
                                    "--keep", "0.1:0.9")
    assert code == 0, err
    assert [r["id"] for r in jsonl(out)] == ["agree"]
    assert "1 prompts have no cv (graded by fewer than two run values, or a pass rate of 0 in each)" in err
    assert "3 prompts (0 without a graded sample), 1 written (--keep 0.1:0.9 --keep-cv 0:0.5: 2 dropped)" in err


def test_rows_without_id_are_keyed_by_the_prompt_as_distill_keys_them():
    rows = [Row({"question": "What is 2+2?", "correct": c}, "t", i) for i, c in enumerate([True, True, False])]
    (out,) = grade_difficulty(rows, FieldMap())
    assert out["id"] == "p" + hashlib.sha1(b"What is 2+2?").hexdigest()[:16]
    assert (out["samples"], out["pass_rate"], out["difficulty"]) == (3, 2 / 3, "medium")


def test_cli_mixes_stdin_and_files_and_keeps_the_teachable_window(tmp_path):
    t1 = tmp_path / "t1.jsonl"  # teacher 1: solves "easy" 4/4, "mid" 2/4, "never" 0/4
    t1.write_text("".join(json.dumps(sample(i, c, "T1")) + "\n" for i, cs in
                          [("easy", [1, 1, 1, 1]), ("mid", [1, 0, 1, 0]), ("never", [0, 0, 0, 0])]
                          for c in map(bool, cs)))
    t2 = tmp_path / "t2.jsonl"  # teacher 2: "mid" 0/2 and one ungraded sample
    t2.write_text("".join(json.dumps(sample("mid", c, "T2")) + "\n" for c in [False, False, None]))
    student = "".join(json.dumps(sample("easy", True, "S")) + "\n" for _ in range(4))
    result = run_rtool("difficulty", "--keep", "0.01:0.99", "-", t1, t2, input=student)
    assert result.returncode == 0, result.stderr.decode()
    rows = jsonl(result.stdout)
    assert [(r["id"], r["samples"], r["graded"], r["correct"], r["pass_rate"], r["pass_rate_by"], r["difficulty"])
            for r in rows] == [("mid", 7, 6, 2, 2 / 6, {"T1": 0.5, "T2": 0.0}, "medium")]
    assert set(rows[0]) == {"id", "problem", "answer", "samples", "graded", "correct", "pass_rate", "pass_rate_by",
                            "cv", "difficulty"}
    assert rows[0]["cv"] == 1.0  # T1 0.5, T2 0.0: std 0.25 over mean 0.25
    err = result.stderr.decode()
    assert "1 of 19 samples have no grade (correct null or absent)" in err
    assert "difficulty: 19 samples (1 ungraded), 3 prompts (0 without a graded sample), 1 written (--keep " \
           "0.01:0.99: 2 dropped)" in err


def test_prompt_without_a_graded_sample_has_no_rate_and_is_dropped_by_keep(tmp_path, capfd):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": 1, "problem": "x"}) + "\n" + json.dumps(sample(2, True)) + "\n")
    code, out, err = run_in_process(capfd, "difficulty", "-i", rows)
    assert code == 0 and [(r["id"], r["pass_rate"], r["difficulty"]) for r in jsonl(out)] == [(1, None, None),
                                                                                               (2, 1.0, "trivial")]
    assert "1 prompts have no graded sample: pass_rate null" in err
    code, out, err = run_in_process(capfd, "difficulty", "-i", rows, "--keep", "0:1")
    assert code == 0 and [r["id"] for r in jsonl(out)] == [2]


@pytest.mark.parametrize("args, line, error", [
    (["--keep", "0.9:0.1"], None, "rtool: error: --keep 0.9:0.1: LO 0.9 is above HI 0.1 (did you mean --keep 0.1:0.9?)"),
    (["--keep-cv", "a:1"], None, "rtool: error: --keep-cv takes LO:HI, two CVs >= 0, got 'a:1' (e.g. --keep-cv 0:0.5)"),
    (["--by", ""], None, "rtool: error: --by needs a field name, got '' (e.g. --by teacher)"),
    ([], 2, "rtool: error: {rows}:2: field 'correct' must be true, false or null, got 'yes'"),
    ([], 3, "rtool: error: {rows}:3: no prompt field (found: correct; expected one of prompt, messages, question, "
            "problem, instruction, input or pass --prompt-field)")])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capfd, args, line, error):
    rows = tmp_path / "rows.jsonl"
    lines = [json.dumps(sample(1, True)), json.dumps(sample(1, True))]
    if line == 2:
        lines[1] = json.dumps(sample(1, "yes"))
    if line == 3:
        lines.append(json.dumps({"correct": True}))
    rows.write_text("\n".join(lines) + "\n")
    out_path = tmp_path / "out.jsonl"
    code, out, err = run_in_process(capfd, "difficulty", "-i", rows, "-o", out_path, *args)
    assert code == 2 and err.strip().splitlines() == [error.format(rows=rows)]
    assert not out_path.exists()
