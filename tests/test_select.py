"""rtool select: per prompt, at most K correct, distinct, short enough traces, the preferred first; bad input."""

import json
import os
import random

import pytest

from helpers import jsonl, run_in_process, run_rtool
from rtool.curate.selection import (SelectRules, SelectStats, _admitted, _Candidate, choose, jaccard, select_traces,
                                    shingles)
from rtool.errors import UserError
from rtool.grade.fields import FieldMap
from rtool.io.records import Row, json_line
from rtool.io.spill import SortedSpill

TEXT = "we add two and two to get four so the answer is four"  # 13 words: 11 shingles


@pytest.mark.parametrize("a, b, similarity", [
    (TEXT, TEXT, 1.0),
    (TEXT, TEXT.upper().replace(" ", "  "), 1.0),           # case and spacing do not count
    (TEXT, TEXT + " indeed", 11 / 12),                      # one shingle more
    (TEXT, "so " + TEXT, 11 / 12),
    (TEXT, TEXT.replace("two and two", "two plus two"), 8 / 14),  # 3 shingles changed on each side
    ("four", "four", 1.0), ("four", "five", 0.0), ("", "", 1.0),
    ("a b c d", "x y z w", 0.0)])
def test_jaccard_of_word_3gram_shingles(a, b, similarity):
    assert jaccard(shingles(a), shingles(b)) == pytest.approx(similarity)


def trace(id, completion, correct=True, tokens=None, nll=None, line=1, **extra):
    row = {"id": id, "problem": f"p{id}", "completion": completion, "correct": correct, **extra}
    if tokens is not None:
        row["completion_tokens"] = tokens
    if nll is not None:
        row["nll"] = nll
    return Row(row, "t.jsonl", line)


def chosen(rows, **rules):
    stats = SelectStats()
    out = list(select_traces(rows, SelectRules(**rules).check(), FieldMap(), stats=stats))
    return [(r["id"], r["completion"]) for r in out], stats


ROWS = [trace(1, "long " * 9 + "end", tokens=10, nll=0.5), trace(1, "short one", tokens=2, nll=0.9),
        trace(1, "wrong", correct=False, tokens=1, nll=0.1), trace(1, "mid mid mid", tokens=3, nll=0.2),
        trace(2, "ungraded", correct=None, tokens=1, nll=0.1), trace(2, "only", tokens=1, nll=0.3)]


@pytest.mark.parametrize("rules, expected", [
    (dict(prefer="shortest"), [(1, "short one"), (2, "only")]),
    (dict(prefer="longest"), [(1, "long " * 9 + "end"), (2, "only")]),
    (dict(prefer="nll"), [(1, "mid mid mid"), (2, "only")]),
    (dict(prefer="first"), [(1, "long " * 9 + "end"), (2, "only")]),
    (dict(prefer="shortest", per_prompt=2), [(1, "short one"), (1, "mid mid mid"), (2, "only")]),
    (dict(prefer="nll", include_incorrect=True), [(1, "wrong"), (2, "ungraded")]),
    (dict(prefer="longest", max_tokens=3), [(1, "mid mid mid"), (2, "only")]),
])
def test_rules(rules, expected):
    assert chosen(ROWS, **rules)[0] == expected


def test_counts():
    _, stats = chosen(ROWS, prefer="shortest", per_prompt=2, max_tokens=3)
    assert (stats.rows, stats.incorrect, stats.ungraded, stats.too_long, stats.over_limit, stats.kept,
            stats.prompts) == (6, 1, 1, 1, 0, 3, 2)


