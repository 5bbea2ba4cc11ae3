"""rtool distill: exact grades from a scripted teacher endpoint; output rows, resume, kill -9 safety and stable ids
on a tiny local teacher."""

import json
import signal
import subprocess
import time

from helpers import RTOOL, jsonl, run_in_process, run_rtool
from rtool.grade.answers import grade
from rtool.generate.core import Completion
from scripted import scripted_endpoint, tokens

SAMPLE_KEYS = {"id", "completion", "sample", "teacher", "pred", "correct", "finish_reason", "completion_tokens"}


def prompts_file(tmp_path, rows, name="prompts.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_one_row_per_sample_with_input_fields_kept(tmp_path, tiny_model_dir, tiny_task_rows):
    rows = tiny_task_rows[:5]
    result = run_rtool("distill", "--teacher", tiny_model_dir, "-n", 3, "--max-new-tokens", 12, "--seed", 1,
                       input="".join(json.dumps(r) + "\n" for r in rows))
    assert result.returncode == 0, result.stderr.decode()
    out = jsonl(result.stdout)
    assert len(out) == 15
    for row in out:
        assert SAMPLE_KEYS <= set(row)
        source = rows[[r["id"] for r in rows].index(row["id"])]
        assert {k: row[k] for k in source} == {**source, "id": source["id"]}
        assert row["finish_reason"] in ("stop", "length")
        assert 0 < row["completion_tokens"] <= 12
        # What the grader says of this very text (an untrained model's output; the scripted tests below check
        # grades that must come out True and False).
        assert (row["pred"], row["correct"]) == grade(source["answer"], row["completion"])
        assert row["teacher"] == str(tiny_model_dir)
    assert sorted((r["id"], r["sample"]) for r in out) == sorted((r["id"], s) for r in rows for s in range(3))
    summary = result.stderr.decode()
    pass_rate = sum(r["correct"] for r in out) / len(out)
    assert f"5 prompts, 15 samples, pass rate {pass_rate:.1%}" in summary


# id -> (input row, scripted completions, expected (pred, correct) per sample)
SCRIPT = {
    "add": ({"id": "add", "problem": "What is 2 + 2?", "answer": "4"},
            ["2 + 2 = 4, so the answer is \\boxed{4}.", "\\boxed{5}", "The answer is 4."],
            [("4", True), ("5", False), ("4", True)]),
    "eggs": ({"id": "eggs", "question": "How many eggs does she sell?", "answer": "She sells 18 eggs.\n#### 18"},
             ["#### 18", "So she has 17 eggs. \\boxed{17}",
              Completion("Let me count the eggs one by one", "length", 8)],
             [("18", True), ("17", False), (None, False)]),
    "hi": ({"id": "hi", "prompt": "Say hi"}, ["hi", "hello there", "hey"], [(None, None)] * 3),
}


def _scripted_rows():
    return "".join(json.dumps(row) + "\n" for row, _, _ in SCRIPT.values())


def _user_message(row):
    return row.get("problem") or row.get("question") or row.get("prompt")


def test_scripted_teacher_rows_are_graded_exactly(tmp_path):
    script = {_user_message(row): texts for row, texts, _ in SCRIPT.values()}
    with scripted_endpoint(script) as server:
        # --batch-size 1: one request at a time, sample 0 first, so sample k is the k-th scripted completion.
        result = run_rtool("distill", "--teacher", server.url, "-n", 3, "--temperature", 0.7, "--batch-size", 1,
                           input=_scripted_rows())
    assert result.returncode == 0, result.stderr.decode()
    assert server.backend.unscripted == []
    out = jsonl(result.stdout)
    assert [(r["id"], r["sample"]) for r in out] == [(i, s) for i in SCRIPT for s in range(3)]
    for row in out:
        source, texts, expected = SCRIPT[row["id"]]
        scripted = texts[row["sample"]]
        text = scripted.text if isinstance(scripted, Completion) else scripted
        assert {k: row[k] for k in source} == source
        assert row["completion"] == text and row["teacher"] == "scripted-teacher"
        assert (row["pred"], row["correct"]) == expected[row["sample"]], row
        if isinstance(scripted, Completion):
            assert (row["finish_reason"], row["completion_tokens"]) == ("length", 8)
        else:
            assert (row["finish_reason"], row["completion_tokens"]) == ("stop", tokens(text))
    # 3 of the 6 graded samples are right; 1 of 9 hit the length limit.
    tokens_mean = sum(r["completion_tokens"] for r in out) / 9
    assert f"distill: 3 prompts, 9 samples, pass rate 50.0%, mean {tokens_mean:.0f} tokens, truncated 11.1%" \
        in result.stderr.decode()


def test_rows_without_id_get_a_stable_one(tmp_path, tiny_model_dir):
    rows = [{"question": "What is 2 + 2?", "answer": "4"}, {"question": "What is 3 + 3?", "answer": "#### 6"}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    first = jsonl(run_rtool("distill", "-t", tiny_model_dir, "-n", 1, "--max-new-tokens", 4, input=text).stdout)
    second = jsonl(run_rtool("distill", "-t", tiny_model_dir, "-n", 1, "--max-new-tokens", 4, input=text).stdout)
    assert [r["id"] for r in first] == [r["id"] for r in second]
    assert len({r["id"] for r in first}) == 2


def test_no_gold_means_correct_null(tmp_path, tiny_model_dir):
    result = run_rtool("distill", "-t", tiny_model_dir, "-n", 1, "--max-new-tokens", 4,
                       input=json.dumps({"prompt": "Say hi"}) + "\n")
    assert jsonl(result.stdout)[0]["correct"] is None
    assert "n/a (no gold answers)" in result.stderr.decode()


def test_resume_skips_finished_samples(tmp_path, capfd, tiny_model_dir, tiny_task_rows):
    # In this process: a resume across processes, after a kill -9, is the test below.
    out = tmp_path / "traces.jsonl"
    first = prompts_file(tmp_path, tiny_task_rows[:3], "first.jsonl")
    everything = prompts_file(tmp_path, tiny_task_rows[:6], "all.jsonl")
    common = ["-t", tiny_model_dir, "-n", 2, "--max-new-tokens", 6, "--out", out, "--resume"]
    assert run_in_process(capfd, "distill", *common, "-i", first)[0] == 0
    before = out.read_text()
    code, _, stderr = run_in_process(capfd, "distill", *common, "-i", everything)
    assert code == 0, stderr
    assert out.read_text().startswith(before)  # earlier rows untouched
    keys = [(r["id"], r["sample"]) for r in jsonl(out.read_text())]
    assert len(keys) == len(set(keys)) == 12
    assert "resuming: 6 samples" in stderr


def test_kill_9_then_resume_loses_nothing_and_duplicates_nothing(tmp_path, tiny_model_dir, tiny_task_rows):
    rows = tiny_task_rows[:24]
    source = prompts_file(tmp_path, rows)
    out = tmp_path / "traces.jsonl"
    args = [RTOOL, "distill", "-t", str(tiny_model_dir), "-n", "2",
            "--max-new-tokens", "24", "--batch-size", "1", "-i", str(source), "--out", str(out), "--resume"]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.stat().st_size < 1500):
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_lines = out.read_bytes().count(b"\n")
    assert 0 < killed_lines < 48, "kill landed too late to test anything"
    result = subprocess.run(args, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    final = jsonl(out.read_text())  # every line parses: nothing truncated
    keys = [(r["id"], r["sample"]) for r in final]
    assert len(keys) == len(set(keys)) == 48


def test_teacher_name_labels_the_rows_and_sampling_keeps_the_model(tmp_path):
    script = {_user_message(row): texts for row, texts, _ in SCRIPT.values()}
    with scripted_endpoint(script) as server:
        result = run_rtool("distill", "--teacher", server.url, "--teacher-name", "concise", "-n", 1,
                           "--batch-size", 1, input=_scripted_rows())
    assert result.returncode == 0, result.stderr.decode()
    rows = jsonl(result.stdout)
    assert len(rows) == 3
    assert {row["teacher"] for row in rows} == {"concise"}
    assert {row["sampling"]["teacher"] for row in rows} == {"scripted-teacher"}  # what --resume compares
