"""rtool decontaminate: planted bench questions (varied case, spacing) are dropped, near-misses kept, the default rule
drops what open-r1's does and operators keep questions apart, --rule loose (punctuation, short bench rows matched
whole), overlap and --min-overlap, --field, --report, counts on stderr, kept rows unchanged, bad benches and input."""

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


def index_of(*texts, n=8, rule="open-r1"):
    index = BenchIndex(n=n, rule=rule)
    index.add_bench("b", [Row({"id": i, "problem": text}, "b.jsonl", i + 1) for i, text in enumerate(texts)])
    return index


@pytest.mark.parametrize("rule, text, words", [
    # open-r1's normalize_string: lower-cased, whitespace collapsed, nothing else; punctuation stays in its word
    ("open-r1", "  Janet’s DUCKS,lay\n16 eggs!! ", ["janet’s", "ducks,lay", "16", "eggs!!"]),
    ("open-r1", "What is 919 +\t367?", ["what", "is", "919", "+", "367?"]),
    # loose: punctuation to spaces, but operators become words of their own and digits stay
    ("loose", "  Janet’s DUCKS,lay\n16 eggs!! ", ["janet", "s", "ducks", "lay", "16", "eggs"]),
    ("loose", "What is 919+367? And 919 − 3.5 ≤ x^2, 50%", ["what", "is", "919", "+", "367", "and", "919", "−", "3",
                                                      "5", "≤", "x", "^", "2", "50", "%"]),
    ("loose", "$a*b/c = |d| < e > f-g$ ~ h_i", ["a", "*", "b", "/", "c", "=", "|", "d", "|", "<", "e", ">", "f", "-",
                                               "g", "h", "i"]),
])
def test_normalisation_rules(rule, text, words):
    assert normalized_words(text, rule) == words


@pytest.mark.parametrize("rule", ["open-r1", "loose"])
@pytest.mark.parametrize("planted", [
    JANET,
    JANET.upper(),
    "Answer this: " + JANET.replace(" ", "   ").replace(".", " .") + " Thanks!",
    JANET.replace("’", "'").replace("$", "").replace("?", "").lower(),
])
def test_planted_gsm8k_questions_are_dropped(planted, rule):
    index = BenchIndex(n=8, rule=rule)
    index.add_bench("gsm8k", read_records("gsm8k"))
    hit = index.match(planted)
    assert hit is not None and hit.bench == "gsm8k" and hit.bench_id == 1  # the first line of the shipped file


def test_near_misses_with_fewer_than_n_shared_words_are_kept():
    index = index_of("one two three four five six seven eight nine ten", rule="loose")
    assert index.match("One, two; THREE four five six seven eight!").ngram == "one two three four five six seven eight"
    assert index.match("one two three four five six seven") is None        # 7 shared words < 8
    assert index.match("one two three four X five six seven eight") is None  # broken in the middle
    assert index.match("zero two three four five six seven eight") is None  # 7 shared: two..eight


def test_loose_matches_a_short_bench_row_whole_as_a_contiguous_word_sequence():
    index = index_of("Simplify $\\sqrt{242}$.", rule="loose")
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
    # the row is the first GSM8K question's first 15 words: its 8 distinct 8-grams are all that question's
    assert dropped[0]["contamination"] == {"bench": "gsm8k", "bench_id": 1, "bench_text": JANET, "overlap": 1.0,
                                           "ngram": "janet’s ducks lay 16 eggs per day. she"}
    assert dropped[1]["contamination"]["bench_id"] == "aime-7"
    assert dropped[1]["contamination"]["overlap"] == 1.0  # its 11 words' 4 8-grams are all the bench row's
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


# Issue 25 item 1: the default rule is open-r1's, and operators keep questions apart under either rule.

def openr1_drops(texts, bench_texts, n=8):
    """open-r1's scripts/decontaminate.py, written out here as the reference: normalize_string (lower, strip, collapse
    whitespace), word n-grams as strings, a row dropped when any of its n-grams is one of the bench's."""
    def ngrams(text):
        words = " ".join(text.lower().strip().split()).split()
        return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}

    bench = set().union(*map(ngrams, bench_texts))
    return [bool(ngrams(text) & bench) for text in texts]


