"""rtool eval: grading completions from stdin and generating from a scripted endpoint (exact metrics), and the
plumbing of generating with a tiny model."""

import json
from collections import Counter

import pytest

from helpers import jsonl, last_error_line, run_rtool
from rtool.grade.answers import grade
from rtool.generate.core import Completion
from scripted import scripted_endpoint, tokens


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


def test_ungraded_samples_are_left_out_as_difficulty_leaves_them_out(tmp_path):
    """One rule in eval and difficulty: a sample graded null (here: rows without the gold answer) is left out of the
    rates, never counted wrong, and both summaries count them. By hand: p1's graded samples 4, 4, 3 (gold 4) and
    three ungraded 3s -> 2/3, majority "4" right (the ungraded 3s cast no vote); p2: 7, 1, 1 (gold 7) -> 1/3, "1"
    wrong; p3 has no graded sample: left out. (eval once gave p1 2/6 and maj "3": pass@1 1/3, maj@6 0.)"""
    rows = []
    for i, (text, gold) in enumerate([("4", "4"), ("4", "4"), ("3", "4"), ("3", None), ("3", None), ("3", None)]):
        rows.append({"id": "p1", "problem": "2+2?", "completion": f"\\boxed{{{text}}}", "sample": i,
                     **({"answer": gold} if gold else {})})
    for i, text in enumerate(["7", "1", "1"]):
        rows.append({"id": "p2", "problem": "3+4?", "answer": "7", "completion": f"\\boxed{{{text}}}", "sample": i})
    rows.append({"id": "p3", "problem": "?", "completion": "\\boxed{1}", "sample": 0})
    records = tmp_path / "graded.jsonl"
    result = run_rtool("eval", "--records", records, input="".join(json.dumps(r) + "\n" for r in rows))
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert summary["pass@2"] == pytest.approx((1 + (1 - 1 / 3)) / 2)  # n = 3 graded samples each
    assert summary["pass@3"] == 1.0 and "pass@4" not in summary  # k up to the fewest graded samples of a prompt
    assert summary["maj@6"] == 0.5
    assert (summary["ungradable"], summary["ungradable_prompts"], summary["samples"]) == (4, 1, 10)

    result = run_rtool("difficulty", "-i", records)
    assert result.returncode == 0, result.stderr.decode()
    rates = {row["id"]: row["pass_rate"] for row in jsonl(result.stdout)}
    assert rates == {"p1": pytest.approx(2 / 3), "p2": pytest.approx(1 / 3), "p3": None}
    assert summary["pass@1"] == pytest.approx((rates["p1"] + rates["p2"]) / 2)
    assert "difficulty: 10 samples (4 ungraded), 3 prompts (1 without a graded sample)" in result.stderr.decode()


def test_generates_and_grades_with_a_model(tmp_path, tiny_model_dir, tiny_task_file):
    bench = tmp_path / "bench.jsonl"
    rows = [json.loads(line) for line in tiny_task_file.read_text().splitlines()[:4]]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = tmp_path / "records.jsonl"
    result = run_rtool("eval", "--model", tiny_model_dir, "--bench", bench, "-n", 2, "--temperature", 0.7,
                       "--max-new-tokens", 8, "--records", records)
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["model"] == str(tiny_model_dir) and summary["prompts"] == 4
    assert summary["samples_per_prompt"] == 2
    assert {"pass@1", "pass@2", "maj@2", "mean_tokens", "median_tokens", "truncated_share"} <= set(summary)
    graded = jsonl(records.read_text())
    assert sorted((r["id"], r["sample"]) for r in graded) == sorted((r["id"], s) for r in rows for s in range(2))
    gold = {r["id"]: r["answer"] for r in rows}
    for row in graded:  # whatever the untrained model wrote, its grade is the grader's
        assert (row["pred"], row["correct"]) == grade(gold[row["id"]], row["completion"])
    correct = Counter(r["id"] for r in graded if r["correct"])
    assert summary["pass@1"] == pytest.approx(sum(correct[r["id"]] / 2 for r in rows) / 4)
    assert summary["pass@2"] == pytest.approx(sum(correct[r["id"]] > 0 for r in rows) / 4)


