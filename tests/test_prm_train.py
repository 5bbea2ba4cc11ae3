"""rtool prm-train and rtool.train.prm: the separator loss against hand-computed values (hard and soft), AUC, the
held-out split, rows (prm-label's, TRL's stepwise) and their errors, the encoding prm-score reads, the length
policy; the command on the tiny Llama: a learnable toy labelling (a step with a marker word is wrong) whose
held-out AUC rises and whose model prm-score loads and scores toward the labels, soft labels, TRL rows, LoRA,
resume, a 2-process torchrun run, bad input."""

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

from helpers import jsonl, run_in_process, run_rtool
from rtool.errors import UserError
from rtool.grade.fields import FieldMap
from rtool.train.prm import (IGNORE, PRMExamples, StepCollator, auc, eval_metrics, fit_steps, held_out_ids,
                             row_steps, separator_loss, step_encoder)
from rtool.io.records import Row

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MARKER = "WRONG"  # the toy labelling: a step holding it is wrong, every other step right


def test_separator_loss_matches_hand_computed_values():
    # One row of 4 tokens; separators at 1 (target 1) and 3 (target 0.25). The other positions hold logits that
    # would dominate any loss they entered.
    logits = torch.tensor([[[50.0, -50.0], [0.0, math.log(3)], [-50.0, 50.0], [math.log(3), 0.0]]],
                          requires_grad=True)
    targets = torch.tensor([[IGNORE, 1.0, IGNORE, 0.25]])
    loss, p_correct, v = separator_loss(logits, targets)
    # position 1: p(correct) = 3/4, loss -ln(3/4); position 3: p = 1/4, loss -(0.75 ln(3/4) + 0.25 ln(1/4))
    first = -math.log(0.75)
    second = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)
    assert p_correct.tolist() == pytest.approx([0.75, 0.25])
    assert v.tolist() == [1.0, 0.25]
    loss.backward()
    assert logits.grad[0, 0].tolist() == [0.0, 0.0] and logits.grad[0, 2].tolist() == [0.0, 0.0]
    # d loss / d logit_1 at a separator: (p - v) / steps
    assert logits.grad[0, 1, 1].item() == pytest.approx((0.75 - 1.0) / 2, rel=1e-6)
    assert logits.grad[0, 3, 1].item() == pytest.approx((0.25 - 0.25) / 2, abs=1e-7)


def test_hard_targets_are_the_token_classification_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 2, generator=generator)
    labels = torch.full((3, 7), IGNORE)
    for row, positions in enumerate([[1, 4], [6], [0, 2, 5]]):
        labels[row, positions] = torch.randint(0, 2, (len(positions),), generator=generator)
    loss, _, _ = separator_loss(logits, labels.float())
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 2), labels.view(-1), ignore_index=IGNORE)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # The held-out loss is the same per-step loss, averaged over the steps.
    p = torch.softmax(logits, -1)[..., 1][labels != IGNORE].tolist()
    v = labels[labels != IGNORE].float().tolist()
    assert eval_metrics(p, v, [int(x) for x in v])["eval_loss"] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("scores, labels, expected", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
    ([0.9, 0.8, 0.1], [1, 1, 0], 1.0),
    ([0.1, 0.8, 0.9], [1, 0, 0], 0.0),
    ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # ties count as halves
    ([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1], 0.875),
    ([0.3, 0.6], [1, 1], None),  # one class: undefined
])
def test_auc(scores, labels, expected):
    assert auc(scores, labels) == (pytest.approx(expected) if expected is not None else None)


def test_eval_metrics_accuracy_and_auc():
    metrics = eval_metrics([0.9, 0.2, 0.6, 0.4], [1.0, 0.0, 0.0, 1.0], [1, 0, 0, 1])
    assert metrics["eval_accuracy"] == 0.5 and metrics["eval_auc"] == pytest.approx(0.75)
    assert "eval_auc" not in eval_metrics([0.9, 0.2], [1.0, 1.0], [1, 1])


