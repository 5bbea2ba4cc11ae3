"""rtool bon: selection rules on hand-made candidate sets, the streaming reducer (any order, --sorted, --n lists),
eval's per-bon_n summary, the CLI piped into eval, and bad input."""

import json
import math
import random
import subprocess
import sys

import pytest

from helpers import jsonl, last_error_line, run_rtool
from rtool.prm.bon import BonStats, Candidate, best_of_n, candidate_answer, parse_ns, select
from rtool.errors import UserError
from rtool.grade.metrics import EvalTally
from rtool.io.records import Row


def cands(*items):
    """Candidates numbered 0, 1, ...; items are (answer, score) or answer."""
    out = []
    for i, item in enumerate(items):
        answer, score = item if isinstance(item, tuple) else (item, None)
        out.append(Candidate(i, answer, score, ref=i))
    return out


def outcome(candidates, method, ns=None):
    """[(n, chosen number, votes, weight)] per N."""
    return [(c.n, c.candidate.number, c.votes, None if c.weight is None else round(c.weight, 9))
            for c in select(candidates, method, ns)]


@pytest.mark.parametrize("candidates, method, expected", [
    # majority: most votes; the chosen row is the winner's first candidate
    (cands("3", "5", "5", "3", "5"), "majority", (1, 3, None)),
    # equivalent answers written differently are one answer: 1/2, 0.5, \frac{1}{2} beat 3, 3
    (cands("3", "1/2", "3", "0.5", "\\frac{1}{2}"), "majority", (1, 3, None)),
    # a tie without scores: the answer seen first
    (cands("5", "3", "3", "5"), "majority", (0, 2, None)),
    # a tie with scores: the answer seen first all the same (eval's maj@n rule: scores never break a majority tie,
    # though 3's 0.5 + 0.4 beats 5's 0.2 + 0.3); the weight is the winner's score sum
    (cands(("5", 0.2), ("3", 0.5), ("3", 0.4), ("5", 0.3)), "majority", (0, 2, 0.5)),
    # ... and no weight when some candidate has no score
    (cands(("5", 0.2), ("3", 0.5), ("3", 0.4), ("5", None)), "majority", (0, 2, None)),
    # a single variable's assignment votes as its value: x=2, y = 2 and t=2 are one answer (3 votes) against 5's 2
    (cands("5", "x=2", "5", "y = 2", "t=2"), "majority", (1, 3, None)),
    # unextractable answers never win, however many
    (cands(None, None, None, "7"), "majority", (3, 1, None)),
    # no answer at all: the first candidate, votes 0, weight null
    (cands((None, 0.9), (None, 0.8)), "majority", (0, 0, None)),
    (cands((None, 0.9), (None, 0.8)), "weighted", (0, 0, None)),
    (cands((None, 0.9), (None, 0.8)), "naive", (0, 0, None)),
    # naive: the highest score; votes and weight are its answer's
    (cands(("4", 0.1), ("5", 0.8), ("4", 0.7), ("4", 0.3)), "naive", (1, 1, 0.8)),
    # naive skips a higher-scoring candidate that states no answer
    (cands(("4", 0.1), (None, 0.99), ("5", 0.6)), "naive", (2, 1, 0.6)),
    # naive ties: the first by sample number
    (cands(("4", 0.5), ("5", 0.5)), "naive", (0, 1, 0.5)),
    # weighted: the largest sum (4: 0.1 + 0.7 + 0.3 = 1.1 > 5: 0.8); the chosen row is its best-scored candidate
    (cands(("4", 0.1), ("5", 0.8), ("4", 0.7), ("4", 0.3)), "weighted", (2, 3, 1.1)),
    # weighted groups equivalent answers: 0.5 and 1/2 (0.3 + 0.3) beat 2 (0.5)
    (cands(("0.5", 0.3), ("2", 0.5), ("1/2", 0.3)), "weighted", (0, 2, 0.6)),
    # weighted: equal sums go to more votes, then first seen. Equal, not equal in floats: 4's 0.1 + 0.2 is
    # 0.30000000000000004, 5's 0.15 + 0.15 (+ 0.0) is 0.3; rounding must not decide.
    (cands(("4", 0.1), ("5", 0.15), ("4", 0.2), ("5", 0.15), ("5", 0.0)), "weighted", (1, 3, 0.3)),
    (cands(("5", 0.15), ("4", 0.1), ("4", 0.2), ("5", 0.15)), "weighted", (0, 2, 0.3)),
    (cands(("4", 0.6), ("5", 0.6)), "weighted", (0, 1, 0.6)),
    # weighted: an unextractable candidate's score counts for nothing
    (cands(("4", 0.5), (None, 0.9), ("5", 0.4)), "weighted", (0, 1, 0.5)),
])
def test_selection_rules(candidates, method, expected):
    assert outcome(candidates, method) == [(len(candidates), *expected)]