def test_duplicates_drop_the_less_preferred_copy():
    rows = [trace(1, TEXT, tokens=13, nll=0.9), trace(1, TEXT, tokens=13, nll=0.1),
            trace(1, TEXT + " indeed", tokens=14, nll=0.05), trace(1, "another way entirely", tokens=3, nll=0.5)]
    picked, stats = chosen(rows, prefer="nll", per_prompt=3)
    assert picked == [(1, TEXT + " indeed"), (1, "another way entirely")]  # 11/12 >= 0.9: both TEXTs are near
    assert (stats.duplicates, stats.near_duplicates) == (0, 2)
    picked, stats = chosen(rows, prefer="nll", per_prompt=3, dedup_threshold=1.0)  # exact duplicates only
    assert picked == [(1, TEXT + " indeed"), (1, TEXT), (1, "another way entirely")]
    assert picked[1] == (1, TEXT) and (stats.duplicates, stats.near_duplicates) == (1, 0)


def test_rows_without_id_are_grouped_by_the_prompt_as_distill_keys_them():
    rows = [Row({"question": q, "completion": c, "correct": True}, "t", i)
            for i, (q, c) in enumerate([("What is 2+2?", "four it is"), ("What is 3+3?", "six"),
                                        ("What is 2+2?", "4")])]
    stats = SelectStats()
    picked = select_traces(rows, SelectRules(prefer="shortest"), FieldMap(), stats=stats)
    assert [row["completion"] for row in picked] == ["4", "six"] and stats.prompts == 2


def test_random_is_fixed_by_the_seed_and_not_by_the_input_order():
    rows = [trace(1, f"answer number {i}") for i in range(8)]
    first, _ = chosen(rows, prefer="random", per_prompt=3, seed=1)
    again, _ = chosen(rows, prefer="random", per_prompt=3, seed=1)
    others = {tuple(chosen(rows, prefer="random", per_prompt=3, seed=s)[0]) for s in range(2, 8)}
    assert first == again and len(others | {tuple(first)}) > 1


def test_random_ranks_by_the_rows_not_their_order(tmp_path):
    # Two teachers' files with the same ids and sample numbers: `cat t1 t2` and `cat t2 t1` choose the same traces.
    teachers = {name: [{**trace(pid, f"{name} solves {pid} way {i}"), "sample": i, "teacher": name}
                       for pid in (1, 2) for i in range(4)] for name in ("t1", "t2")}
    paths = []
    for name, rows in teachers.items():
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text("".join(json.dumps(row) + "\n" for row in rows))
    outputs = [run_rtool("select", "--prefer", "random", "--per-prompt", "3", "--seed", "5", *files)
               for files in (paths, paths[::-1])]
    assert all(result.returncode == 0 for result in outputs), outputs[0].stderr.decode()
    rows = [jsonl(result.stdout) for result in outputs]
    assert len(rows[0]) == 6 and {row["teacher"] for row in rows[0]} == {"t1", "t2"}
    assert rows[0] == rows[1]
    everything = [row for name in ("t1", "t2") for row in teachers[name]]
    for seed in range(6):  # and in any row order (prompts come out in the order of their first row)
        shuffled = everything[:]
        random.Random(seed).shuffle(shuffled)
        picked = chosen([Row(row, "t", i) for i, row in enumerate(shuffled)], prefer="random", per_prompt=3, seed=5)
        by_prompt = sorted(picked[0], key=lambda pick: pick[0])  # sorted is stable: each prompt's ranking stays
        assert by_prompt == [(row["id"], row["completion"]) for row in rows[0]]


RULES = [dict(), dict(prefer="longest", per_prompt=3), dict(prefer="nll", per_prompt=2, dedup_threshold=1.0),
         dict(prefer="first", per_prompt=2, max_tokens=12), dict(prefer="random", per_prompt=2, seed=3),
         dict(prefer="shortest", per_prompt=4, include_incorrect=True), dict(prompts=frozenset({"2", "5", "7"})),
         dict(prefer="nll", include_incorrect=True, per_prompt=9, dedup_threshold=0.5)]