def test_held_out_prompts_are_a_share_chosen_by_seed():
    ids = [f"q{i:03d}" for i in range(50)]
    held = held_out_ids(ids, 0.1, seed=0)
    assert len(held) == 5 and held <= set(ids)
    assert held_out_ids(list(reversed(ids)) * 3, 0.1, seed=0) == held  # order and repeats do not matter
    assert held_out_ids(ids, 0.1, seed=1) != held
    assert len(held_out_ids(ids[:3], 0.01, seed=0)) == 1 and len(held_out_ids(ids[:3], 0.9, seed=0)) == 2
    assert held_out_ids(ids, 0.0, seed=0) == set()
    with pytest.raises(UserError, match="needs at least 2 prompts"):
        held_out_ids(["only"], 0.1, seed=0)


def row(record, line=3):
    return Row(record, "steps.jsonl", line)


LABELLED = {"id": "a", "prompt": "Q", "completion": "s1\n\ns2", "steps": [" s1 ", "s2"], "step_labels": [1, 0],
            "step_values": [0.75, 0.0]}
TRL = {"prompt": "Q", "completions": ["s1", "s2", "s3"], "labels": [True, True, False]}


def test_rows_give_steps_targets_and_labels():
    assert row_steps(row(LABELLED), "hard") == (["s1", "s2"], [1.0, 0.0], [1, 0])
    assert row_steps(row(LABELLED), "soft") == (["s1", "s2"], [0.75, 0.0], [1, 0])
    values_only = {k: v for k, v in LABELLED.items() if k != "step_labels"}
    assert row_steps(row(values_only), "soft") == (["s1", "s2"], [0.75, 0.0], [1, 0])  # label: v >= 0.5
    assert row_steps(row(TRL), "hard") == (["s1", "s2", "s3"], [1.0, 1.0, 0.0], [1, 1, 0])


@pytest.mark.parametrize("change, labels, message", [
    ({"step_labels": None, "step_values": None}, "hard", "no field 'step_labels' for its 2 steps (--labels hard)"),
    ({"step_labels": None}, "hard", "no field 'step_labels' for its 2 steps (--labels hard) (it has step_values: "
                                    "pass --labels soft)"),
    ({"step_values": None}, "soft", "no field 'step_values' for its 2 steps (--labels soft) (it has step_labels: "
                                    "pass --labels hard)"),
    ({"step_labels": [1]}, "hard", "field 'step_labels' has 1 entries for 2 steps"),
    ({"step_labels": [1, 0.5]}, "hard", "step_labels[1] must be 0 or 1 (or false/true), got 0.5"),
    ({"step_labels": [1, 2]}, "hard", "step_labels[1] must be 0 or 1"),
    ({"step_labels": "10"}, "hard", "field 'step_labels' must be a list"),
    ({"step_values": [0.5, 1.5]}, "soft", "step_values[1] must be a number in [0, 1], got 1.5"),
    ({"step_values": [True, 0.0]}, "soft", "step_values[0] must be a number in [0, 1], got True"),
    ({"step_values": [0.5, 0.1, 0.2]}, "soft", "field 'step_values' has 3 entries for 2 steps"),
    ({"steps": []}, "hard", "field 'steps' must be a non-empty list of step texts, got an empty list"),
    ({"steps": ["s1", "  "]}, "hard", "steps[1] is empty"),
    ({"steps": ["s1", 7]}, "hard", "steps[1] must be a string, got int"),
    ({"steps": ["s1", "a<extra_0>b"]}, "hard", "steps[1] contains the separator token '<extra_0>'"),
    ({"steps": None}, "hard", "no steps (expected 'steps' with 'step_labels' or 'step_values'"),
])
def test_bad_rows_name_file_line_and_field(change, labels, message):
    record = {**LABELLED, **change}
    record = {k: v for k, v in record.items() if v is not None}
    with pytest.raises(UserError) as error:
        row_steps(row(record), labels)
    assert error.value.render().startswith("steps.jsonl:3: ") and message in error.value.render()


def test_trl_rows_have_no_soft_values():
    with pytest.raises(UserError, match="TRL stepwise rows have 0/1 'labels' only"):
        row_steps(row(TRL), "soft")
    with pytest.raises(UserError, match=r"steps.jsonl:3: labels\[2\] must be 0 or 1"):
        row_steps(row({**TRL, "labels": [True, True, "no"]}), "hard")