def test_select_over_first_n():
    candidates = cands(("7", 0.9), ("8", 0.2), ("8", 0.3), ("7", 0.1), ("8", 0.4))
    # majority: N=1: 7; N=2: a tie, the answer seen first: 7; N=4: 2 votes each: 7 again; N=8 > 5 candidates: no
    # choice
    assert outcome(candidates, "majority", [8, 4, 2, 1]) == [(1, 0, 1, 0.9), (2, 0, 1, 0.9), (4, 0, 2, 1.0)]
    assert outcome(candidates, "weighted", [4]) == [(4, 0, 2, 1.0)]
    assert outcome(candidates, "naive", [1, 5]) == [(1, 0, 1, 0.9), (5, 0, 2, 1.0)]
    assert outcome(candidates, "majority") == [(5, 1, 3, 0.9)]  # all five: 8 has 3 votes


def test_multiple_choice_answers_are_option_letters():
    options = {"A": "Hypertension", "B": "Heart failure", "C": "1/2"}
    assert candidate_answer("The answer is (B).", options) == "B"
    assert candidate_answer("So the answer is Heart failure.", options) == "B"
    assert candidate_answer("\\boxed{0.5}", options) == "C"  # names option C by value
    assert candidate_answer("The answer is (E).", options) is None  # no such option: no answer
    assert candidate_answer("\\boxed{42}", options) is None
    assert candidate_answer("\\boxed{42}") == "42"


@pytest.mark.parametrize("text, expected", [("8", [8]), ("4,1, 2,4", [1, 2, 4]), (None, None), ("", None)])
def test_parse_ns(text, expected):
    assert parse_ns(text) == expected


@pytest.mark.parametrize("text", ["0", "1,0", "-1", "two", "1,,2"])
def test_parse_ns_refuses(text):
    with pytest.raises(UserError, match="--n takes whole numbers >= 1"):
        parse_ns(text)


def candidate_rows():
    """Three prompts with scored candidates, written in sample order and grouped by id.
    q1 (gold 1/2): answers 1/2, 3, 0.5, 3, \\frac{1}{2}, none; q2 (gold 7): 8, 7, 8, 7 with scores favouring 7;
    q3 multiple choice (gold B): (A), Heart failure (B), (B), (A)."""
    rows = []
    q1 = [("\\boxed{1/2}", 0.6), ("\\boxed{3}", 0.9), ("The answer is 0.5.", 0.5), ("\\boxed{3}", 0.8),
          ("\\boxed{\\frac{1}{2}}", 0.4), ("I give up", 0.95)]
    q2 = [("\\boxed{8}", 0.3), ("\\boxed{7}", 0.9), ("\\boxed{8}", 0.2), ("\\boxed{7}", 0.7)]
    q3 = [("The answer is (A).", 0.5), ("The answer is Heart failure.", 0.6), ("(B)", 0.7), ("(A)", 0.1)]
    for i, (text, score) in enumerate(q1):
        rows.append({"id": "q1", "problem": "half?", "answer": "\\frac{1}{2}", "completion": text, "sample": i,
                     "score": score, "note": "é"})
    for i, (text, score) in enumerate(q2):
        rows.append({"id": "q2", "problem": "3 + 4?", "answer": "7", "completion": text, "sample": i,
                     "score": score})
    for i, (text, score) in enumerate(q3):
        rows.append({"id": "q3", "question": "Cause?", "options": {"A": "Hypertension", "B": "Heart failure"},
                     "answer": "B", "completion": text, "sample": i, "score": score})
    return rows


