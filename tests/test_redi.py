"""rtool redi: the REDI loss against hand-computed values, the collapse watch, the pairing rules (first/all/max, order
independence, nulls, TRL preference rows, counts), and the command on the tiny Llama: the loss identity in
metrics.jsonl, resume, LoRA, a 2-process torchrun run, bad input."""

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import run_in_process
from rtool.errors import UserError
from rtool.grade.fields import FieldMap
from rtool.io.records import Row
from rtool.train.redi import (PairCollator, PairCounts, RediPairs, build_pairs, collapse_marks, collapse_warning,
                        redi_loss, sequence_logp, token_logps)

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
NEGATIVE = "The answer is \\boxed{0}."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def test_redi_loss_matches_hand_computed_values():
    # Two pairs; masked positions hold values (even -inf) that must not count.
    chosen = t([[-9.0, -1.0, -2.0, float("-inf")], [-9.0, -0.5, -1.5, -1.0]])
    chosen_mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])
    rejected = t([[-9.0, -3.0, -9.0, -9.0], [-9.0, -2.0, -4.0, -9.0]])
    rejected_mask = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0]])
    loss, chosen_logp, rejected_logp = redi_loss(chosen, chosen_mask, rejected, rejected_mask, alpha=0.8)
    # chosen per sequence: (-1 - 2) / 2 = -1.5 and (-0.5 - 1.5 - 1) / 3 = -1.0 -> mean -1.25
    # rejected per sequence: -3 / 1 = -3 and (-2 - 4) / 2 = -3 -> mean -3
    # loss: mean(1.5 + 0.8 * -3, 1.0 + 0.8 * -3) = mean(-0.9, -1.4) = -1.15
    assert chosen_logp.item() == pytest.approx(-1.25)
    assert rejected_logp.item() == pytest.approx(-3.0)
    assert loss.item() == pytest.approx(-1.15)
    assert loss.item() == pytest.approx(-chosen_logp.item() + 0.8 * rejected_logp.item())


def test_redi_loss_gradients_weigh_each_token_by_its_sequence_length():
    chosen = t([[-1.0, -2.0, -3.0]]).requires_grad_()
    rejected = t([[-1.0, -2.0, -3.0]]).requires_grad_()
    loss, _, _ = redi_loss(chosen, torch.tensor([[1, 1, 0]]), rejected, torch.tensor([[0, 1, 1]]), alpha=0.5)
    loss.backward()
    # d/d chosen token: -1/|y_w| on its completion tokens; d/d rejected token: +alpha/|y_l|.
    assert chosen.grad.tolist() == [[-0.5, -0.5, 0.0]]
    assert rejected.grad.tolist() == [[0.0, 0.25, 0.25]]


def test_alpha_zero_is_the_mean_per_token_nll_of_the_chosen_sequences():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=generator)
    labels = torch.randint(0, 11, (2, 6), generator=generator)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]])
    logps = token_logps(logits, labels)
    assert torch.allclose(logps, torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1), atol=1e-6)
    other = torch.randn(2, 6, generator=generator)
    loss, _, _ = redi_loss(logps, mask, other, mask, alpha=0.0)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), reduction="none").view(2, 6)
    per_sequence = [nll[0, 2:].mean(), nll[1, 1:3].mean()]  # each sequence's own token mean, then over pairs
    assert loss.item() == pytest.approx(((per_sequence[0] + per_sequence[1]) / 2).item(), rel=1e-6)
    assert sequence_logp(logps, mask).tolist() == pytest.approx([-p.item() for p in per_sequence], rel=1e-6)


