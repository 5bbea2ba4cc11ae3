"""examples/curate/make_data.py: the planted held-out problems are what a scraped copy looks like (case and spacing
changed, so not equal as strings) and `rtool decontaminate` catches every one and nothing else; the verbose
solutions keep the gold algorithm and answer."""

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


def test_every_planted_problem_is_caught_and_no_training_problem_is(tmp_path):
    train, test = write_splits(tmp_path / "data", train=300, test=60, seed=3)
    prompts, planted, ids = tmp_path / "prompts.jsonl", tmp_path / "planted.jsonl", tmp_path / "ids.jsonl"
    subprocess.run([sys.executable, str(EXAMPLES / "curate" / "make_data.py"), "planted", "--train", str(train),
                    "--test", str(test), "--count", "12", "--seed", "3", "--out", str(prompts),
                    "--planted-out", str(planted), "--map-out", str(ids)], check=True, capture_output=True)
    test_rows = {row["id"]: row for row in map(json.loads, test.read_text().splitlines())}
    pairs = {row["id"]: row["test_id"] for row in map(json.loads, ids.read_text().splitlines())}
    planted_rows = list(map(json.loads, planted.read_text().splitlines()))
    assert len(pairs) == len(planted_rows) == 12
    for row in planted_rows:  # a copy, not the same string, with the held-out row's answer
        original = test_rows[pairs[row["id"]]]
        assert row["problem"] != original["problem"] and row["answer"] == original["answer"]
    assert len(prompts.read_text().splitlines()) == 312

    # The problems are 5 words ("What is 347 + 158?"): only --rule loose (short bench rows matched whole) checks them.
    result = run_rtool("decontaminate", "--bench", test, "--rule", "loose", "--report", tmp_path / "dropped.jsonl",
                       "-i", prompts)
    assert result.returncode == 0, result.stderr.decode()
    dropped = list(map(json.loads, (tmp_path / "dropped.jsonl").read_text().splitlines()))
    assert {row["id"]: row["contamination"]["bench_id"] for row in dropped} == pairs
    assert len(jsonl(result.stdout)) == 300


def test_verbose_solutions_keep_the_algorithm_and_the_answer():
    gold = "6+0+0=6, write 6 carry 0\n7+3+0=10, write 0 carry 1\n8+5+1=14, write 14\nAnswer: \\boxed{1406}."
    verbose = make_data.verbose_solution("What is 876 + 530?", gold)
    lines = verbose.splitlines()
    assert lines[1:4] == gold.splitlines()[:3] and lines[-1] == gold.splitlines()[-1]
    assert lines[0].startswith("We need 876 + 530.") and lines[-2] == "Let me check: 876 + 530 = 1406."
    assert 2 * len(gold) < len(verbose) < 3 * len(gold)