@pytest.mark.parametrize("length, truncation, expected", [
    (20, "drop", (list(range(20)), [4, 9, 19])),
    (19, "drop", None),
    (19, "keep-start", (list(range(10)), [4, 9])),  # step 3's text is cut: its separator goes, and the text after 9
    (10, "keep-start", (list(range(10)), [4, 9])),
    (9, "keep-start", (list(range(5)), [4])),
    (4, "keep-start", None),  # not even the first step fits
])
def test_fit_steps_keeps_whole_steps_only(length, truncation, expected):
    assert fit_steps(list(range(20)), [4, 9, 19], length, truncation) == expected


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from rtool.io.models import load_tokenizer

    return load_tokenizer(tiny_model_dir, padding_side="right")


def test_examples_encode_as_prm_score_does(tokenizer):
    from rtool.prm.score import split_steps

    tokenizer = __import__("copy").deepcopy(tokenizer)
    assert "<extra_0>" not in tokenizer.get_vocab()
    steps = ["1+2+0=3, write 3 carry 0", "Answer: \\boxed{3}."]
    records = [{"id": "a", "prompt_messages": [{"role": "user", "content": "What is 1 + 2?"}],
                "completion": "\n".join(steps), "steps": steps, "step_labels": [1, 0], "step_values": [0.8, 0.3]},
               {"problem": "What is 2 + 2?", "completion": "x\ny", "steps": ["x", "y"], "step_values": [0.4, 1]}]
    examples = PRMExamples(FieldMap(), system="Think.", labels="soft")
    first, second = list(examples([row(r, i) for i, r in enumerate(records, 1)], tokenizer))
    assert "<extra_0>" in tokenizer.get_vocab()  # added for the run

    scorer = step_encoder(tokenizer)
    scorer.step_sep = "\n"
    encoded = scorer.encode(records[0]["prompt_messages"], records[0]["completion"])  # what prm-score reads
    assert split_steps(records[0]["completion"], "\n") == steps
    assert (first["input_ids"], first["positions"]) == (encoded.ids, encoded.positions)
    assert all(first["input_ids"][p] == scorer._separator_id for p in first["positions"])
    assert (first["targets"], first["labels"], first["prompt_id"]) == (pytest.approx([0.8, 0.3]), [1, 0], "a")
    system = [{"role": "system", "content": "Think."}, {"role": "user", "content": "What is 2 + 2?"}]
    assert second["input_ids"] == scorer.encode(system, "x\ny").ids  # no prompt_messages: the system prompt too
    assert second["targets"] == [0.4, 1.0] and second["labels"] == [0, 1]
    assert second["prompt_id"].startswith("p")  # no id: a hash of the prompt

    cut = PRMExamples(FieldMap(), system=None, max_length=first["positions"][0] + 3, truncation="keep-start")
    [kept] = list(cut([row(records[0])], tokenizer))
    assert kept["input_ids"] == first["input_ids"][:first["positions"][0] + 1] and kept["labels"] == [1]
    assert (cut.counts.too_long, cut.counts.cut_steps) == (1, 1)

    batch = StepCollator(pad_token_id=0)([first, second])
    assert batch["input_ids"].shape == (2, max(len(first["input_ids"]), len(second["input_ids"])))
    assert batch["step_targets"][1, second["positions"]].tolist() == pytest.approx([0.4, 1.0])
    assert int((batch["step_targets"] != IGNORE).sum()) == 4 and batch["step_labels"][0, first["positions"]].tolist() \
        == [1, 0]
    assert batch["attention_mask"][1].sum() == len(second["input_ids"])


# The command on the tiny Llama.

def toy_rows(tasks, seed=0):
    """prm-label-style rows: each task's solution lines as steps, twice: clean (all right) and with MARKER after
    one or two random steps (those wrong). step_values: 0.9 for a right step, 0.1 for a wrong one."""
    rng = random.Random(seed)
    rows = []
    for task in tasks:
        lines = task["solution"].split("\n")
        for variant in range(2):
            steps = list(lines)
            wrong = set(rng.sample(range(len(steps)), rng.choice([1, 2]))) if variant else set()
            steps = [f"{s} {MARKER}" if i in wrong else s for i, s in enumerate(steps)]
            rows.append({"id": task["id"], "prompt_messages": [{"role": "user", "content": task["problem"]}],
                         "completion": "\n".join(steps), "sample": variant, "steps": steps,
                         "step_labels": [0 if i in wrong else 1 for i in range(len(steps))],
                         "step_values": [0.1 if i in wrong else 0.9 for i in range(len(steps))]})
    return rows


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def steps_file(tiny_task_rows, tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("prm-train") / "steps.jsonl", toy_rows(tiny_task_rows[:40]))