@pytest.mark.parametrize("chosen, rejected, fires", [
    ([-1.0], [-2.0], False),  # one point: nothing to compare
    ([-1.0, -1.8], [-2.0, -2.9], False),  # one step: not yet
    ([-1.0, -1.6, -1.8], [-2.0, -2.5, -2.9], True),  # two
    ([-1.0, -1.1, -1.0, -1.2], [-2.0, -2.5, -3.0, -3.5], False),  # healthy: negatives pushed down, positives kept
    ([-1.0, -0.9, -0.8], [-2.0, -3.0, -4.0], False),  # positives rising
    ([-1.0, -1.3, -1.7, -2.0], [-2.0, -2.6, -3.3, -4.0], True),  # both fall, positives by 0.67 over the last 3
    ([-1.0, -1.6, -1.7, -1.8], [-2.0, -1.9, -1.8, -1.7], False),  # positives fall but negatives rise: not REDI's
    ([-1.0, -1.1, -2.0, -1.1, -1.0, -1.0], [-2.0, -2.1, -3.0, -2.2, -2.3, -2.3], False),  # a dip, averaged away
    ([-1.0, -1.2, -1.6], [-2.0, -2.2, -2.6], False),  # 0.4 nats: not "well below"
])
def test_collapse_warning(chosen, rejected, fires):
    message = collapse_warning(chosen, rejected)
    assert (message is not None) == fires
    if fires:
        assert "chosen_logp fell from -1.000" in message and "--alpha" in message


def test_collapse_marks_point_at_the_first_step_it_fires():
    rows = [{"step": step, "loss": 0.1, "chosen_logp": c, "rejected_logp": r}
            for step, c, r in [(1, -1.0, -2.0), (2, -1.4, -2.6), (3, -1.8, -3.3), (4, -2.2, -4.0), (5, -2.6, -4.5)]]
    marks = collapse_marks([{"step": 0, "loss": 1.0}] + rows)
    assert [(m.step, m.metric) for m in marks] == [(3, "chosen_logp")]  # mean(-1.4, -1.8) = -1.6 < -1.5
    assert collapse_marks(rows[:2]) == []


def rows_of(records, path="t.jsonl"):
    return [Row(record, path, line) for line, record in enumerate(records, 1)]


def sample(pid, index, correct, text=None, **extra):
    row = {"id": pid, "problem": f"question {pid}", "completion": text or f"{pid}-{index}", "correct": correct}
    if index is not None:
        row["sample"] = index
    return {**row, **extra}


def pairs_of(records, **kwargs):
    counts = PairCounts()
    built = build_pairs(rows_of(records), FieldMap(), None, counts=counts, **kwargs)
    return [(p.prompt_id, p.chosen, p.rejected) for p in built], counts


GRADED = [sample("a", 3, True), sample("a", 0, False), sample("a", 1, True), sample("a", 2, False),
          sample("a", 4, None), sample("b", 1, False), sample("b", 0, True), sample("b", 2, True),
          sample("c", 0, True), sample("c", 1, True),  # no negative
          sample("d", 0, False),  # no positive
          {"id": "e", "problem": "question e", "completion": "x"},  # ungraded only
          sample("f", 0, None, correct_missing=True)]


def test_first_pairs_the_first_correct_with_the_first_incorrect_by_sample_index():
    pairs, counts = pairs_of(GRADED)
    assert pairs == [("a", "a-1", "a-0"), ("b", "b-0", "b-1")]  # sample order, not file order
    assert (counts.rows, counts.prompts, counts.graded_pairs) == (13, 6, 2)
    assert (counts.no_negative, counts.no_positive, counts.no_graded, counts.ungraded) == (1, 1, 2, 3)


def test_all_pairs_every_combination_earliest_samples_first_and_max_per_prompt():
    records = [sample("a", i, i % 2 == 0) for i in range(6)]  # correct: 0, 2, 4; incorrect: 1, 3, 5
    pairs, counts = pairs_of(records, pairs="all")
    assert [(c, r) for _, c, r in pairs] == [("a-0", "a-1"), ("a-0", "a-3"), ("a-2", "a-1"), ("a-2", "a-3"),
                                             ("a-0", "a-5"), ("a-2", "a-5"), ("a-4", "a-1"), ("a-4", "a-3"),
                                             ("a-4", "a-5")]
    assert counts.graded_pairs == 9
    capped, _ = pairs_of(records, pairs="all", max_pairs_per_prompt=3)
    assert capped == pairs[:3]
    one, _ = pairs_of(records, pairs="all", max_pairs_per_prompt=1)
    assert one == pairs_of(records)[0]  # K = 1 is --pairs first


