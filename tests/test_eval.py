"""rtool eval: grading completions from stdin (exact metrics), and generating with a tiny model."""

import json

import pytest

from helpers import jsonl, last_error_line, run_rtool


def graded_rows():
    # prompt p1: gold 4, samples 4, 4, 5, \frac{8}{2} -> 3 of 4 correct, majority "4" correct
    # prompt p2 (GSM8K style gold): 18, 17, 17, none -> 1 of 4 correct, majority "17" wrong
    rows = []
    for i, text in enumerate(["so \\boxed{4}", "\\boxed{4}", "\\boxed{5}", "\\boxed{\\frac{8}{2}}"]):
        rows.append({"id": "p1", "problem": "2+2?", "answer": "4", "completion": text, "sample": i,
                     "completion_tokens": 10 * (i + 1), "finish_reason": "stop"})
    for i, text in enumerate(["#### 18", "The answer is 17.", "\\boxed{17}", "I am not sure"]):
        rows.append({"id": "p2", "question": "eggs?", "answer": "She makes $18.\n#### 18", "completion": text,
                     "sample": i, "completion_tokens": 100, "finish_reason": "length" if i == 3 else "stop"})
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_grades_completions_from_stdin(tmp_path, workers):
    records = tmp_path / "graded.jsonl"
    result = run_rtool("eval", "--records", records, "--workers", workers, input=graded_rows())
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["prompts"] == 2 and summary["samples_per_prompt"] == 4
    assert summary["pass@1"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert summary["pass@2"] == pytest.approx(((1 - 0 / 6) + (1 - 3 / 6)) / 2)
    assert summary["pass@4"] == 1.0
    assert summary["maj@4"] == 0.5
    assert summary["truncated_share"] == pytest.approx(1 / 8)
    assert summary["mean_tokens"] == pytest.approx((10 + 20 + 30 + 40 + 400) / 8)
    assert summary["ungradable"] == 0
    graded = jsonl(records.read_text())
    assert [r["correct"] for r in graded] == [True, True, False, True, True, False, False, False]
    assert graded[1]["pred"] == "4" and graded[3]["sample"] == 3
    assert "pass@1" in result.stderr.decode()  # the table


def test_rows_without_gold_are_ungradable_not_wrong():
    rows = [{"id": "x", "prompt": "hi", "completion": "\\boxed{1}"},
            {"id": "y", "prompt": "2?", "answer": "2", "completion": "\\boxed{2}"}]
    result = run_rtool("eval", input="".join(json.dumps(r) + "\n" for r in rows))
    summary = json.loads(result.stdout)
    assert summary["ungradable"] == 1 and summary["pass@1"] == 1.0


def test_generates_and_grades_with_a_model(tmp_path, tiny_model_dir, tiny_task_file):
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(tiny_task_file.read_text().splitlines(keepends=True)[:4]))
    records = tmp_path / "records.jsonl"
    result = run_rtool("eval", "--model", tiny_model_dir, "--bench", bench, "-n", 2, "--temperature", 0.7,
                       "--max-new-tokens", 8, "--records", records)
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["model"] == str(tiny_model_dir) and summary["prompts"] == 4
    assert summary["samples_per_prompt"] == 2
    assert {"pass@1", "pass@2", "maj@2", "mean_tokens", "median_tokens", "truncated_share"} <= set(summary)
    assert summary["pass@1"] == 0.0  # an untrained model does not do arithmetic
    assert len(jsonl(records.read_text())) == 8


@pytest.mark.parametrize("args, fragment", [
    (["--model", "m"], "--model needs --bench FILE"),
    (["--bench", "b.jsonl"], "--bench needs --model"),
    (["--workers", "0"], "--workers must be at least 1"),
])
def test_flag_errors(args, fragment):
    result = run_rtool("eval", *args, input="")
    assert result.returncode == 2 and fragment in last_error_line(result)


def test_missing_completion_names_line_and_field():
    text = json.dumps({"problem": "1?", "answer": "1", "completion": "1"}) + "\n" + json.dumps({"problem": "2?"}) + "\n"
    result = run_rtool("eval", input=text)
    assert result.returncode == 2
    assert last_error_line(result).startswith("rtool: error: <stdin>:2: no completion field")