def test_the_default_rule_drops_exactly_what_open_r1_drops(tmp_path, capfd):
    bench_texts = [row["question"] for row in read_records("gsm8k")] + [row["problem"] for row in read_records("math500")]
    texts = [JANET.upper(), JANET.replace("’", "'"), JANET.replace(".", ""),  # open-r1: all three still share 8-grams
             JANET.replace(".", "!").replace("every", "each"),               # no 8 words left in common
             "janet’s ducks lay 16 eggs per day.",                           # 7 words: no 8-gram, never dropped
             "Simplify $\\sqrt{242}$.",                                          # a whole short MATH-500 problem
             "what is the remainder when the sum of these numbers is divided by 7, please?",
             "A stock phrase: how much money will she have left over after she buys the new rope? Thanks.",
             "Find the value of 919 + 367 in base ten.", "Find the value of 919 - 367 in base ten."]
    expected = openr1_drops(texts, bench_texts)
    assert expected.count(True) >= 4 and expected.count(False) >= 4  # the cases cut both ways
    rows = [{"id": i, "prompt": text} for i, text in enumerate(texts)]
    code, out, _ = run_in_process(capfd, "decontaminate", "--bench", "gsm8k", "--bench", "math500",
                                  "-i", write_rows(tmp_path, rows))
    assert code in (0, None)
    assert [row["id"] for row in jsonl(out)] == [i for i, dropped in enumerate(expected) if not dropped]


def test_operators_keep_two_questions_apart_under_either_rule(tmp_path):
    # Every 8-gram of these 10-word questions holds the operator: erasing it (750708e's rule) made them one question.
    bench = bench_file(tmp_path, [{"id": "minus", "problem": "Find the value of 919 - 367 in base ten."}])
    rows = write_rows(tmp_path, [{"id": "plus", "prompt": "Find the value of 919 + 367 in base ten."},
                                 {"id": "times", "prompt": "find the value of 919*367 in base ten"},
                                 {"id": "copy", "prompt": "FIND THE VALUE OF 919 - 367 IN BASE TEN."}])
    for rule in ([], ["--rule", "open-r1"], ["--rule", "loose"]):
        result = run_rtool("decontaminate", "--bench", bench, *rule, "-i", rows)
        assert result.returncode == 0, result.stderr.decode()
        assert [row["id"] for row in jsonl(result.stdout)] == ["plus", "times"], rule
    short = bench_file(tmp_path, [{"id": "s", "problem": "What is 919 - 367?"}], name="short.jsonl")
    result = run_rtool("decontaminate", "--bench", short, "--rule", "loose",
                       input=json.dumps({"prompt": "What is 919 + 367?"}) + "\n" + json.dumps({"prompt": "what is 919-367"}))
    assert result.returncode == 0 and jsonl(result.stdout) == [{"prompt": "What is 919 + 367?"}]


def test_an_unknown_rule_lists_the_rules():
    result = run_rtool("decontaminate", "--bench", "gsm8k", "--rule", "s1", input=json.dumps({"prompt": "x"}) + "\n")
    assert result.returncode == 2
    assert last_error_line(result) == "rtool: error: unknown --rule 's1' (valid: open-r1, loose)"


# Issue 25 item 2: a bench or input that holds nothing, and --bench-split where there are no splits, are refused.

@pytest.mark.parametrize("content", ["", "\n\n"])
def test_an_empty_bench_is_refused_before_any_output(tmp_path, content):
    empty, out = tmp_path / "aime.jsonl", tmp_path / "clean.jsonl"
    empty.write_text(content)
    result = run_rtool("decontaminate", "--bench", "gsm8k", "--bench", empty, "-o", out,
                       input=json.dumps({"prompt": JANET}) + "\n")
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.decode().strip().splitlines() == [
        f"rtool: error: {empty}: no rows (the bench is empty: nothing could be dropped for it)"]