def test_pairs_do_not_depend_on_the_input_order():
    records = [sample(pid, i, (i * 7 + len(pid)) % 3 != 0) for pid in ("p1", "p2", "p3", "p10") for i in range(5)]
    for mode in ({}, {"pairs": "all"}, {"pairs": "all", "max_pairs_per_prompt": 2}):
        expected, _ = pairs_of(records, **mode)
        assert expected
        for seed in range(3):
            shuffled = records[:]
            random.Random(seed).shuffle(shuffled)
            assert pairs_of(shuffled, **mode)[0] == expected


def test_rows_without_sample_pair_in_order_of_appearance_after_indexed_ones():
    records = [sample("a", None, True, "late"), sample("a", None, False, "neg"), sample("a", 5, True, "indexed")]
    assert pairs_of(records)[0] == [("a", "indexed", "neg")]
    assert pairs_of(records[:2])[0] == [("a", "late", "neg")]


def test_a_pair_trains_on_the_correct_rows_conversation():
    recorded = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    records = [sample("a", 0, True, prompt_messages=recorded), sample("a", 1, False)]
    counts = PairCounts()
    [pair] = build_pairs(rows_of(records), FieldMap(), "Think.", counts=counts)
    assert pair.messages == recorded and pair.recorded
    assert counts.prompt_differs == 1  # the negative row would have had "Think." + "question a"
    counts = PairCounts()
    [pair] = build_pairs(rows_of([sample("a", 0, True), sample("a", 1, False)]), FieldMap(), "Think.", counts=counts)
    assert pair.messages == [{"role": "system", "content": "Think."}, {"role": "user", "content": "question a"}]
    assert not pair.recorded and counts.prompt_differs == 0


def test_trl_preference_rows_are_pairs_already():
    conversation = [{"role": "user", "content": "Q2"}]
    records = [
        {"prompt": "Q1", "chosen": "good", "rejected": "bad"},
        {"prompt": conversation, "chosen": [{"role": "assistant", "content": "good2"}],
         "rejected": [{"role": "assistant", "content": "bad2"}]},
        {"chosen": conversation + [{"role": "assistant", "content": "good3"}],  # implicit prompt
         "rejected": conversation + [{"role": "assistant", "content": "bad3"}]},
        sample("g", 0, True), sample("g", 1, False),
    ]
    counts = PairCounts()
    built = build_pairs(rows_of(records), FieldMap(), None, counts=counts)
    assert [(p.messages, p.chosen, p.rejected) for p in built] == [
        ([{"role": "user", "content": "question g"}], "g-0", "g-1"),
        ([{"role": "user", "content": "Q1"}], "good", "bad"),
        (conversation, "good2", "bad2"),
        (conversation, "good3", "bad3"),
    ]
    assert (counts.preference, counts.graded_pairs, counts.prompts, counts.rows) == (3, 1, 1, 5)
    # With rtool's system prompt: TRL's conversational rows are trained as they are; bare prompts get it.
    built = build_pairs(rows_of(records), FieldMap(), "Think.")
    think = {"role": "system", "content": "Think."}
    assert [p.messages for p in built] == [[think, {"role": "user", "content": "question g"}],
                                           [think, {"role": "user", "content": "Q1"}], conversation, conversation]
    assert [p.recorded for p in built] == [False, False, True, True]