def as_rows(dicts):
    return [Row(d, "in.jsonl", i + 1) for i, d in enumerate(dicts)]


def picks(out):
    return sorted((r["id"], r["bon_n"], r["sample"], r["votes"], r["weight"]) for r in out)


# (id, bon_n, chosen sample, votes, weight) for --n 1,2,4 and all (6 for q1, 4 for q2 and q3)
EXPECTED = {
    # majority's ties (every N but q1's 6) go to the answer seen first, whatever the scores say
    "majority": [("q1", 1, 0, 1, 0.6), ("q1", 2, 0, 1, 0.6), ("q1", 4, 0, 2, 1.1), ("q1", 6, 0, 3, 1.5),
                 ("q2", 1, 0, 1, 0.3), ("q2", 2, 0, 1, 0.3), ("q2", 4, 0, 2, 0.5),
                 ("q3", 1, 0, 1, 0.5), ("q3", 2, 0, 1, 0.5), ("q3", 4, 0, 2, 0.6)],
    "naive": [("q1", 1, 0, 1, 0.6), ("q1", 2, 1, 1, 0.9), ("q1", 4, 1, 2, 1.7), ("q1", 6, 1, 2, 1.7),
              ("q2", 1, 0, 1, 0.3), ("q2", 2, 1, 1, 0.9), ("q2", 4, 1, 2, 1.6),
              ("q3", 1, 0, 1, 0.5), ("q3", 2, 1, 1, 0.6), ("q3", 4, 2, 2, 1.3)],
    "weighted": [("q1", 1, 0, 1, 0.6), ("q1", 2, 1, 1, 0.9), ("q1", 4, 1, 2, 1.7), ("q1", 6, 1, 2, 1.7),
                 ("q2", 1, 0, 1, 0.3), ("q2", 2, 1, 1, 0.9), ("q2", 4, 1, 2, 1.6),
                 ("q3", 1, 0, 1, 0.5), ("q3", 2, 1, 1, 0.6), ("q3", 4, 2, 2, 1.3)],
}


@pytest.mark.parametrize("method", ["majority", "naive", "weighted"])
def test_reducer_is_order_independent(method):
    rows = candidate_rows()
    wanted = sorted(EXPECTED[method])
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        for ns in ([1, 2, 4], None):
            out = list(best_of_n(as_rows(shuffled), method, ns))
            if ns:
                assert picks(out) == [p for p in wanted if p[1] in ns], (seed, ns)
            else:
                assert picks(out) == [p for p in wanted if p[1] in (6, 4) and not (p[0] == "q1" and p[1] == 4)]
    # grouped input, streamed prompt by prompt, gives the same rows
    assert picks(best_of_n(as_rows(rows), method, [1, 2, 4, 6], grouped=True)) == wanted


def test_output_row_is_the_input_row_plus_bon_keys():
    rows = candidate_rows()
    for grouped in (False, True):  # spooled to a temporary file, or held in memory
        out = list(best_of_n(as_rows(rows), "weighted", [4], grouped=grouped))
        assert out[0] == {**rows[1], "bon_method": "weighted", "bon_n": 4, "votes": 2, "weight": 1.7}
        assert out[0]["note"] == "é"


