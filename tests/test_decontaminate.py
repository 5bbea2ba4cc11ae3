"""rtool decontaminate: planted bench questions (varied case, punctuation, spacing) are dropped, near-misses kept,
short bench rows matched whole, --field, --report, counts on stderr, kept rows unchanged, and bad benches."""

import json
import subprocess

import pytest

from helpers import RTOOL, jsonl, last_error_line, run_in_process, run_rtool
from rtool.curate.decontaminate import BenchIndex, normalized_words
from rtool.io.records import Row, read_records

JANET = next(read_records("gsm8k"))["question"]  # "Janet’s ducks lay 16 eggs per day. ..."


def bench_file(tmp_path, rows, name="aime.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def index_of(*texts, n=8):
    index = BenchIndex(n=n)
    index.add_bench("b", [Row({"id": i, "problem": text}, "b.jsonl", i + 1) for i, text in enumerate(texts)])
    return index


def test_normalisation_drops_case_punctuation_and_spacing():
    assert normalized_words("  Janet’s DUCKS,lay\n16 eggs!! ") == ["janet", "s", "ducks", "lay", "16", "eggs"]


@pytest.mark.parametrize("planted", [
    JANET,
    JANET.upper(),
    "Answer this: " + JANET.replace(" ", "   ").replace(".", " .") + " Thanks!",
    JANET.replace("’", "'").replace("$", "").replace("?", "").lower(),
])
def test_planted_gsm8k_questions_are_dropped(planted):
    index = BenchIndex(n=8)
    index.add_bench("gsm8k", read_records("gsm8k"))
    hit = index.match(planted)
    assert hit is not None and hit.bench == "gsm8k" and hit.bench_id == 1  # the first line of the shipped file


def test_near_misses_with_fewer_than_n_shared_words_are_kept():
    index = index_of("one two three four five six seven eight nine ten")
    assert index.match("One, two; THREE four five six seven eight!").ngram == "one two three four five six seven eight"
    assert index.match("one two three four five six seven") is None        # 7 shared words < 8
    assert index.match("one two three four X five six seven eight") is None  # broken in the middle
    assert index.match("zero two three four five six seven eight") is None  # 7 shared: two..eight


def test_a_short_bench_row_is_matched_whole_as_a_contiguous_word_sequence():
    index = index_of("Simplify $\\sqrt{242}$.")
    assert index.match("Please SIMPLIFY sqrt(242) for me").ngram == "simplify sqrt 242"
    assert index.match("simplify sqrt 2420") is None
    assert index.match("simplify the sqrt 242") is None


def write_rows(tmp_path, rows, name="prompts.jsonl"):
    path = tmp_path / name
    # odd spacing and key order: kept rows must come out with the same content
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_cli_drops_planted_rows_keeps_the_rest_unchanged_and_reports(tmp_path, capfd):
    aime = bench_file(tmp_path, [{"id": "aime-7", "problem": "Find the number of ordered pairs of integers such "
                                                           "that both are positive and their sum is 100."}])
    rows = [{"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "7", "extra": [1, {"z": "é"}]},
            {"prompt": "  janet’s ducks LAY 16 eggs per day. she eats three for breakfast every morning  "},
            {"prompt": [{"role": "user", "content": "FIND the number of ordered pairs of integers such that both"}]},
            {"id": "x", "problem": "Find the number of ordered pairs of numbers"}]  # 7 words shared
    report = tmp_path / "dropped.jsonl"
    code, out, err = run_in_process(capfd, "decontaminate", "--bench", "gsm8k", "--bench", aime, "--report", report,
                                    "-i", write_rows(tmp_path, rows))
    assert code in (0, None), err
    assert jsonl(out) == [rows[0], rows[3]]
    dropped = jsonl(report.read_text())
    assert [r["contamination"]["bench"] for r in dropped] == ["gsm8k", str(aime)]
    assert dropped[0]["contamination"] == {"bench": "gsm8k", "bench_id": 1,
                                           "ngram": "janet s ducks lay 16 eggs per day"}
    assert dropped[1]["contamination"]["bench_id"] == "aime-7"
    assert {k: v for k, v in dropped[1].items() if k != "contamination"} == rows[2]
    assert "4 rows, 2 kept, 2 dropped (gsm8k: 1, " in err and f"{aime}: 1" in err


def test_field_completion_checks_the_completion_not_the_prompt(tmp_path, capfd):
    rows = [{"prompt": JANET, "completion": "16 - 3 - 4 = 9 eggs, 9 * 2 = 18. \\boxed{18}"},
            {"prompt": "hi", "completion": "As asked: " + JANET}]
    code, out, _ = run_in_process(capfd, "decontaminate", "--bench", "gsm8k", "--field", "completion",
                                  "-i", write_rows(tmp_path, rows))
    assert code in (0, None) and jsonl(out) == [rows[0]]


def test_a_missing_bench_file_is_one_line_exit_2_and_no_output_file(tmp_path):
    out = tmp_path / "clean.jsonl"
    result = run_rtool("decontaminate", "--bench", tmp_path / "aime.jsonl", "-o", out,
                       input=json.dumps({"prompt": "x"}) + "\n")
    assert result.returncode == 2
    assert last_error_line(result) == f"rtool: error: {tmp_path / 'aime.jsonl'}: no such file or directory"
    assert len(result.stderr.decode().strip().splitlines()) == 1 and not out.exists()


def test_a_bench_row_without_a_text_field_names_file_line_and_field(tmp_path):
    bad = bench_file(tmp_path, [{"problem": "ok then"}, {"answer": "5"}])
    result = run_rtool("decontaminate", "--bench", bad, input=json.dumps({"prompt": "x"}) + "\n")
    assert result.returncode == 2 and result.stdout == b""
    line = last_error_line(result)
    assert line.startswith(f"rtool: error: {bad}:2:") and "prompt" in line, line
    assert len(result.stderr.decode().strip().splitlines()) == 1


def test_help_shows_an_example_pipeline_and_head_stays_quiet(tmp_path):
    assert b"rtool decontaminate --bench math500 --bench aime.jsonl" in run_rtool("decontaminate", "--help").stdout
    many = write_rows(tmp_path, [{"prompt": f"clean prompt number {i}"} for i in range(20000)])
    result = subprocess.run(f"{RTOOL} -q decontaminate --bench gsm8k -i {many} | head -1",
                            shell=True, capture_output=True, timeout=120)
    assert result.stdout == b'{"prompt": "clean prompt number 0"}\n' and result.stderr == b""


def test_a_bad_input_row_leaves_no_output_file(tmp_path):
    out = tmp_path / "clean.jsonl"
    rows = write_rows(tmp_path, [{"prompt": "fine"}, {"text": "no prompt here"}])
    result = run_rtool("decontaminate", "--bench", "math500", "-i", rows, "-o", out)
    assert result.returncode == 2 and not out.exists()
    assert last_error_line(result).startswith(f"rtool: error: {rows}:2:")