@pytest.mark.parametrize("record, where, message", [
    (sample("a", 0, "yes"), "t.jsonl:2", "field 'correct' must be true, false or null, got 'yes'"),
    (sample("a", "1", True), "t.jsonl:2", "field 'sample' must be an integer, got str '1'"),
    (sample("a", 1.5, True), "t.jsonl:2", "field 'sample' must be an integer"),
    (sample("a", 1, False, text=" \n"), "t.jsonl:2", "empty completion"),
    ({"id": "a", "problem": "q", "sample": 1, "correct": False}, "t.jsonl:2", "no completion field"),
    ({"id": "a", "problem": 7, "sample": 1, "correct": False, "completion": "c"}, "t.jsonl:2",
     "field 'problem' must be a string or a list of messages, got int"),
    ({"prompt": "Q", "chosen": "c", "rejected": ""}, "t.jsonl:2", "empty completion"),
    ({"prompt": "Q", "chosen": 3, "rejected": "r"}, "t.jsonl:2", "field 'chosen' must be a string or a list"),
    ({"prompt": "Q", "chosen": "c"}, "t.jsonl:2", "needs both 'chosen' and 'rejected', missing 'rejected'"),
    ({"chosen": "c", "rejected": "r"}, "t.jsonl:2", "no prompt field"),
])
def test_bad_rows_name_file_line_and_field(record, where, message):
    with pytest.raises(UserError) as error:
        build_pairs(rows_of([sample("a", 0, True), record]), FieldMap(), None)
    assert error.value.render().startswith(f"{where}: ") and message in error.value.render()


@pytest.mark.parametrize("kwargs, message", [
    ({"pairs": "best"}, "unknown --pairs 'best' (valid: first, all)"),
    ({"pairs": "first", "max_pairs_per_prompt": 2}, "--max-pairs-per-prompt needs --pairs all"),
    ({"pairs": "all", "max_pairs_per_prompt": 0}, "--max-pairs-per-prompt must be at least 1, got 0"),
])
def test_pairing_flags_are_checked(kwargs, message):
    with pytest.raises(UserError) as error:
        RediPairs(**kwargs)
    assert message in error.value.render()


@pytest.mark.parametrize("records, hint", [
    ([sample("a", 0, True), sample("b", 0, True), sample("b", 1, True)],
     "no pairs: 2 prompts have correct samples but none has an incorrect one"),
    ([sample("a", 0, False)], "no pairs: 1 prompts have incorrect samples but none has a correct one"),
    ([sample("a", 0, False), sample("b", 0, True)], "no pairs: 1 prompts have only correct samples and 1 only"),
    ([{"problem": "q", "completion": "c"}], "no pairs: no row is graded (correct: true/false)"),
    ([], "the input has no rows"),
])
def test_empty_hints_say_why_there_is_no_pair(records, hint):
    examples = RediPairs()
    assert list(examples(rows_of(records), tokenizer=None)) == []
    assert examples.empty_hint().startswith(hint)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from rtool.io.models import load_tokenizer

    return load_tokenizer(tiny_model_dir, padding_side="right")


def test_examples_tokenize_both_sides_and_drop_pairs_too_long(tokenizer):
    from rtool.train.data import tokenize_completion

    long = "word " * 80
    records = [sample("a", 0, True, "short right"), sample("a", 1, False, "short wrong"),
               sample("b", 0, True, "fine"), sample("b", 1, False, long)]
    examples = RediPairs(max_length=200)
    [example] = list(examples(rows_of(records), tokenizer))
    messages = [{"role": "user", "content": "question a"}]
    for side, text in (("chosen", "short right"), ("rejected", "short wrong")):
        ids, mask = tokenize_completion(tokenizer, messages, text)
        assert (example[f"{side}_input_ids"], example[f"{side}_completion_mask"]) == (ids, mask)
    assert (examples.counts.too_long, examples.counts.kept) == (1, 1)

    cut = RediPairs(max_length=200, truncation="keep-start")
    kept = list(cut(rows_of(records), tokenizer))
    assert len(kept) == 2 and len(kept[1]["rejected_input_ids"]) == 200 and cut.counts.too_long == 1

    batch = PairCollator(pad_token_id=0)(kept)
    assert batch["input_ids"].shape == (4, 200)  # 2 chosen, then 2 rejected, right-padded
    assert batch["input_ids"][2].tolist() == kept[0]["rejected_input_ids"] + [0] * (200 - len(
        kept[0]["rejected_input_ids"]))
    assert batch["attention_mask"][0].sum() == len(kept[0]["chosen_input_ids"])
    assert batch["completion_mask"][3].tolist() == kept[1]["rejected_completion_mask"]