def test_prompts_are_written_as_soon_as_they_are_decided():
    consumed = []

    def rows():
        for row in as_rows(candidate_rows()):
            consumed.append(row["id"])
            yield row

    reducer = best_of_n(rows(), "majority", [2])  # any order: q1 is decided once its samples 0 and 1 are in
    assert (next(reducer)["id"], consumed) == ("q1", ["q1", "q1"])
    grouped = best_of_n(rows(), "majority", grouped=True)  # --sorted: q1 is decided when q2 starts
    consumed.clear()
    assert (next(grouped)["id"], consumed) == ("q1", ["q1"] * 6 + ["q2"])


def test_rows_without_sample_or_id():
    # no `sample`: first N by order of appearance; no `id`: the id distill derives from the prompt text
    rows = [{"problem": "p", "answer": "2", "completion": f"\\boxed{{{a}}}"} for a in (3, 2, 2, 3, 3)]
    out = list(best_of_n(as_rows(rows), "majority", [1, 3]))
    assert [(r["bon_n"], r["completion"], r["votes"]) for r in out] == [(1, "\\boxed{3}", 1), (3, "\\boxed{2}", 2)]
    assert out[0].get("id") is None  # the row is written as it came


def test_short_prompts_and_skipped_candidates_are_counted():
    stats = BonStats()
    out = list(best_of_n(as_rows(candidate_rows()), "majority", [4, 5], stats=stats))
    assert sorted((r["id"], r["bon_n"]) for r in out) == [("q1", 4), ("q1", 5), ("q2", 4), ("q3", 4)]
    assert (stats.candidates, stats.prompts, stats.rows, stats.skipped, stats.short) == (14, 3, 4, 1, {5: 2})


def test_eval_tally_per_bon_n():
    tally = EvalTally()
    for bon_n, verdicts in ((1, [True, False, None, False]), (4, [True, True, None, False])):
        for i, correct in enumerate(verdicts):
            tally.add(f"p{i}", "x", correct, 10 * bon_n, "length" if i == 0 else "stop", sample=3,
                      bon_n=bon_n, bon_method="weighted")
    assert tally.summary() == {
        "prompts": 4, "samples": 8, "bon_method": "weighted",
        "bon": {"1": {"prompts": 4, "accuracy": round(1 / 3, 6), "ungradable": 1},
                "4": {"prompts": 4, "accuracy": round(2 / 3, 6), "ungradable": 1}},
        "mean_tokens": 25.0, "median_tokens": 25.0, "truncated_share": 0.25, "ungradable": 2}


def test_eval_tally_refuses_mixed_and_repeated_bon_rows():
    tally = EvalTally()
    tally.add("p", "1", True, None, None, bon_n=2, bon_method="majority")
    with pytest.raises(UserError, match=r"repeated id 'p' at bon_n=2"):
        tally.add("p", "1", True, None, None, sample=5, bon_n=2, bon_method="majority")
    with pytest.raises(UserError, match="two bon methods"):
        tally.add("q", "1", True, None, None, bon_n=2, bon_method="naive")
    with pytest.raises(UserError, match="rows with and without 'bon_n'"):
        tally.add("q", "1", True, None, None)
    plain = EvalTally()
    plain.add("p", "1", True, None, None)
    with pytest.raises(UserError, match="rows with and without 'bon_n'"):
        plain.add("p", "1", True, None, None, bon_n=1, bon_method="majority")
    with pytest.raises(UserError, match="'bon_n' must be a whole number"):
        EvalTally().add("p", "1", True, None, None, bon_n="4")


