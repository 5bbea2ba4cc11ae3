"""Progress on stderr for long runs: rows done / total, rate and ETA; stdout stays data; -q silences it."""

import json
import logging
import re
import subprocess
import time

import pytest

from helpers import RTOOL, jsonl, run_rtool
from rtool.progress import Progress, count_rows, format_duration

EVERY_ROW = {"RTOOL_PROGRESS_EVERY": "0"}  # a status line per row done, not every 30 s
STATUS = re.compile(r"(\w[\w-]*): (\d+)(?:/(\d+))? rows(?: \(\d+%\))?  \S+ rows/s  elapsed \S+(?:  ETA (\S+))?$")


def status_lines(stderr: bytes | str, command: str) -> list[re.Match]:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    found = [STATUS.search(line) for line in text.splitlines()]
    return [match for match in found if match and match.group(1) == command]


@pytest.fixture(scope="module")
def prompts(tiny_task_rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in tiny_task_rows[:3]) + "\n")  # a blank line: not a row
    return path


def test_distill_from_a_file_shows_done_total_rate_and_eta_on_stderr(prompts, tiny_model_dir):
    result = run_rtool("distill", "--teacher", tiny_model_dir, "-n", 2, "--max-new-tokens", 4, "--batch-size", 2,
                       "-i", prompts, env=EVERY_ROW)
    assert result.returncode == 0, result.stderr.decode()
    assert len(jsonl(result.stdout)) == 6  # stdout is the rows, nothing else
    lines = status_lines(result.stderr, "distill")
    assert [(int(m.group(2)), int(m.group(3))) for m in lines] == [(done, 6) for done in range(1, 7)]
    assert all(m.group(4) for m in lines) and lines[-1].group(4) == "0s"
    assert "distill: 3 prompts, 6 samples" in result.stderr.decode()  # the summary, as before


def test_distill_from_stdin_shows_done_and_rate_without_eta(prompts, tiny_model_dir):
    result = run_rtool("distill", "--teacher", tiny_model_dir, "-n", 1, "--max-new-tokens", 4,
                       input=prompts.read_text(), env=EVERY_ROW)
    assert result.returncode == 0, result.stderr.decode()
    lines = status_lines(result.stderr, "distill")
    assert [(int(m.group(2)), m.group(3), m.group(4)) for m in lines] == [(1, None, None), (2, None, None),
                                                                            (3, None, None)]


def test_quiet_shows_no_progress(prompts, tiny_model_dir):
    result = run_rtool("-q", "distill", "--teacher", tiny_model_dir, "-n", 1, "--max-new-tokens", 4, "-i", prompts,
                       env=EVERY_ROW)
    assert result.returncode == 0, result.stderr.decode()
    assert len(jsonl(result.stdout)) == 3
    assert not status_lines(result.stderr, "distill")


def test_eval_counts_bench_rows_times_samples(prompts, tiny_model_dir):
    result = run_rtool("eval", "--model", tiny_model_dir, "--bench", prompts, "-n", 2, "--temperature", 0.7,
                       "--max-new-tokens", 4, env=EVERY_ROW)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["prompts"] == 3  # stdout is the summary alone
    lines = status_lines(result.stderr, "eval")
    assert [(int(m.group(2)), int(m.group(3))) for m in lines] == [(done, 6) for done in range(1, 7)]


def test_bon_counts_candidates_read(tmp_path):
    rows = tmp_path / "candidates.jsonl"
    rows.write_text("".join(json.dumps({"id": i // 2, "problem": "x", "completion": "\\boxed{1}", "sample": i % 2})
                            + "\n" for i in range(4)))
    result = run_rtool("bon", "-i", rows, env=EVERY_ROW)
    assert result.returncode == 0, result.stderr.decode()
    assert [(int(m.group(2)), int(m.group(3))) for m in status_lines(result.stderr, "bon")] == [
        (1, 4), (2, 4), (3, 4), (4, 4)]


def test_distill_into_head_ends_quietly(prompts, tiny_model_dir):
    pipeline = (f"RTOOL_PROGRESS_EVERY=0.01 {RTOOL} distill --teacher {tiny_model_dir} -n 2 --max-new-tokens 4 "
                f"--batch-size 1 -i {prompts} | head -1; echo \"rc=${{PIPESTATUS[0]}}\"")
    result = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, timeout=120)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["sample"] == 0 and lines[-1] == "rc=0"
    assert "Traceback" not in result.stderr and "error" not in result.stderr.lower(), result.stderr


def test_a_status_line_comes_every_interval_while_no_row_finishes(caplog):
    # A first batch can take minutes on a real teacher: the line says the run is alive before any row is done.
    with caplog.at_level(logging.INFO, logger="rtool"):
        logging.getLogger("rtool").addHandler(caplog.handler)
        try:
            with Progress("distill", total=40, every=0.05):
                time.sleep(0.3)
        finally:
            logging.getLogger("rtool").removeHandler(caplog.handler)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) >= 2 and all(STATUS.search(line) for line in lines)
    assert lines[0].startswith("distill: 0/40 rows (0%)  0 rows/s  elapsed 0s  ETA ?")