# The command on the tiny Llama.

def run_redi(capfd, *args):
    return run_in_process(capfd, "redi", *args)


def fast(steps=2):
    return ["--max-steps", str(steps), "--lr", "1e-3", "--warmup-ratio", "0", "--batch-size", "2",
            "--grad-accum", "2", "--logging-steps", "1", "--max-length", "256", "--save-steps", "0"]


def flat(text):
    return " ".join(text.split())


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def without_clock(rows):
    """Metrics rows without what depends on the wall clock or counts from the process start (num_tokens)."""
    return [{key: value for key, value in row.items() if key not in ("tokens_per_s", "num_tokens")} for row in rows]


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def assert_loss_identity(rows, alpha):
    for row in rows:
        assert math.isfinite(row["loss"])
        assert row["loss"] == pytest.approx(-row["chosen_logp"] + alpha * row["rejected_logp"], rel=1e-4, abs=1e-5)
        assert row["margin"] == pytest.approx(row["chosen_logp"] - row["rejected_logp"], abs=1e-6)


@pytest.fixture(scope="module")
def traces(tiny_task_rows, tmp_path_factory):
    """Distill-style rows, shuffled: 16 prompts with samples 0 (correct), 1 (incorrect), 2 (correct); 2 prompts
    with only correct samples; 1 ungraded row."""
    rows = []
    for task in tiny_task_rows[:16]:
        for index in range(3):
            correct = index != 1
            rows.append({"id": task["id"], "problem": task["problem"], "sample": index, "correct": correct,
                         "completion": task["solution"] if correct else NEGATIVE})
    for task in tiny_task_rows[16:18]:
        rows.append({"id": task["id"], "problem": task["problem"], "sample": 0, "correct": True,
                     "completion": task["solution"]})
    rows.append({"id": "x", "problem": "What is 1 + 1?", "sample": 0, "correct": None, "completion": "2"})
    random.Random(0).shuffle(rows)
    return write_rows(tmp_path_factory.mktemp("redi") / "traces.jsonl", rows)


def test_training_logs_the_redi_terms_and_changes_weights(capfd, tmp_path, tiny_model_dir, traces):
    out = tmp_path / "run"
    code, stdout, stderr = run_redi(capfd, "--model", tiny_model_dir, "--data", traces, "--out", out, *fast(),
                                    "--alpha", "0.5")
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    text = flat(stderr)
    assert "redi: 51 rows read, 19 prompts: 16 pairs built (--pairs first)" in text
    assert "skipped prompts: 2 with no incorrect sample, 1 with no graded sample" in text
    assert "1 rows with correct null or missing unused" in text
    assert "training on 16 pairs" in text

    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2]
    assert_loss_identity(rows, alpha=0.5)  # the loss the trainer optimised is REDI's, with the --alpha given
    for row in rows:
        assert {"learning_rate", "tokens_per_s", "grad_norm", "num_tokens"} <= set(row)
        assert row["tokens_per_s"] > 0 and row["chosen_logp"] < 0 and row["rejected_logp"] < 0
    assert rows[1]["num_tokens"] > rows[0]["num_tokens"] > 0
    assert rows[0]["chosen_logp"] != rows[1]["chosen_logp"]
    assert "collapse" not in stderr
    before, after = weights(tiny_model_dir), weights(out)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert (out / "curves.png").exists()


