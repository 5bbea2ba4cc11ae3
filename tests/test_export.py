"""rtool export: distill and prm-label rows in TRL's formats, read by TRL's own trainers (SFTTrainer trains a step,
DPOTrainer tokenizes the pairs) and by prm-train's reader of TRL's stepwise supervision; bad input."""

import json

import pytest

from helpers import jsonl, last_error_line, run_in_process, run_rtool

SYSTEM = "Think step by step."


def distilled(pid, question, completion, correct, sample):
    return {"id": pid, "prompt": question, "sample": sample, "completion": completion, "correct": correct,
            "prompt_messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]}


ROWS = [distilled("p1", "What is 2+3?", "2+3=5. \\boxed{5}", True, 0),
        distilled("p1", "What is 2+3?", "2+3=6. \\boxed{6}", False, 1),
        distilled("p2", "What is 4+4?", "4+4=8. \\boxed{8}", True, 0),
        distilled("p2", "What is 4+4?", "4+4=9. \\boxed{9}", False, 1)]
LABELLED = [{**ROWS[0], "steps": ["2+3=5.", "\\boxed{5}"], "step_labels": [1, 1]},
            {**ROWS[1], "steps": ["2+3=6.", "\\boxed{6}", "done"], "step_labels": [0, None, 0]},
            {**ROWS[3], "steps": ["4+4=9.", "\\boxed{9}"], "step_labels": [None, 0]}]
STDIN = "".join(json.dumps(row) + "\n" for row in ROWS)


def export(capfd, *args, rows=ROWS, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    code, out, err = run_in_process(capfd, "export", "-i", path, *args)
    assert code == 0, err
    return jsonl(out), err


def test_sft_rows_are_conversational_with_the_recorded_system_turn_correct_only(capfd, tmp_path):
    rows, err = export(capfd, "--to", "trl-sft", tmp_path=tmp_path)
    assert rows == [{"prompt": ROWS[0]["prompt_messages"], "completion": [{"role": "assistant",
                                                                          "content": ROWS[0]["completion"]}]},
                    {"prompt": ROWS[2]["prompt_messages"], "completion": [{"role": "assistant",
                                                                          "content": ROWS[2]["completion"]}]}]
    assert "2 rows of 4 read, skipped 2 with correct == false" in " ".join(err.split())
    rows, _ = export(capfd, "--to", "trl-sft", "--include-incorrect", tmp_path=tmp_path)
    assert len(rows) == 4


def test_preference_pairs_per_prompt_and_stepwise_labels(capfd, tmp_path):
    rows, _ = export(capfd, "--to", "trl-preference", tmp_path=tmp_path)
    assert rows == [{"prompt": ROWS[i]["prompt_messages"],
                     "chosen": [{"role": "assistant", "content": ROWS[i]["completion"]}],
                     "rejected": [{"role": "assistant", "content": ROWS[i + 1]["completion"]}]} for i in (0, 2)]
    rows, err = export(capfd, "--to", "trl-stepwise", rows=LABELLED, tmp_path=tmp_path)
    # A null label ends the row (its steps before it are kept); a row whose first label is null is left out.
    assert rows == [{"prompt": "What is 2+3?", "completions": ["2+3=5.", "\\boxed{5}"], "labels": [True, True]},
                    {"prompt": "What is 2+3?", "completions": ["2+3=6."], "labels": [False]}]
    assert "1 cut before their first null step label, 1 left out" in " ".join(err.split())


def test_trl_sft_trains_a_step_on_the_export(capfd, tmp_path, tiny_model_dir, one_torch_thread):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    rows, _ = export(capfd, "--to", "trl-sft", tmp_path=tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_dataset(str(tmp_path / "data"), split="train")  # what `trl sft --dataset_name DIR` loads
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=1, use_cpu=True, bf16=False, report_to="none",
                     per_device_train_batch_size=2, save_strategy="no", logging_steps=1)
    trainer = SFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=dataset)
    example = trainer.train_dataset[0]
    # TRL read it as prompt-completion: the loss covers the completion (the answer's text), not the prompt.
    trained = [label for label in example["labels"] if label != -100]
    assert 0 < len(trained) < len(example["input_ids"])
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss > 0


def test_dpo_trainer_tokenizes_the_preference_export(capfd, tmp_path, tiny_model_dir, one_torch_thread):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows, _ = export(capfd, "--to", "trl-preference", tmp_path=tmp_path)
    args = DPOConfig(output_dir=str(tmp_path / "out"), max_steps=1, use_cpu=True, bf16=False, report_to="none",
                     per_device_train_batch_size=2)
    trainer = DPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=Dataset.from_list(rows))
    columns = set(trainer.train_dataset.column_names)
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= columns or \
        {"prompt_input_ids", "chosen_input_ids", "rejected_input_ids"} <= columns, columns


def test_prm_train_reads_the_stepwise_export_as_trl_rows(capfd, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from rtool.io.records import Row
    from rtool.train.prm import PRMExamples

    rows, _ = export(capfd, "--to", "trl-stepwise", rows=LABELLED, tmp_path=tmp_path)
    examples = PRMExamples(max_length=4096)
    built = list(examples([Row(row) for row in rows], AutoTokenizer.from_pretrained(tiny_model_dir)))
    assert [example["labels"] for example in built] == [[1, 1], [0]]
    assert examples.counts.trl == 2


@pytest.mark.parametrize("to, row, error", [
    ("trl-sft", {"prompt": "x"}, "in.jsonl:1: no completion field"),
    ("trl-stepwise", {"prompt": "x", "completion": "y"}, "in.jsonl:1: no steps"),
    ("trl-stepwise", {"prompt": "x", "steps": ["a"], "step_labels": [1, 0]}, "in.jsonl:1: field 'step_labels' has 2"),
])
def test_a_row_missing_a_field_is_one_line_naming_file_and_line(tmp_path, to, row, error):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(row) + "\n")
    result = run_rtool("export", "--to", to, "-i", path)
    assert result.returncode == 2 and result.stdout == b""
    assert error in last_error_line(result) and "Traceback" not in result.stderr.decode()


def test_unknown_format_lists_the_valid_ones():
    result = run_rtool("export", "--to", "sft", input=STDIN)
    assert result.returncode == 2
    assert "valid: trl-sft, trl-preference, trl-stepwise" in last_error_line(result)