def in_memory(rows, rules):
    """Reference: every prompt's rows held in a dict until the input ends (the select of 750708e), then choose()."""
    stats, prompts = SelectStats(), {}
    for order, row in enumerate(rows):
        key = str(row["id"])
        if rules.prompts is not None and key not in rules.prompts:
            continue
        candidates = prompts.setdefault(key, [])
        if _admitted(row, rules, stats):
            candidates.append(_Candidate(row, row["completion"], order, json_line(row).rstrip("\n")))
    return [row for key, candidates in prompts.items() for row in choose(candidates, rules, key, stats)]


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("order", ["grouped", "shuffled"])
def test_spilled_rows_come_out_as_the_in_memory_select_wrote_them(rules, order):
    # 9 prompts x 6 traces of repeated and near-duplicate texts; run_chars=400 writes a run every ~3 rows.
    rng = random.Random(7)
    rows = [trace(pid, " ".join(rng.choice(["add", "two", "and", "three", "to", "get", "five"]) for _ in range(n)),
                  correct=rng.choice([True, True, False, None]), tokens=n, nll=rng.choice([0.5, 0.25, 1.0]), line=i)
            for i, (pid, n) in enumerate((pid, rng.randint(1, 16)) for pid in range(9) for _ in range(6))]
    if order == "shuffled":
        rng.shuffle(rows)
    rules = SelectRules(**rules).check()
    stats = SelectStats()
    spilled = list(select_traces(rows, rules, FieldMap(), stats=stats, run_chars=400))
    expected = in_memory(rows, rules)
    assert spilled == expected and stats.kept == len(expected) > 0
    assert list(select_traces(rows, rules, FieldMap())) == expected  # one run, never written


def test_sorted_spill_merges_runs_and_closes_its_files():
    rng = random.Random(0)
    items = [([rng.choice("abc\t\né"), rng.randint(0, 50), i], f"text {i} \t é") for i in range(500)]
    before = len(os.listdir("/proc/self/fd"))
    with SortedSpill(run_chars=200, fan_in=3) as spill:  # ~170 runs, merged 3 at a time
        for key, text in items:
            spill.add(key, text)
        assert len(os.listdir("/proc/self/fd")) > before
        assert list(spill.sorted()) == sorted(items)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_bad_row_after_spilled_runs_leaves_no_file_open():
    rows = [trace(pid, f"trace {i} of {pid}", line=i) for i, pid in enumerate([1, 2, 3] * 20)]
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(UserError, match="t.jsonl:60: field 'correct' must be true, false or null, got 'yes'"):
        list(select_traces(rows + [trace(4, "x", correct="yes", line=60)], SelectRules(), FieldMap(), run_chars=200))
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("rules, message", [
    (dict(per_prompt=0), "--per-prompt must be at least 1, got 0"),
    (dict(prefer="best"), "unknown --prefer 'best' (valid: shortest, longest, nll, first, random)"),
    (dict(dedup_threshold=0.0), "--dedup-threshold must be in (0, 1], got 0 (1.0 drops exact duplicates only)")])
def test_bad_rules(rules, message):
    with pytest.raises(UserError) as error:
        SelectRules(**rules).check()
    assert error.value.render() == message


def test_cli_from_stdin_and_a_file(tmp_path):
    more = tmp_path / "t2.jsonl"
    more.write_text(json.dumps(trace(1, "a second teacher's short way", tokens=6)) + "\n"
                    + json.dumps(trace(2, "no length known")) + "\n")
    stdin = "".join(json.dumps(row) + "\n" for row in ROWS)
    result = run_rtool("select", "--per-prompt", "2", "--max-tokens", "5", "-", more, input=stdin)
    assert result.returncode == 0, result.stderr.decode()
    assert [(r["id"], r["completion"]) for r in jsonl(result.stdout)] == [
        (1, "short one"), (1, "mid mid mid"), (2, "only"), (2, "no length known")]
    assert jsonl(result.stdout)[0] == dict(ROWS[1])  # rows pass through unchanged
    err = result.stderr.decode()
    assert "1 traces have no completion_tokens: kept whatever their length (--max-tokens 5)" in err
    assert ("select: 8 read, 1 incorrect dropped, 1 ungraded dropped, 2 too long, 0 duplicates dropped (0 exact, "
            "0 near), 0 past --per-prompt, 4 kept for 2 prompts") in err