def test_a_collapsing_run_warns_once(capfd, tmp_path, tiny_model_dir, traces):
    """alpha 1 at a far too high rate: both log-probs dive (measured: chosen -4.6, -5.6, -7.9, ... -10.5 and
    rejected -4.6, -5.1, -10.1, ... -24.6 over steps 1-6)."""
    out = tmp_path / "collapse"
    code, _, stderr = run_redi(capfd, "--model", tiny_model_dir, "--data", traces, "--out", out, *fast(6),
                               "--alpha", "1", "--lr", "0.3", "--grad-accum", "1", "--batch-size", "4")
    assert code == 0, stderr
    assert flat(stderr).count("the positives collapse with the negatives") == 1
    rows = metrics(out)
    assert rows[-1]["chosen_logp"] < rows[0]["chosen_logp"] - 0.5 and rows[-1]["rejected_logp"] < rows[0][
        "rejected_logp"]
    assert [mark.step for mark in collapse_marks(rows)] == [3]


def test_resume_ends_where_an_uninterrupted_run_ends(capfd, tmp_path, tiny_model_dir, traces):
    out = tmp_path / "resumable"
    common = ["--model", tiny_model_dir, "--data", traces, "--out", out, *fast(3), "--save-steps", "1",
              "--keep-checkpoints"]
    code, _, stderr = run_redi(capfd, *common)
    assert code == 0, stderr
    uninterrupted, logged = weights(out), metrics(out)
    shutil.rmtree(out / "checkpoint-3")  # as if killed after step 3's log but before its checkpoint
    (out / "trainer_state.json").unlink()  # nor did it finish (the mark of a run that ended)
    code, stdout, stderr = run_redi(capfd, *common, "--resume")
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    assert "resuming from" in stderr and "checkpoint-2" in stderr
    resumed = weights(out)
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)
    assert without_clock(metrics(out)) == without_clock(logged)  # step 3 logged once, as it was
    assert_loss_identity(metrics(out), alpha=0.8)

    code, _, stderr = run_redi(capfd, *common, "--resume", "--alpha", "0.5")
    assert code == 2 and "--alpha 0.8 -> 0.5" in flat(stderr)


def test_logged_loss_is_the_per_pair_mean_computed_by_hand_from_the_checkpoints(capfd, tmp_path, tiny_model_dir,
                                                                                 tiny_task_rows):
    """3 pairs, micro-batches of 2 and 1: each step's loss is the mean over its 3 pairs (the lone pair weighs no
    more than the others), as a fresh model loaded from the weights the step started from computes it by hand."""
    from transformers import AutoModelForCausalLM

    from rtool.io.models import load_tokenizer
    from rtool.generate.traces import choose_system_prompt

    rows = [{"id": task["id"], "problem": task["problem"], "sample": index, "correct": index == 0,
             "completion": task["solution"] if index == 0 else NEGATIVE}
            for task in tiny_task_rows[:3] for index in range(2)]
    data = write_rows(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "run"
    code, _, stderr = run_redi(capfd, "--model", tiny_model_dir, "--data", data, "--out", out, *fast(2),
                               "--save-steps", "1", "--alpha", "0.5", "--keep-checkpoints")
    assert code == 0, stderr
    logged = metrics(out)
    assert [row["step"] for row in logged] == [1, 2] and [row["epoch"] for row in logged] == [1, 2]

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    pairs = list(RediPairs(FieldMap(), system=choose_system_prompt(None, False))(
        [Row(row, "pairs.jsonl", n) for n, row in enumerate(rows, 1)], tokenizer))
    assert len(pairs) == 3
    for row, start in zip(logged, (tiny_model_dir, out / "checkpoint-1")):
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32).eval()

        def mean_logp(ids, mask):
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, :-1].double()
            picked = torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
            scored = torch.tensor(mask[1:], dtype=torch.bool)
            return picked[scored].mean().item()

        chosen = [mean_logp(p["chosen_input_ids"], p["chosen_completion_mask"]) for p in pairs]
        rejected = [mean_logp(p["rejected_input_ids"], p["rejected_completion_mask"]) for p in pairs]
        by_hand = sum(-c + 0.5 * r for c, r in zip(chosen, rejected)) / 3
        # The trainer runs bf16 autocast on a GPU; on the CPU it is float32 throughout.
        tolerance = 2e-2 if torch.cuda.is_available() else 1e-5
        assert row["loss"] == pytest.approx(by_hand, rel=tolerance)
        assert row["chosen_logp"] == pytest.approx(sum(chosen) / 3, rel=tolerance)
        assert row["rejected_logp"] == pytest.approx(sum(rejected) / 3, rel=tolerance)