@pytest.fixture(scope="module")
def test_file(tiny_task_rows, tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("prm-test") / "test.jsonl", toy_rows(tiny_task_rows[40:], seed=1))


def run_train(capfd, *args):
    return run_in_process(capfd, "prm-train", *args)


def fast(steps=2):
    return ["--max-steps", str(steps), "--lr", "3e-3", "--warmup-ratio", "0", "--batch-size", "8",
            "--grad-accum", "1", "--logging-steps", "1", "--max-length", "256", "--save-steps", "0"]


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def weights(path, name="model.safetensors"):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / name))


def flat(text):
    return " ".join(text.split())


def prm_score(prm, data):
    result = run_rtool("prm-score", "--prm", prm, "-i", data, "--step-sep", "\\n", "--device", "cpu",
                       "--dtype", "float32", env=SINGLE_THREAD)
    assert result.returncode == 0, result.stderr.decode()
    return jsonl(result.stdout)


def separation(scored):
    """(AUC of the step scores against the step labels, mean score of right steps - mean of wrong ones)."""
    scores = [s for r in scored for s in r["step_scores"]]
    labels = [label for r in scored for label in r["step_labels"]]
    right = [s for s, label in zip(scores, labels) if label]
    wrong = [s for s, label in zip(scores, labels) if not label]
    return auc(scores, labels), sum(right) / len(right) - sum(wrong) / len(wrong)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, steps_file):
    """A hard-label run with a held-out tenth, evaluated every 10 steps: (out, exit code, stdout, stderr)."""
    out = tmp_path_factory.mktemp("runs") / "prm"
    result = run_rtool("prm-train", "--model", tiny_model_dir, "--data", steps_file, "--out", out,
                       *fast(40), "--logging-steps", "10", "--eval-split", "0.1", "--eval-steps", "10",
                       env=SINGLE_THREAD, timeout=600)
    return out, result.returncode, result.stdout.decode(), result.stderr.decode()


def test_training_learns_the_toy_labelling_and_prm_score_reads_it(trained, tiny_model_dir, test_file):
    out, code, stdout, stderr = trained
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    text = flat(stderr)
    assert "prm-train: 80 rows read: 80 traces, 320 steps" in text and "--labels hard" in text
    assert "held out 4 of 40 prompts (--eval-split 0.1, --seed 0): 8 traces, 32 steps" in text
    rows = metrics(out)
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in train_rows] == [1, 10, 20, 30, 40]
    assert [r["step"] for r in eval_rows] == [10, 20, 30, 40]
    for r in train_rows:
        assert math.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 and r["tokens_per_s"] > 0
    assert all({"eval_loss", "eval_accuracy", "eval_auc"} <= set(r) for r in eval_rows)
    assert eval_rows[-1]["eval_auc"] > 0.9 and eval_rows[-1]["eval_auc"] >= eval_rows[0]["eval_auc"]
    assert eval_rows[-1]["eval_loss"] < eval_rows[0]["eval_loss"]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert (out / "curves.png").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForTokenClassification"]
    assert config["id2label"] == {"0": "incorrect", "1": "correct"}

    # prm-score (format auto) reads it as qwen-prm and scores prompts it never saw toward their labels.
    scored = prm_score(out, test_file)
    assert {r["prm_scoring"]["format"] for r in scored} == {"qwen-prm"}
    assert all(len(r["step_scores"]) == len(r["steps"]) for r in scored)
    area, gap = separation(scored)
    assert area > 0.9 and gap > 0.2


def test_a_trained_prm_is_trained_further_not_reinitialised(trained):
    from rtool.train.prm import load_prm

    out = trained[0]
    model, tokenizer = load_prm(out, seed=123, dtype="float32", device="cpu", for_training=True)
    saved = weights(out)
    assert torch.equal(model.score.weight, saved["score.weight"])  # the head as trained, whatever the seed
    assert len(tokenizer) == model.get_input_embeddings().num_embeddings