def test_library_use_without_logging_setup_is_silent(capfd):
    logger = logging.getLogger("rtool")
    level = logger.level
    logger.setLevel(logging.WARNING)  # what -q sets; library users who never configured logging get the same
    try:
        with Progress("eval", total=2, every=0) as progress:
            progress.advance(2)
    finally:
        logger.setLevel(level)
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("seconds, shown", [(0, "0s"), (44.6, "45s"), (60, "1m00s"), (725, "12m05s"),
                                            (3600 * 3 + 7 * 60 + 59, "3h07m"), (-3, "0s")])
def test_format_duration(seconds, shown):
    assert format_duration(seconds) == shown


def test_count_rows(tmp_path):
    jsonl_file = tmp_path / "a.jsonl"
    jsonl_file.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3}')  # blank line skipped, last line without newline
    assert count_rows(jsonl_file) == 3
    assert count_rows("-") is None
    assert count_rows(tmp_path) is None  # a dataset folder: no cheap count
    assert count_rows(tmp_path / "missing.jsonl") is None  # the reader says what is wrong with it


def test_a_terminal_gets_a_live_bar_and_the_log_lines(prompts, tiny_model_dir):
    import os
    import pty

    leader, follower = pty.openpty()  # stderr on a terminal; stdout stays a pipe
    child = subprocess.Popen([RTOOL, "distill", "--teacher", str(tiny_model_dir), "-n", "2", "--temperature", "0",
                              "--max-new-tokens", "4", "-i", str(prompts)], stdout=subprocess.PIPE,
                             stderr=follower, env={**os.environ, "RTOOL_DEBUG": "0", "COLUMNS": "160"})
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout, _ = child.communicate(timeout=120)
    os.close(leader)
    assert child.returncode == 0, seen.decode(errors="replace")
    assert len(jsonl(stdout)) == 6
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))
    assert re.search(r"distill .*6/6 rows \S+ rows/s", screen)  # the bar, finished
    assert "every sample of a prompt is the same greedy answer" in screen  # a warning still shows beside it


def test_prm_label_counts_traces_labelled_and_dropped(tmp_path, tiny_model_dir):
    traces = tmp_path / "traces.jsonl"
    rows = [{"id": "a", "problem": "1+1?", "answer": "2", "completion": "One.\n\n\\boxed{2}"},
            {"id": "b", "problem": "2+2?", "completion": "Two.\n\n\\boxed{4}"},  # no gold: dropped, still counted
            {"id": "c", "problem": "3+3?", "answer": "6", "completion": "Three.\n\n\\boxed{6}"}]
    traces.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_rtool("prm-label", "--policy", tiny_model_dir, "-k", 1, "--max-new-tokens", 4, "--batch-size", 3,
                       "--skip-ungraded", "-i", traces, env=EVERY_ROW)
    assert result.returncode == 0, result.stderr.decode()
    assert [row["id"] for row in jsonl(result.stdout)] == ["a", "c"]
    lines = status_lines(result.stderr, "prm-label")
    assert [(int(m.group(2)), int(m.group(3))) for m in lines] == [(1, 3), (2, 3), (3, 3)]


def test_prm_score_counts_rows_scored(tmp_path):
    from prm_models import build_prm

    prm = build_prm("qwen-prm", tmp_path / "prm")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "problem": "1+1?", "completion": "One.\n\n\\boxed{2}"}) + "\n"
                            for i in range(3)))
    result = run_rtool("prm-score", "--prm", prm, "--device", "cpu", "--dtype", "float32", "-i", rows, env=EVERY_ROW)
    assert result.returncode == 0, result.stderr.decode()
    assert len(jsonl(result.stdout)) == 3
    lines = status_lines(result.stderr, "prm-score")
    assert [(int(m.group(2)), int(m.group(3))) for m in lines] == [(1, 3), (2, 3), (3, 3)]