def test_lora_with_config_saves_adapter_and_merged_model(capfd, tmp_path, tiny_model_dir, traces):
    out = tmp_path / "lora"
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndata: {traces}\nalpha: 0.0\npairs: all\nmax-pairs-per-prompt: 2\n")
    code, stdout, stderr = run_redi(capfd, "--config", config, "--out", out, *fast(), "--lora", "--lora-r", "4",
                                    "--lora-targets", "q_proj,v_proj", "--merge-lora")
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    assert "32 pairs built (--pairs all, at most 2 per prompt)" in flat(stderr)
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    rows = metrics(out)
    assert_loss_identity(rows, alpha=0.0)
    assert rows[0]["loss"] == pytest.approx(-rows[0]["chosen_logp"], rel=1e-5)  # alpha 0 from the YAML
    before, merged = weights(tiny_model_dir), weights(out / "merged")
    changed = {name for name in before if not torch.equal(before[name], merged[name])}
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)


def test_two_process_torchrun_writes_one_model(tmp_path, tiny_model_dir, traces):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    # Two CPU processes, on a GPU machine too (CUDA hidden): this test means the CPU.
    env = {**os.environ, **SINGLE_THREAD, "RTOOL_DEBUG": "0", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rtool.cli", "redi",
                             "--model", str(tiny_model_dir), "--data", str(traces), "--out", str(out), *fast()],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}\n"  # rank 0 only
    assert result.stderr.count("16 pairs built") == 1  # one report
    assert len(list(out.rglob("model.safetensors"))) == 1
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2]  # one writer
    assert_loss_identity(rows, alpha=0.8)  # both ranks' terms, averaged as the trainer averages the loss
    assert any(not torch.equal(a, b) for a, b in zip(weights(tiny_model_dir).values(), weights(out).values()))


def test_bad_input_is_one_line_and_leaves_no_run(capfd, tmp_path, tiny_model_dir, traces):
    def fails(data, *flags):
        out = tmp_path / "never"
        code, stdout, stderr = run_redi(capfd, "--model", tiny_model_dir, "--data", data, "--out", out, *flags)
        assert code == 2 and stdout == "" and not out.exists()
        errors = [line for line in stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and stderr.rstrip().endswith(errors[0])
        return errors[0]

    positives = write_rows(tmp_path / "pos.jsonl", [sample(f"p{i}", 0, True) for i in range(12)])
    assert fails(positives) == (f"rtool: error: {positives}: no training rows (no pairs: 12 prompts have correct "
                                "samples but none has an incorrect one)")
    ungraded = write_rows(tmp_path / "plain.jsonl", [{"problem": "q", "completion": "c"}])
    assert "no pairs: no row is graded (correct: true/false)" in fails(ungraded)
    assert fails(traces, "--alpha", "1.5") == ("rtool: error: --alpha must be in [0, 1], got 1.5 (the paper's "
                                               "recipe uses 0.8; 0 is SFT on the positives)")
    assert "unknown --pairs 'best' (valid: first, all)" in fails(traces, "--pairs", "best")
    empty = write_rows(tmp_path / "empty.jsonl", [sample("a", 0, True), sample("a", 1, False, text=" ")])
    assert fails(empty) == f"rtool: error: {empty}:2: empty completion (drop the row or fill it in)"
    typed = write_rows(tmp_path / "typed.jsonl", [sample("a", 0, True), sample("a", 1, "false")])
    assert fails(typed).startswith(f"rtool: error: {typed}:2: field 'correct' must be true, false or null")