def lines(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


@pytest.mark.parametrize("method, curve", [
    # eval grades the chosen rows (see EXPECTED): N=1 only q1's first answer (1/2) is right; N=2 and 4 majority
    # keeps the first answers (ties), weighted picks q1's 3 (wrong), q2's 7 and q3's B (right); N=6, q1 alone:
    # majority picks 1/2 (3 votes), weighted 3 (0.9 + 0.8 > 1.5)
    ("majority", {"1": 1 / 3, "2": 1 / 3, "4": 1 / 3, "6": 1.0}),
    ("weighted", {"1": 1 / 3, "2": 2 / 3, "4": 2 / 3, "6": 0.0}),
])
def test_cli_piped_into_eval(tmp_path, method, curve):
    rows = candidate_rows()
    random.Random(1).shuffle(rows)
    source = tmp_path / "cands.jsonl"
    source.write_text(lines(rows), encoding="utf-8")
    bon = run_rtool("bon", "--method", method, "--n", "1,2,4,6", "-i", source)
    assert bon.returncode == 0, bon.stderr.decode()
    out = jsonl(bon.stdout)
    assert picks(out) == sorted(EXPECTED[method])
    logs = " ".join(bon.stderr.decode().split())  # rich wraps log lines
    assert "3 prompts" in logs and "2 prompts have fewer than 6 candidates" in logs
    result = run_rtool("eval", input=bon.stdout)
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert (summary["prompts"], summary["samples"], summary["bon_method"]) == (3, 10, method)
    assert {n: v["accuracy"] for n, v in summary["bon"].items()} == {n: round(a, 6) for n, a in curve.items()}
    assert {n: v["prompts"] for n, v in summary["bon"].items()} == {"1": 3, "2": 3, "4": 3, "6": 1}
    assert "pass@1" not in summary and "accuracy at bon_n=4" in result.stderr.decode()


def test_cli_sorted_out_file_and_real_pipe(tmp_path):
    source = tmp_path / "cands.jsonl"
    source.write_text(lines(candidate_rows()), encoding="utf-8")
    out = tmp_path / "best.jsonl"
    result = run_rtool("bon", "--sorted", "--method", "naive", "-i", source, "-o", out)
    assert result.returncode == 0 and result.stdout == b""
    assert picks(jsonl(out.read_text(encoding="utf-8"))) == [p for p in sorted(EXPECTED["naive"]) if p[1] in (6, 4)
                                                             and p[:2] != ("q1", 4)]
    # `rtool bon | rtool eval` as a shell runs it
    from helpers import RTOOL

    pipeline = subprocess.run(f"{RTOOL} bon --method naive -i {source} --n 1,4 | {RTOOL} eval", shell=True,
                              capture_output=True, timeout=120)
    assert pipeline.returncode == 0, pipeline.stderr.decode()
    assert json.loads(pipeline.stdout)["bon"] == {"1": {"prompts": 3, "accuracy": round(1 / 3, 6), "ungradable": 0},
                                                  "4": {"prompts": 3, "accuracy": round(2 / 3, 6), "ungradable": 0}}


def test_cli_help():
    result = run_rtool("bon", "--help")
    assert result.returncode == 0 and b"--score-field" in result.stdout
    help_text = " ".join(result.stdout.decode().split())  # typer wraps lines
    # How it writes: -o whole at the end (not "row by row", which its -o help once said), stdout as decided.
    assert "written row by row" not in help_text
    assert "-o FILE is written whole" in help_text and "as soon as it is decided" in help_text
    assert "a failed or killed run leaves no FILE, or the old one as it was" in help_text
    code = "import sys; import rtool.cli; print([m for m in ('torch', 'transformers') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


GOOD = {"id": "a", "problem": "p", "answer": "1", "completion": "\\boxed{1}", "sample": 0, "score": 0.5}


@pytest.mark.parametrize("args, rows, fragment", [
    ([], [GOOD, {"id": "a", "problem": "p", "sample": 1}], "<stdin>:2: no completion field"),
    ([], [{"completion": "\\boxed{1}", "sample": 0}], "<stdin>:1: missing field 'id', and no prompt to derive one"),
    (["--method", "weighted"], [GOOD, {**GOOD, "sample": 1, "score": "high"}],
     "<stdin>:2: field 'score' must be a finite number, got 'high'"),
    (["--method", "naive"], [GOOD, {k: v for k, v in GOOD.items() if k != "score"} | {"sample": 1}],
     "<stdin>:2: missing field 'score', needed by --method naive"),
    (["--method", "naive", "--score-field", "prm"], [GOOD], "<stdin>:1: missing field 'prm'"),
    (["--method", "weighted"], [{**GOOD, "score": -0.5}], "<stdin>:1: field 'score' is negative"),
    (["--method", "majority"], [{**GOOD, "score": float("nan")}], "<stdin>:1: field 'score' must be a finite"),
    ([], [GOOD, GOOD], "<stdin>:2: repeated sample 0 of id 'a'"),
    ([], [{**GOOD, "sample": "0"}], "<stdin>:1: field 'sample' must be a whole number"),
    (["--n", "1"], [GOOD, {**GOOD, "completion": "x"}], "<stdin>:2: repeated sample 0 of id 'a'"),
    (["--sorted"], [GOOD, {**GOOD, "id": "b"}, {**GOOD, "sample": 1}],
     "<stdin>:3: id 'a' appears again (its group ended before line 2)"),
    ([], [{**GOOD, "bon_n": 4}], "<stdin>:1: this row is already rtool bon's output"),
    (["--n", "0"], [GOOD], "--n takes whole numbers >= 1, got '0'"),
    (["--n", "1,x"], [GOOD], "--n takes whole numbers >= 1, got 'x'"),
    (["--method", "best"], [GOOD], "unknown --method 'best' (valid: majority, naive, weighted)"),
    ([], [], "<stdin>: no input rows"),
])
def test_bad_input(args, rows, fragment):
    result = run_rtool("bon", *args, input=lines(rows))
    assert result.returncode == 2, result.stderr.decode()
    assert last_error_line(result).startswith("rtool: error: " + fragment), last_error_line(result)


def test_error_stops_after_the_prompts_already_written():
    # --sorted writes prompt a when b starts; b's bad row stops the run, and stderr says the output is incomplete
    rows = [GOOD, {**GOOD, "sample": 1}, {**GOOD, "id": "b"}, {"id": "b", "problem": "p", "sample": 1}]
    result = run_rtool("bon", "--sorted", input=lines(rows))
    assert result.returncode == 2 and "<stdin>:4: no completion field" in last_error_line(result)
    assert [(r["id"], r["bon_n"]) for r in jsonl(result.stdout)] == [("a", 2)]
    assert "the output is incomplete" in " ".join(result.stderr.decode().split())  # rich wraps log lines


def test_eval_refuses_bon_rows_mixed_with_samples():
    rows = [{**GOOD, "bon_n": 1, "bon_method": "majority"}, {**GOOD, "id": "b"}]
    result = run_rtool("eval", input=lines(rows))
    assert result.returncode == 2
    assert last_error_line(result).startswith("rtool: error: <stdin>:2: rows with and without 'bon_n' in one input")


# One vote for bon and eval: `bon --method majority | eval` is right exactly when eval's maj@n is, in any line order.
# The pool holds answers whose equivalence is not transitive (x=2 = 2 = y=2, but x=2 != y=2) and spellings of one
# number (0.5, \frac{1}{2}).
POOL = ["x=2", "2", "y=2", "5", "\\frac{1}{2}", "0.5", "3"]


def random_candidate_set(rng, prompts=3, n=None, scored=False):
    """Candidate rows of a few prompts: random answers from POOL (or none), random distinct sample numbers; `n`
    candidates per prompt (default: 1 to 8); with `scored`, a random score each (as prm-score writes them)."""
    rows = []
    for p in range(prompts):
        gold = rng.choice(["2", "y=2", "5", "0.5"])
        for sample in rng.sample(range(20), n or rng.randint(1, 8)):
            answer = rng.choice(POOL + [None])
            completion = "I give up" if answer is None else f"So \\boxed{{{answer}}}."
            rows.append({"id": f"p{p}", "problem": "?", "answer": gold, "completion": completion, "sample": sample})
            if scored:
                rows[-1]["score"] = round(rng.random(), 3)
    return rows


def graded(rows):
    from rtool.grade.answers import grade

    return [{**row, **dict(zip(("pred", "correct"), grade(row["answer"], row["completion"])))} for row in rows]


def maj_at_n(rows):
    """eval's maj@n over candidate rows: share of prompts whose majority answer is right."""
    tally = EvalTally()
    for row in graded(rows):
        tally.add(row["id"], row["pred"], row["correct"], None, None, sample=row["sample"])
    summary = tally.summary()
    return next(value for key, value in summary.items() if key.startswith("maj@"))


def bon_then_eval(rows):
    """eval's accuracy over bon --method majority's chosen rows (all candidates of each prompt)."""
    tally = EvalTally()
    for row in graded(best_of_n(as_rows(rows), "majority")):
        tally.add(row["id"], row["pred"], row["correct"], None, None, bon_n=1, bon_method="majority")
    return tally.summary()["bon"]["1"]["accuracy"]


@pytest.mark.parametrize("scored", [False, True], ids=["unscored", "scored"])
def test_bon_majority_and_eval_maj_at_n_agree_in_any_order(scored):
    # Scored rows too: one tie rule (the smallest sample number) in both, where bon once broke ties by score.
    rng = random.Random(16)
    for trial in range(30):
        rows = random_candidate_set(rng, scored=scored)
        expected = maj_at_n(rows)
        for _ in range(4):
            rng.shuffle(rows)
            assert (maj_at_n(rows), bon_then_eval(rows)) == (expected, expected), (trial, rows)


def test_non_transitive_answers_form_one_group_whatever_the_order():
    # x=2,y=3 = 2,3 = y=2,x=3 (math-verify) though x=2,y=3 != y=2,x=3: one answer with 3 votes, against 5 with 2.
    answers = ["5", "5", "x=2,y=3", "y=2,x=3", "2,3"]
    for order in ([0, 1, 2, 3, 4], [2, 3, 4, 0, 1], [0, 2, 1, 3, 4], [4, 3, 2, 1, 0]):
        chosen = select([Candidate(i, answers[i]) for i in order], "majority")[0]
        assert (chosen.candidate.answer, chosen.votes) == ("x=2,y=3", 3), order
    # A single variable's assignment is its value (Qwen2.5-Math's rule): x=2, y=2, t = 2 are one answer, no 2 needed.
    answers = ["5", "5", "x=2", "y=2", "t = 2"]
    for order in ([0, 1, 2, 3, 4], [2, 3, 4, 0, 1], [4, 3, 2, 1, 0]):
        chosen = select([Candidate(i, answers[i]) for i in order], "majority")[0]
        assert (chosen.candidate.answer, chosen.votes) == ("x=2", 3), order


@pytest.mark.parametrize("scored", [False, True], ids=["unscored", "scored"])
def test_cli_bon_majority_piped_into_eval_equals_maj_at_n(tmp_path, scored):
    # The real pipe over one shuffled file of several random sets (a process start costs seconds).
    rng = random.Random(1)  # a set where the old rules (first answer of a group, line order; ties by score) disagreed
    rows = random_candidate_set(rng, prompts=8, n=6, scored=scored)
    rng.shuffle(rows)
    source = tmp_path / "cands.jsonl"
    source.write_text(lines(rows), encoding="utf-8")
    maj = json.loads(run_rtool("eval", "-i", source).stdout)["maj@6"]
    bon = run_rtool("bon", "--method", "majority", "-i", source)
    assert bon.returncode == 0, bon.stderr.decode()
    best = json.loads(run_rtool("eval", input=bon.stdout).stdout)
    assert best["bon"]["6"]["accuracy"] == maj == maj_at_n(rows)
    assert 0 < maj < 1  # a set where the vote matters both ways


# Scores of `rtool prm-score --agg prod`: the product of 700-800 step scores is 0.0 in floats; log_score ranks them.
PROD_SETTINGS = {"prm": "P", "format": "qwen-prm", "step_sep": "\n\n", "agg": "prod", "lam": 1.0, "orm": None,
                 "system": None}


def prod_row(sample, answer, steps, p, gold="7"):
    """A row as prm-score --agg prod writes it: `steps` step scores of `p`, their product and its log."""
    step_scores = [p] * steps
    log_score = math.fsum(math.log(s) for s in step_scores)
    return {"id": "q", "problem": "?", "answer": gold, "completion": f"...\\boxed{{{answer}}}", "sample": sample,
            "step_scores": step_scores, "score": math.exp(log_score), "log_score": log_score,
            "prm_scoring": PROD_SETTINGS}


def prod_rows():
    # sample 1 (answer 7, right) has the best product: 0.32 ** 700 against 0.3 ** 800, both 0.0 in floats
    return [prod_row(0, "3", 800, 0.3), prod_row(1, "7", 700, 0.32), prod_row(2, "3", 800, 0.3)]


@pytest.mark.parametrize("method, sample, votes, log_weight", [
    ("naive", 1, 1, 700 * math.log(0.32)),
    # the sum of products in log space: 3's two 0.3 ** 800 (log 800 log 0.3 + log 2) stay far below 7's 0.32 ** 700
    ("weighted", 1, 1, 700 * math.log(0.32)),
    ("majority", 0, 2, 800 * math.log(0.3) + math.log(2)),   # votes decide; the weight is reported in log space
])
def test_prod_scores_rank_by_their_log(method, sample, votes, log_weight):
    rows = prod_rows()
    assert all(row["score"] == 0.0 for row in rows)  # what a ranking by `score` would see: a three-way tie
    for variant in (rows, [{k: v for k, v in row.items() if k != "log_score"} for row in rows]):
        # rows of an rtool that wrote no log_score: the logs of their step_scores, summed
        stats = BonStats()
        [out] = best_of_n(as_rows(variant), method, stats=stats)
        assert (out["sample"], out["votes"], out["weight"]) == (sample, votes, 0.0)
        assert out["log_weight"] == pytest.approx(log_weight, abs=1e-6) and stats.log_scores


def test_prod_scores_a_zero_step_and_another_scale():
    rows = prod_rows()
    rows[1]["log_score"] = None  # a step scored exactly 0 (prm-score writes null: JSON has no -Infinity)
    [out] = best_of_n(as_rows(rows), "naive")  # 3's best, with its answer's votes and weight (two of 0.3 ** 800)
    assert (out["sample"], out["votes"], out["log_weight"]) == (0, 2, pytest.approx(800 * math.log(0.3) + math.log(2)))
    # --lam < 1 mixes in a trajectory score: no product alone, ranked by score as written
    mixed = [{**row, "prm_scoring": {**PROD_SETTINGS, "lam": 0.5}, "score": 0.1 * i} for i, row in enumerate(rows)]
    [out] = best_of_n(as_rows(mixed), "naive")
    assert out["sample"] == 2 and "log_weight" not in out
    # --agg prod rows beside rows scored otherwise: no common scale
    other = {**prod_row(3, "7", 2, 0.5), "prm_scoring": {**PROD_SETTINGS, "agg": "min"}, "score": 0.5}
    with pytest.raises(UserError) as caught:
        list(best_of_n(as_rows(prod_rows() + [other]), "naive"))
    assert caught.value.render().startswith(
        "in.jsonl:4: rows of prm-score --agg prod (ranked by log_score, e.g. in.jsonl:1) and rows scored otherwise "
        "in one input")
    with pytest.raises(UserError, match="in.jsonl:1: field 'log_score' must be a number <= 0"):
        list(best_of_n(as_rows([{**prod_rows()[0], "log_score": "low"}]), "naive"))


def test_cli_prod_scores_piped_into_eval():
    bon = run_rtool("bon", "--method", "naive", input=lines(prod_rows()))
    assert bon.returncode == 0, bon.stderr.decode()
    assert "ranked by their log_score" in " ".join(bon.stderr.decode().split())
    assert [row["sample"] for row in jsonl(bon.stdout)] == [1]
    summary = json.loads(run_rtool("eval", input=bon.stdout).stdout)
    assert summary["bon"]["3"]["accuracy"] == 1.0