def test_soft_labels_train_against_the_step_values(capfd, tmp_path, tiny_model_dir, steps_file):
    out = tmp_path / "soft"
    code, stdout, stderr = run_train(capfd, "--model", tiny_model_dir, "--data", steps_file, "--out", out,
                                     *fast(2), "--labels", "soft")
    assert code == 0, stderr
    assert stdout == f"{out}\n" and "--labels soft" in flat(stderr)
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    # With targets 0.9 / 0.1 the loss cannot go below their entropy (0.325 nats): it is not the hard loss.
    assert all(r["loss"] > 0.32 for r in rows)
    before, after = weights(tiny_model_dir), weights(out)
    assert any(not torch.equal(before[name], after[name]) for name in before if name in after)


def test_trl_stepwise_rows_train(capfd, tmp_path, tiny_model_dir, tiny_task_rows):
    rows = [{"prompt": task["problem"], "completions": task["solution"].split("\n"),
             "labels": [True] * (len(task["solution"].split("\n")) - 1) + [i % 2 == 0]}
            for i, task in enumerate(tiny_task_rows[:12])]
    data = write_rows(tmp_path / "trl.jsonl", rows)
    out = tmp_path / "trl"
    code, stdout, stderr = run_train(capfd, "--model", tiny_model_dir, "--data", data, "--out", out, *fast(2),
                                     "--no-system", "--eval-split", "0.25")
    assert code == 0, stderr
    text = flat(stderr)
    assert "12 rows read: 12 traces, 48 steps (87.5% labelled correct), 12 of them TRL stepwise rows" in text
    assert "held out 3 of 12 prompts" in text
    assert any("eval_accuracy" in r for r in metrics(out))


def test_lora_with_config_saves_adapter_and_a_merged_prm(capfd, tmp_path, tiny_model_dir, steps_file, test_file):
    out = tmp_path / "lora"
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndata: {steps_file}\nlabels: soft\n")
    code, stdout, stderr = run_train(capfd, "--config", config, "--out", out, *fast(2), "--lora", "--lora-r", "4",
                                     "--lora-targets", "q_proj,v_proj", "--merge-lora")
    assert code == 0, stderr
    assert stdout == f"{out}\n" and "--labels soft" in flat(stderr)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "TOKEN_CLS" and not (out / "model.safetensors").exists()
    merged = weights(out / "merged")
    before = weights(tiny_model_dir)
    changed = {name for name in before if name in merged and not torch.equal(before[name], merged[name])}
    assert changed and all("q_proj" in n or "v_proj" in n or "embed_tokens" in n for n in changed)
    assert {"score.weight", "score.bias"} <= set(merged)
    assert merged["model.embed_tokens.weight"].shape[0] == before["model.embed_tokens.weight"].shape[0] + 1
    scored = prm_score(out / "merged", test_file)
    assert all(len(r["step_scores"]) == len(r["steps"]) for r in scored)
    # The conversation settings prm-score reads by default, with the adapter and with the merged model.
    settings = json.loads((out / "rtool_prm.json").read_text())
    assert json.loads((out / "merged" / "rtool_prm.json").read_text()) == settings
    assert settings["format"] == "qwen-prm" and settings["step_sep"] is None  # the rows do not say how they split


def test_resume_logs_and_ends_as_an_uninterrupted_run(capfd, tmp_path, tiny_model_dir, steps_file):
    """Checkpoints every 3 steps, rows every 2: the resumed run's rows (each a whole logging window) and final
    weights are the uninterrupted run's."""
    out = tmp_path / "resumable"
    common = ["--model", tiny_model_dir, "--data", steps_file, "--out", out, "--eval-split", "0.1", *fast(4),
              "--save-steps", "3", "--logging-steps", "2", "--keep-checkpoints"]
    code, _, stderr = run_train(capfd, *common)
    assert code == 0, stderr
    uninterrupted, logged = weights(out), metrics(out)
    shutil.rmtree(out / "checkpoint-4")  # as if killed after step 4's log but before its checkpoint
    (out / "trainer_state.json").unlink()  # nor did it finish (the mark of a run that ended)
    code, stdout, stderr = run_train(capfd, *common, "--resume")
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    assert "resuming from" in stderr and "checkpoint-3" in stderr
    rows = metrics(out)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # step 3: a checkpoint ends a window
    assert [r["step"] for r in rows if "eval_loss" in r] == [4]  # the first run's end evaluation trimmed too
    clock = ("tokens_per_s", "num_tokens")
    assert [{k: v for k, v in r.items() if k not in clock} for r in rows] \
        == [{k: v for k, v in r.items() if k not in clock} for r in logged]
    resumed = weights(out)
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def test_two_process_torchrun_writes_one_model(tmp_path, tiny_model_dir, steps_file):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    # Two CPU processes, on a GPU machine too (CUDA hidden): this test means the CPU.
    env = {**os.environ, **SINGLE_THREAD, "RTOOL_DEBUG": "0", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rtool.cli", "prm-train",
                             "--model", str(tiny_model_dir), "--data", str(steps_file), "--out", str(out), *fast(),
                             "--eval-split", "0.1"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}\n"  # rank 0 only
    assert result.stderr.count("80 rows read") == 1  # one report
    assert len(list(out.rglob("model.safetensors"))) == 1
    rows = metrics(out)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # one writer
    [evaluation] = [r for r in rows if "eval_loss" in r]
    assert evaluation["step"] == 2 and 0 <= evaluation["eval_auc"] <= 1
    assert any(not torch.equal(a, weights(out)[n]) for n, a in weights(tiny_model_dir).items() if n in weights(out))