def test_a_bench_of_rows_too_short_for_the_open_r1_rule_is_refused_and_loose_takes_it(tmp_path):
    bench = bench_file(tmp_path, [{"problem": "Compute $\\dbinom{8}{4}$."}, {"problem": "What is 919 - 367?"}])
    rows = write_rows(tmp_path, [{"prompt": "Please compute $\\dbinom{8}{4}$. now"}, {"prompt": "clean"}])
    refused = run_rtool("decontaminate", "--bench", bench, "-i", rows)
    assert refused.returncode == 2 and refused.stdout == b""
    assert last_error_line(refused) == (
        f"rtool: error: {bench}: no bench row can match anything (2 of its 2 rows have fewer than 8 words, which the "
        "open-r1 rule ignores as open-r1 does: pass --rule loose to match them whole, or a smaller --ngram)")
    loose = run_rtool("decontaminate", "--bench", bench, "--rule", "loose", "-i", rows)
    assert loose.returncode == 0 and jsonl(loose.stdout) == [{"prompt": "clean"}]


def test_empty_input_is_refused(tmp_path):
    empty, out = write_rows(tmp_path, []), tmp_path / "clean.jsonl"
    result = run_rtool("decontaminate", "--bench", "gsm8k", "-i", empty, "-o", out)
    assert result.returncode == 2 and not out.exists()
    assert last_error_line(result) == f"rtool: error: {empty}: no input rows (the input is empty)"


@pytest.mark.parametrize("bench", ["file", "gsm8k"])
def test_bench_split_where_no_bench_has_splits_is_refused(tmp_path, bench):
    name = str(bench_file(tmp_path, [{"problem": JANET}])) if bench == "file" else bench
    result = run_rtool("decontaminate", "--bench", name, "--bench-split", "test", input=json.dumps({"prompt": "x"}))
    assert result.returncode == 2 and result.stdout == b""
    assert last_error_line(result) == (f"rtool: error: {name}: --bench-split given, but no --bench is a dataset with "
                                       "splits (drop --bench-split: a file or a benchmark rtool ships is one split)")


# Issue 25 item 3: each drop's overlap and bench row, and --min-overlap for dropping only copies.

CARRIE = ("Carrie works for $8 an hour and 35 hours a week at her job. It’s been a month since she started working "
          "there. She has saved up all of her money because she wants to buy a bike for $400. How much money will "
          "she have left over after she buys her bike?")  # GSM8K train, a clean row sharing stock phrasing


def test_overlap_is_the_share_of_the_rows_ngrams_in_the_bench_row_sharing_most():
    index = index_of("a b c d e f g h z", "x a b c d e f g h y", "b c d e f g h i j k l m")
    # 13 words, 6 distinct 8-grams (a..h, b..i, c..j, d..k, e..l, f..m): bench rows 0 and 1 hold the first, row 2 the
    # other 5, so row 2 is named, though row 0 is met first
    hit = index.match("a b c d e f g h i j k l m")
    assert (hit.bench_id, hit.bench_text, hit.overlap, hit.ngram) == (2, "b c d e f g h i j k l m", 0.8333,
                                                                      "b c d e f g h i")
    copy = index.match("A B C D E F G H Z")
    assert (copy.bench_id, copy.overlap) == (0, 1.0)


def test_report_shows_phrasing_and_min_overlap_keeps_it(tmp_path, capfd):
    copy = "  " + read_records("gsm8k").__next__()["question"].lower()
    rows = write_rows(tmp_path, [{"id": "carrie", "question": CARRIE}, {"id": "copy", "question": copy}])
    report = tmp_path / "dropped.jsonl"
    code, out, _ = run_in_process(capfd, "decontaminate", "--bench", "gsm8k", "-i", rows, "--report", report)
    assert code in (0, None) and jsonl(out) == []
    carrie, copied = jsonl(report.read_text())
    # 53 words, 46 distinct 8-grams; GSM8K test's Sarah (line 881) shares "how much money will she have left over
    # after she buys" with it: 4 of them
    assert carrie["contamination"]["bench_id"] == 881 and carrie["contamination"]["overlap"] == round(4 / 46, 4)
    assert carrie["contamination"]["bench_text"].startswith("Sarah has a rope that is 20 meters long.")
    assert copied["contamination"]["overlap"] == 1.0 and copied["contamination"]["bench_text"] == JANET
    code, out, err = run_in_process(capfd, "decontaminate", "--bench", "gsm8k", "-i", rows, "--min-overlap", "0.5")
    assert code in (0, None) and [row["id"] for row in jsonl(out)] == ["carrie"]
    assert "2 rows, 1 kept, 1 dropped (gsm8k: 1;" in err
    assert "1 rows sharing an n-gram kept under --min-overlap 0.5" in err