@pytest.mark.parametrize("args, row, error", [
    (["--per-prompt", "0"], None, "rtool: error: --per-prompt must be at least 1, got 0"),
    ([], {"id": 1, "problem": "x", "completion": "c"},
     "rtool: error: {rows}:2: missing field 'correct' (grade the traces first (distill grades rows with a gold "
     "answer; rtool eval --records) or pass --include-incorrect)"),
    (["--prefer", "nll"], {"id": 1, "problem": "x", "completion": "c", "correct": True},
     "rtool: error: {rows}:2: missing field 'nll' (score the traces first: rtool nll --model S)"),
    (["--max-tokens", "9"], {"id": 1, "problem": "x", "completion": "c", "correct": True, "completion_tokens": "9",
                             "nll": 1.0},
     "rtool: error: {rows}:2: field 'completion_tokens' must be a whole number, got '9'"),
    # A string where a boolean belongs: "true" was dropped as incorrect (0 rows, exit 0).
    ([], {"id": 1, "problem": "x", "completion": "c", "correct": "true"},
     "rtool: error: {rows}:2: field 'correct' must be true, false or null, got 'true'"),
    # Python's json reads Infinity, and select wrote it back: not JSON.
    *[(args, {"id": 1, "problem": "x", "completion": "c", "correct": True, "nll": float("inf")},
       "rtool: error: {rows}:2: field 'nll' must be a finite number, got inf (JSON has no Infinity or NaN, and "
       "select writes rows as they are: rescore the trace or drop its nll)") for args in ([], ["--prefer", "nll"])]])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capfd, args, row, error):
    rows = tmp_path / "rows.jsonl"
    good = {"id": 1, "problem": "x", "completion": "c", "correct": True, "nll": 1.0, "completion_tokens": 1}
    rows.write_text(json.dumps(good) + "\n" + (json.dumps(row) + "\n" if row else ""))
    out_path = tmp_path / "out.jsonl"
    code, out, err = run_in_process(capfd, "select", "-i", rows, "-o", out_path, *args)
    assert code == 2 and err.strip().splitlines() == [error.format(rows=rows)]
    assert not out_path.exists()


def test_prompts_file_keeps_only_its_prompts_matched_by_id_or_prompt_text(tmp_path):
    # difficulty --keep writes prompt rows; a row without id is matched by its prompt text, as distill keys it.
    teachable = tmp_path / "teachable.jsonl"
    teachable.write_text(json.dumps({"id": 2, "problem": "p2", "pass_rate": 0.5}) + "\n"
                         + json.dumps({"problem": "no id here"}) + "\n")
    rows = [trace(1, "one"), trace(2, "two"), trace(3, "three"),
            {"problem": "no id here", "completion": "kept by its text", "correct": True}]
    stdin = "".join(json.dumps(row) + "\n" for row in rows)
    result = run_rtool("select", "--prompts", teachable, input=stdin)
    assert result.returncode == 0, result.stderr.decode()
    assert [r["completion"] for r in jsonl(result.stdout)] == ["two", "kept by its text"]
    assert f"select: --prompts {teachable} names 2 prompts; 2 rows of other prompts skipped" in result.stderr.decode()


def test_a_missing_prompts_file_is_refused_before_anything_is_written(tmp_path, capfd):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(trace(1, "one")) + "\n")
    out_path = tmp_path / "out.jsonl"
    code, out, err = run_in_process(capfd, "select", "-i", rows, "-o", out_path, "--prompts", tmp_path / "nope.jsonl")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope.jsonl" in err
    assert not out_path.exists()
