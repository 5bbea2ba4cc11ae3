"""System prompts the user asked for, and the conversation a model was trained in. A row's recorded
`prompt_messages` wins over --system/--no-system (rtool's rule); when the user passed one of them, every command
that reads rows (sft, redi, prm-train, prm-score, prm-label) says once for how many rows it did not apply.
prm-train saves its conversation settings (format, system prompt, step separator) with the model, and prm-score
reads the model with them unless its flags say otherwise."""

import json
import logging
from pathlib import Path

import pytest

from helpers import jsonl, run_in_process
from rtool.grade.fields import FieldMap
from rtool.io.records import Row

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECORDED = [{"role": "system", "content": "You are a careful tutor."}, {"role": "user", "content": "What is 2 + 3?"}]
NOT_APPLIED = "was not applied to"


def lines(rows):
    return "".join(json.dumps(row) + "\n" for row in rows)


def write(path, rows):
    path.write_text(lines(rows), encoding="utf-8")
    return path


def flat(text):
    return " ".join(text.split())


def test_sft_warns_once_with_the_count_of_rows_that_keep_their_conversation(capfd, tmp_path, tiny_model_dir):
    rows = [{"prompt_messages": RECORDED, "completion": f"2+3=\\boxed{{5}} ({i})"} for i in range(3)]
    rows += [{"problem": "What is 1 + 2?", "completion": "1+2=\\boxed{3}"}] * 2
    code, _, stderr = run_in_process(capfd, "sft", "--model", tiny_model_dir, "--data", write(tmp_path / "t.jsonl", rows),
                                     "--out", tmp_path / "run", "--no-system", "--max-steps", 1, "--batch-size", 5,
                                     "--max-length", 256, "--save-steps", 0)
    assert code == 0, stderr
    text = flat(stderr)
    assert "sft: --no-system was not applied to 3 rows: they keep the conversation they record" in text
    assert text.count(NOT_APPLIED) == 1


@pytest.mark.parametrize("explicit", [True, False])
def test_redi_counts_pairs_and_says_nothing_without_the_flags(tiny_model_dir, caplog, explicit):
    from rtool.io.models import load_tokenizer
    from rtool.train.redi import RediPairs

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    rows = [Row({"id": pid, "sample": index, "completion": f"{pid}{index}", "correct": index == 0,
                 **({"prompt_messages": RECORDED} if pid != "c" else {"problem": "What is 1 + 2?"})}, "t.jsonl", line)
            for line, (pid, index) in enumerate([(p, i) for p in "abc" for i in (0, 1)], 1)]
    examples = RediPairs(FieldMap(), system="Be brief.", system_explicit=explicit)
    assert len(list(examples(rows, tokenizer))) == 3
    with caplog.at_level(logging.INFO, logger="rtool"):
        examples.report()
    warned = "redi: --system 'Be brief.' was not applied to 2 pairs" in caplog.text
    assert warned == explicit and caplog.text.count(NOT_APPLIED) == int(explicit)


def test_prm_label_warns_with_the_count(capfd, tmp_path, tiny_model_dir, tiny_task_rows):
    traces = [{**task, "completion": f"Read it.\n\nSo \\boxed{{{task['answer']}}}"} for task in tiny_task_rows[:3]]
    traces[0]["prompt_messages"] = traces[1]["prompt_messages"] = [{"role": "user", "content": "Add the numbers."}]
    code, stdout, stderr = run_in_process(capfd, "prm-label", "--policy", tiny_model_dir, "--backend", "hf", "-k", 1,
                                          "--max-new-tokens", 2, "--temperature", 0, "--system", "Be brief.",
                                          "-i", write(tmp_path / "traces.jsonl", traces))
    assert code == 0, stderr
    assert len(jsonl(stdout)) == 3
    text = flat(stderr)
    assert "prm-label: --system 'Be brief.' was not applied to 2 rows" in text and text.count(NOT_APPLIED) == 1


# prm-train -> prm-score: the conversation a PRM was trained in goes with it.

SYSTEM = "Judge each step."


def step_rows(tasks):
    """prm-label-like rows split on single newlines (not prm-score's default blank line), without a recorded
    conversation: the system prompt given to the command applies to them."""
    rows = []
    for task in tasks:
        steps = task["solution"].split("\n")
        rows.append({"id": task["id"], "problem": task["problem"], "completion": "\n".join(steps), "steps": steps,
                     "step_labels": [1] * len(steps), "prm_labeling": {"step_sep": "\n", "system": SYSTEM}})
    return rows


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory, tiny_model_dir, tiny_task_rows):
    """A PRM trained with --system SYSTEM on rows split on "\\n" (2 steps on the tiny Llama)."""
    from rtool.cli import main

    root = tmp_path_factory.mktemp("prm-conv")
    data = write(root / "steps.jsonl", step_rows(tiny_task_rows[:8]))
    with pytest.raises(SystemExit) as exit_:
        main(["prm-train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(root / "prm"),
              "--system", SYSTEM, "--max-steps", "2", "--lr", "3e-3", "--batch-size", "8", "--grad-accum", "1",
              "--max-length", "256", "--save-steps", "2", "--keep-checkpoints"])
    assert exit_.value.code == 0
    return root / "prm"