# id -> (question, gold, scripted completions): e1 3 of 4 right, majority right; e2 1 of 4, majority wrong ("13");
# e3 none, one sample cut at the length limit; e4 (GSM8K-style gold) 4 of 4.
BENCH = {
    "e1": ("What is 3 + 4?", "7", ["\\boxed{7}", "The answer is 7.", "\\boxed{8}", "\\boxed{7}"]),
    "e2": ("What is 5 + 7?", "12", ["\\boxed{13}", "\\boxed{13}", "\\boxed{12}", "\\boxed{13}"]),
    "e3": ("What is 9 - 9?", "0", ["\\boxed{1}", Completion("I will count down from", "length", 8),
                                   "\\boxed{2}", "so \\boxed{1}"]),
    "e4": ("Eggs: 4 + 6?", "She has 10.\n#### 10", ["#### 10", "#### 10", "The answer is 10.", "\\boxed{10}"]),
}
# Every distinct scripted text, and its grade: the requests run concurrently, so which sample gets which text is
# not fixed, but each text's grade is.
EXPECTED = {"\\boxed{7}": ("7", True), "The answer is 7.": ("7", True), "\\boxed{8}": ("8", False),
            "\\boxed{13}": ("13", False), "\\boxed{12}": ("12", True), "\\boxed{1}": ("1", False),
            "I will count down from": (None, False), "\\boxed{2}": ("2", False), "so \\boxed{1}": ("1", False),
            "#### 10": ("10", True), "The answer is 10.": ("10", True), "\\boxed{10}": ("10", True)}


def _text(item):
    return item.text if isinstance(item, Completion) else item


def test_scripted_model_exact_grades_and_metrics(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": i, "question": q, "answer": gold}) + "\n"
                             for i, (q, gold, _) in BENCH.items()))
    records = tmp_path / "records.jsonl"
    with scripted_endpoint({q: texts for q, _, texts in BENCH.values()}, name="scripted-model") as server:
        result = run_rtool("eval", "--model", server.url, "--bench", bench, "-n", 4, "--temperature", 0.7,
                           "--records", records)
    assert result.returncode == 0, result.stderr.decode()
    assert server.backend.unscripted == []
    graded = jsonl(records.read_text())
    assert sorted((r["id"], r["sample"]) for r in graded) == sorted((i, s) for i in BENCH for s in range(4))
    for prompt_id, (_, _, texts) in BENCH.items():
        rows = [r for r in graded if r["id"] == prompt_id]
        assert sorted(r["completion"] for r in rows) == sorted(_text(t) for t in texts)
    for row in graded:
        assert (row["pred"], row["correct"]) == EXPECTED[row["completion"]], row
    assert Counter(r["id"] for r in graded if r["correct"]) == {"e1": 3, "e2": 1, "e4": 4}

    summary = json.loads(result.stdout)
    assert summary["model"] == server.url and {r["teacher"] for r in graded} == {"scripted-model"}
    assert (summary["prompts"], summary["samples"], summary["samples_per_prompt"]) == (4, 16, 4)
    assert summary["pass@1"] == pytest.approx((3 / 4 + 1 / 4 + 0 + 1) / 4)
    # unbiased pass@k = 1 - C(n-c, k) / C(n, k): e1 1 - 0/6, e2 1 - 3/6, e3 0, e4 1
    assert summary["pass@2"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert summary["pass@4"] == 0.75
    assert summary["maj@4"] == 0.5  # e1 and e4: e2's majority "13" is wrong, e3's "1" too
    assert summary["ungradable"] == 0
    assert summary["truncated_share"] == pytest.approx(1 / 16)
    all_tokens = [8 if isinstance(t, Completion) else tokens(t) for _, _, texts in BENCH.values() for t in texts]
    assert summary["mean_tokens"] == pytest.approx(sum(all_tokens) / 16)


@pytest.mark.parametrize("args, fragment", [
    (["--model", "m"], "--model needs --bench FILE"),
    (["--bench", "b.jsonl"], "--bench needs --model"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--group-by", ""], "--group-by needs a field name, got ''"),  # once ran as if --group-by were not given
    (["--group-by", " "], "--group-by needs a field name, got ' '"),
])
def test_flag_errors(args, fragment):
    result = run_rtool("eval", *args, input="")
    assert result.returncode == 2 and fragment in last_error_line(result)


def test_missing_completion_names_line_and_field():
    text = json.dumps({"problem": "1?", "answer": "1", "completion": "1"}) + "\n" + json.dumps({"problem": "2?"}) + "\n"
    result = run_rtool("eval", input=text)
    assert result.returncode == 2
    assert last_error_line(result).startswith("rtool: error: <stdin>:2: no completion field")


def test_summary_records_what_produced_it_and_warns_once_when_samples_are_cut(tmp_path, capfd, tiny_model_dir,
                                                                              tiny_task_rows):
    from helpers import run_in_process
    from rtool import __version__
    from rtool.generate.traces import REASONING_SYSTEM_PROMPT

    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps(row) + "\n" for row in tiny_task_rows[:3]))
    code, stdout, stderr = run_in_process(capfd, "eval", "--model", tiny_model_dir, "--bench", bench, "-n", 2,
                                          "--temperature", 0.5, "--seed", 7, "--max-new-tokens", 2)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["model"] == str(tiny_model_dir) and summary["bench"] == str(bench)
    assert summary["split"] is None and summary["subset"] is None
    assert summary["sampling"] == {"backend": "hf", "teacher": summary["sampling"]["teacher"], "temperature": 0.5,
                                   "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
                                   "max_new_tokens": 2, "seed": 7, "system": REASONING_SYSTEM_PROMPT, "split": "",
                                   "subset": "", "chat_template": "", "prompt_template": "", "n": 2}
    assert summary["rtool_version"] == __version__ and summary["truncated_share"] == 1.0
    # Two tokens end no answer: every sample was cut, and one warning says which flag to raise.
    assert " ".join(stderr.split()).count("100% of samples (6 of 6) ended at --max-new-tokens 2") == 1
    assert "raise it" in stderr


