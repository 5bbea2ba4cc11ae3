"""examples/curate/make_data.py: the planted benchmark problems are what a scraped copy looks like (case, spacing and a
word at one end changed, so equal to their bench row neither as strings nor after normalisation) and `rtool
decontaminate` catches every one, through word 8-grams, and nothing else; the benchmark's stock words alone catch
nothing; the verbose and neutral solutions keep the gold algorithm and answer."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import jsonl, run_rtool

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES / "quickstart"))
sys.path.insert(0, str(EXAMPLES / "curate"))
import make_data  # noqa: E402 - examples/curate/make_data.py
from make_task import write_splits  # noqa: E402 - examples/quickstart/make_task.py


def open_r1_words(text: str) -> list[str]:
    """open-r1's scripts/decontaminate.py normalisation: lower-cased, split on whitespace, punctuation left on."""
    return text.lower().split()


def open_r1_8grams(text: str) -> set[tuple[str, ...]]:
    words = open_r1_words(text)
    return {tuple(words[i:i + 8]) for i in range(len(words) - 7)}


def make_planted(tmp_path, train, test, prompts=250, count=12):
    """make_data.py bench and planted, as run.sh calls them: (bench rows, prompts file, planted rows, pairs)."""
    bench, out = tmp_path / "bench.jsonl", {name: tmp_path / f"{name}.jsonl" for name in
                                            ("prompts", "planted", "ids", "traces", "kept")}
    out["traces"].write_text("".join(json.dumps({"id": row["id"], "completion": "x"}) + "\n"
                                     for row in map(json.loads, train.read_text().splitlines())))
    script = [sys.executable, str(EXAMPLES / "curate" / "make_data.py")]
    subprocess.run([*script, "bench", "--test", str(test), "--out", str(bench)], check=True, capture_output=True)
    subprocess.run([*script, "planted", "--train", str(train), "--bench", str(bench), "--traces", str(out["traces"]),
                    "--prompts", str(prompts), "--count", str(count), "--seed", "3", "--out", str(out["prompts"]),
                    "--planted-out", str(out["planted"]), "--map-out", str(out["ids"]),
                    "--traces-out", str(out["kept"])], check=True, capture_output=True)
    pairs = {row["id"]: row["test_id"] for row in map(json.loads, out["ids"].read_text().splitlines())}
    kept = {row["id"] for row in map(json.loads, out["kept"].read_text().splitlines())}
    train_ids = [row["id"] for row in map(json.loads, train.read_text().splitlines())]
    assert kept == set(train_ids[:prompts])  # the traces of the kept training prompts, no others
    bench_rows = {row["id"]: row for row in map(json.loads, bench.read_text().splitlines())}
    return bench_rows, bench, out["prompts"], list(map(json.loads, out["planted"].read_text().splitlines())), pairs


def test_every_planted_problem_is_caught_by_its_8grams_and_no_training_problem_is(tmp_path):
    train, test = write_splits(tmp_path / "data", train=300, test=60, seed=3)
    bench_rows, bench, prompts, planted_rows, pairs = make_planted(tmp_path, train, test)
    test_rows = {row["id"]: row for row in map(json.loads, test.read_text().splitlines())}
    assert len(pairs) == len(planted_rows) == 12 and len(prompts.read_text().splitlines()) == 262
    for row in planted_rows:
        original = bench_rows[pairs[row["id"]]]
        assert original["answer"] == test_rows[original["id"]]["answer"] == row["answer"]
        assert len(open_r1_words(original["problem"])) >= 8  # long enough for open-r1's 8-grams
        # Not a whole-row match under either normalisation: what catches it is the windows the edit left whole,
        # those of its own bench row and no other one.
        assert open_r1_words(row["problem"]) != open_r1_words(original["problem"])
        shared = {bench_id for bench_id, bench_row in bench_rows.items()
                  if open_r1_8grams(row["problem"]) & open_r1_8grams(bench_row["problem"])}
        assert shared == {original["id"]}, row["problem"]

    result = run_rtool("decontaminate", "--bench", bench, "--report", tmp_path / "dropped.jsonl", "-i", prompts)
    assert result.returncode == 0, result.stderr.decode()
    dropped = list(map(json.loads, (tmp_path / "dropped.jsonl").read_text().splitlines()))
    assert {row["id"]: row["contamination"]["bench_id"] for row in dropped} == pairs
    assert all(len(row["contamination"]["ngram"].split()) == 8 for row in dropped)
    assert len(jsonl(result.stdout)) == 250


def test_the_benchmark_wording_alone_catches_nothing(tmp_path):
    """Training problems written in the benchmark's words share its stock phrase, not an 8-gram: every window of a
    bench row holds both of its numbers."""
    train, test = write_splits(tmp_path / "data", train=300, test=60, seed=4)
    bench = tmp_path / "bench.jsonl"
    subprocess.run([sys.executable, str(EXAMPLES / "curate" / "make_data.py"), "bench", "--test", str(test), "--out",
                    str(bench)], check=True, capture_output=True)
    worded = tmp_path / "worded.jsonl"
    worded.write_text("".join(json.dumps(row) + "\n" for row in make_data.bench_rows(
        list(map(json.loads, train.read_text().splitlines())))))
    result = run_rtool("decontaminate", "--bench", bench, "-i", worded)
    assert result.returncode == 0, result.stderr.decode()
    assert len(jsonl(result.stdout)) == 300


def test_verbose_and_neutral_solutions_keep_the_algorithm_and_the_answer():
    gold = "6+0+0=6, write 6 carry 0\n7+3+0=10, write 0 carry 1\n8+5+1=14, write 14\nAnswer: \\boxed{1406}."
    verbose = make_data.verbose_solution("What is 876 + 530?", gold)
    lines = verbose.splitlines()
    assert lines[1:4] == gold.splitlines()[:3] and lines[-1] == gold.splitlines()[-1]
    assert lines[0].startswith("We need 876 + 530.") and lines[-2] == "Let me check: 876 + 530 = 1406."
    assert 2 * len(gold) < len(verbose) < 3 * len(gold)
    # Neither teacher's notation: the same columns and answer line, in words.
    assert make_data.neutral_solution(gold).splitlines() == [
        "6 plus 0 plus 0 is 6; put 6, carry 0", "7 plus 3 plus 0 is 10; put 0, carry 1",
        "8 plus 5 plus 1 is 14; put 14", "Answer: \\boxed{1406}."]