def score(capfd, prm, data, *flags):
    code, stdout, stderr = run_in_process(capfd, "prm-score", "--prm", prm, "-i", data, "--device", "cpu",
                                          "--dtype", "float32", *flags)
    assert code == 0, stderr
    return [row["step_scores"] for row in jsonl(stdout)], flat(stderr)


def test_prm_score_reads_a_trained_prm_as_it_was_trained(capfd, tmp_path, prm_dir, tiny_task_rows):
    saved = {"format": "qwen-prm", "system": SYSTEM, "step_sep": "\n"}
    assert json.loads((prm_dir / "rtool_prm.json").read_text()) == saved
    assert json.loads((prm_dir / "checkpoint-2" / "rtool_prm.json").read_text()) == saved  # saved with the weights
    rows = [{"problem": r["problem"], "completion": r["completion"]} for r in step_rows(tiny_task_rows[40:44])]
    rows += [{"prompt_messages": RECORDED, "completion": "2+3=5\nSo \\boxed{5}"}]
    data = write(tmp_path / "candidates.jsonl", rows)

    as_saved, log = score(capfd, prm_dir, data)
    assert "prm-score: --format qwen-prm, --step-sep '\\n', --system 'Judge each step.' as" in log
    assert NOT_APPLIED not in log  # nothing was asked for explicitly
    explicit, log = score(capfd, prm_dir, data, "--format", "qwen-prm", "--step-sep", "\\n", "--system", SYSTEM)
    assert as_saved == explicit  # the same settings, so the same scores
    assert [len(s) for s in as_saved] == [len(r["completion"].split("\n")) for r in rows]
    assert "prm-score: --system 'Judge each step.' was not applied to 1 rows" in log and log.count(NOT_APPLIED) == 1
    assert "as it was trained" not in log and "was trained (its rtool_prm.json)" not in log

    # Flags given win: prm-score's own defaults (a blank line between steps, the reasoning system prompt).
    defaults, log = score(capfd, prm_dir, data, "--step-sep", "\\n\\n")
    assert [len(s) for s in defaults] == [1] * len(rows) and defaults != as_saved
    assert "prm-score: --format qwen-prm, --system 'Judge each step.' as" in log
    other_system, _ = score(capfd, prm_dir, data, "--no-system")
    assert other_system[:4] != as_saved[:4] and other_system[4] == as_saved[4]  # the recorded row is unchanged


def test_a_settings_file_that_is_not_prm_trains_is_one_clear_error(capfd, tmp_path, prm_dir):
    import shutil

    copy = tmp_path / "prm"
    shutil.copytree(prm_dir, copy)
    (copy / "rtool_prm.json").write_text('{"format": "prm", "system": 3}', encoding="utf-8")
    data = write(tmp_path / "c.jsonl", [{"problem": "1+1?", "completion": "2"}])
    code, _, stderr = run_in_process(capfd, "prm-score", "--prm", copy, "-i", data)
    assert code == 2 and "rtool_prm.json" in stderr and "not prm-train's settings" in stderr


@pytest.mark.parametrize("messages, recorded, system, expected", [
    ([{"role": "user", "content": "q"}], True, None, False),  # --no-system, and the conversation has none
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "q"}], True, None, True),
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "q"}], True, "S", False),  # what was asked
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "q"}], True, "T", True),
    ([{"role": "user", "content": "q"}], True, "T", True),
    ([{"role": "user", "content": "q"}], False, "T", False),  # a bare prompt: the flag was applied to it
])
def test_only_conversations_that_keep_another_system_turn_count(messages, recorded, system, expected):
    """The warning counts rows whose own conversation differs from what --system/--no-system asked: rows recorded
    under --no-system and trained with --no-system again (examples/prm) are not warned about."""
    from rtool.train.data import system_not_applied

    assert system_not_applied(messages, recorded, system) is expected


def test_sft_with_no_system_over_conversations_without_one_says_nothing(capfd, tmp_path, tiny_model_dir):
    rows = [{"prompt_messages": [{"role": "user", "content": "What is 2 + 3?"}], "completion": "\\boxed{5}"}] * 2
    code, _, stderr = run_in_process(capfd, "sft", "--model", tiny_model_dir, "--data", write(tmp_path / "t.jsonl", rows),
                                     "--out", tmp_path / "run", "--no-system", "--max-steps", 1, "--batch-size", 2,
                                     "--max-length", 256, "--save-steps", 0)
    assert code == 0, stderr
    assert NOT_APPLIED not in flat(stderr)