def test_group_by_teacher_summarises_each_teacher_apart():
    """Two teachers' samples 0..3 of the same prompts, appended: one summary per teacher, keyed by its name (no
    repeat error: each teacher is tallied apart); a row without the field goes under "(none)", with a warning."""
    rows = []
    for teacher, texts, tokens in (("T1", ["\\boxed{4}", "\\boxed{4}", "\\boxed{4}", "\\boxed{5}"], 10),
                                   ("T2", ["\\boxed{5}", "\\boxed{4}", "\\boxed{6}", "\\boxed{5}"], 50)):
        for i, text in enumerate(texts):
            rows.append({"id": "p1", "problem": "2+2?", "answer": "4", "completion": text, "sample": i,
                         "teacher": teacher, "completion_tokens": tokens * (i + 1),
                         "finish_reason": "length" if teacher == "T2" and i == 3 else "stop"})
    rows.append({"id": "p1", "problem": "2+2?", "answer": "4", "completion": "\\boxed{4}", "sample": 0})
    result = run_rtool("eval", "--group-by", "teacher", input="".join(json.dumps(r) + "\n" for r in rows))
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert list(summary) == ["T1", "T2", "(none)"]
    t1, t2 = summary["T1"], summary["T2"]
    assert t1["pass@1"] == 0.75 and t2["pass@1"] == 0.25
    assert t1["maj@4"] == 1.0 and t2["maj@4"] == 0.0
    assert t1["mean_tokens"] == 25 and t2["median_tokens"] == 125
    assert t1["truncated_share"] == 0 and t2["truncated_share"] == 0.25
    assert summary["(none)"]["samples"] == 1 and summary["(none)"]["pass@1"] == 1.0
    stderr = result.stderr.decode()
    assert "by teacher" in stderr and "T2" in stderr and "25.0%" in stderr  # the table: one row per teacher
    assert "1 rows without field 'teacher'" in stderr


def test_grading_a_distill_run_records_its_model_teacher_and_sampling(tmp_path, capfd, tiny_model_dir,
                                                                       tiny_task_rows):
    """Piped rows say what produced them: the summary takes model, teacher and sampling from them (it said
    "model": null); rows of two runs give the list of each value, one warning, and --group-by teacher one each."""
    from helpers import run_in_process

    runs = {}
    for name, seed, rows in (("T", 5, tiny_task_rows[:3]), ("U", 6, tiny_task_rows[3:5])):
        prompts, out = tmp_path / f"{name}-prompts.jsonl", tmp_path / f"{name}.jsonl"
        prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
        code, _, stderr = run_in_process(capfd, "distill", "-t", tiny_model_dir, "--teacher-name", name, "-n", 2,
                                         "--max-new-tokens", 3, "--seed", seed, "-i", prompts, "-o", out)
        assert code == 0, stderr
        runs[name] = out
    sampling = {name: jsonl(path.read_text())[0]["sampling"] for name, path in runs.items()}
    assert sampling["T"]["seed"] == 5 and sampling["T"]["teacher"] == str(tiny_model_dir)

    code, stdout, stderr = run_in_process(capfd, "eval", "--input", runs["T"])
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["model"], summary["teacher"]) == (str(tiny_model_dir), "T")
    assert summary["sampling"] == {**sampling["T"], "n": 2} and summary["bench"] == str(runs["T"])

    both = tmp_path / "both.jsonl"
    both.write_text(runs["T"].read_text() + runs["U"].read_text())
    code, stdout, stderr = run_in_process(capfd, "eval", "--input", both)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["model"] == str(tiny_model_dir) and summary["teacher"] == ["T", "U"]
    assert summary["sampling"] == [sampling["T"], sampling["U"]]
    warning = " ".join(stderr.split())
    assert warning.count("several teacher values and several sampling values") == 1
    assert "--group-by teacher" in warning

    code, stdout, stderr = run_in_process(capfd, "eval", "--input", both, "--group-by", "teacher")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert [(s["teacher"], s["sampling"]) for s in summary.values()] == [
        ("T", {**sampling["T"], "n": 2}), ("U", {**sampling["U"], "n": 2})]
    assert "several" not in stderr