def test_bad_input_is_one_line_and_leaves_no_run(capfd, tmp_path, tiny_model_dir, steps_file):
    def fails(data, *flags):
        out = tmp_path / "never"
        code, stdout, stderr = run_train(capfd, "--model", tiny_model_dir, "--data", data, "--out", out, *flags)
        assert code == 2 and stdout == "" and not out.exists(), stderr
        errors = [line for line in stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and stderr.rstrip().endswith(errors[0])
        return errors[0]

    good = toy_rows([{"id": "a", "problem": "What is 1 + 1?", "solution": "1+1+0=2, write 2\nAnswer: \\boxed{2}."}])
    unlabelled = write_rows(tmp_path / "unlabelled.jsonl", good + [{**good[0], "step_labels": None}])
    assert fails(unlabelled) == (f"rtool: error: {unlabelled}:3: no field 'step_labels' for its 2 steps (--labels "
                                 "hard) (it has step_values: pass --labels soft)")
    short = write_rows(tmp_path / "short.jsonl", good + [{**good[0], "step_labels": [1]}])
    assert fails(short) == f"rtool: error: {short}:3: field 'step_labels' has 1 entries for 2 steps (one label per " \
                           "step, in order)"
    graded = write_rows(tmp_path / "graded.jsonl", [{**good[0], "step_labels": [1, 0.5]}])
    assert fails(graded).startswith(f"rtool: error: {graded}:1: step_labels[1] must be 0 or 1")
    soft = write_rows(tmp_path / "soft.jsonl", good + [{**good[1], "step_values": [0.2, -0.1]}])
    assert fails(soft, "--labels", "soft") == (f"rtool: error: {soft}:3: step_values[1] must be a number in [0, 1], "
                                               "got -0.1")
    assert "--eval-split must be in [0, 1), got 1.5" in fails(steps_file, "--eval-split", "1.5")
    assert "--eval-steps needs --eval-split" in fails(steps_file, "--eval-steps", "5")
    assert "unknown --labels 'fuzzy' (valid: hard, soft)" in fails(steps_file, "--labels", "fuzzy")
    one = write_rows(tmp_path / "one.jsonl", good)
    assert "--eval-split 0.1 needs at least 2 prompts" in fails(one, "--eval-split", "0.1", "--max-steps", "1")


def test_a_causal_lm_adapter_lends_its_merged_backbone(tmp_path, tiny_model_dir):
    """sft --lora's output as --model: the adapter merged into its base, under a fresh head, <extra_0> added."""
    import transformers
    from peft import LoraConfig, get_peft_model

    from rtool.train.prm import load_prm

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    adapted = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"]))
    torch.nn.init.normal_(adapted.base_model.model.model.layers[0].self_attn.q_proj.lora_B.default.weight)
    adapted.save_pretrained(tmp_path / "adapter")
    merged = adapted.merge_and_unload()
    model, tokenizer = load_prm(tmp_path / "adapter", dtype="float32", device="cpu", for_training=True)
    assert type(model).__name__ == "LlamaForTokenClassification" and model.config.num_labels == 2
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, merged.model.layers[0].self_attn.q_proj.weight)
    assert "<extra_0>" in tokenizer.get_vocab() and model.get_input_embeddings().num_embeddings == len(tokenizer)
