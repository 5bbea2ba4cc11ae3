"""rtool export: distill and prm-label rows in TRL's formats, read by TRL's own trainers (SFTTrainer trains a step,
DPOTrainer tokenizes the pairs) and by prm-train's reader of TRL's stepwise supervision; bad input."""

import json
from pathlib import Path

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
    # A string is not a grade: "no" is truthy, so it was exported as a positive.
    ("trl-sft", {"prompt": "x", "completion": "y", "correct": "no"},
     "in.jsonl:1: field 'correct' must be true, false or null, got 'no'"),
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


# What a reasoning teacher wrote: the reasoning in a <think> block, then the answer.
REASONED = [distilled("p1", "What is 2+3?", "<think>\nI add 2 and 3 and get 5.\n</think>\n\n\\boxed{5}", True, 0),
            distilled("p1", "What is 2+3?", "<think>\nI add 2 and 3 and get 6.\n</think>\n\n\\boxed{6}", False, 1)]


def reasoning_student(kind: str, out):
    """A tiny student with DeepSeek-R1-Distill's or QwQ's chat template (faithful copies: tests/test_chat_templates.py)
    and their special tokens; R1-Distill's tokenizer adds its bos itself, as the real one does."""
    from tokenizers.processors import TemplateProcessing

    from rtool.tiny import char_tokenizer, save_tiny, tiny_llama
    from test_chat_templates import QWQ_TEMPLATE, R1_TEMPLATE, R1_TOKENS

    text = "".join(row["prompt"] + row["completion"] + SYSTEM for row in REASONED) + "<>/think\n "
    tokenizer = char_tokenizer([text], extra_tokens=["<think>", "</think>"] + (R1_TOKENS if kind == "r1" else []))
    if kind == "r1":
        tokenizer.bos_token, tokenizer.eos_token = R1_TOKENS[0], R1_TOKENS[3]
        bos = tokenizer.convert_tokens_to_ids(R1_TOKENS[0])
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
            single=f"{R1_TOKENS[0]} $A", pair=f"{R1_TOKENS[0]} $A $B", special_tokens=[(R1_TOKENS[0], bos)])
    tokenizer.chat_template = {"r1": R1_TEMPLATE, "qwq": QWQ_TEMPLATE}[kind]
    return save_tiny(tiny_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=4, seed=0), tokenizer, out)


@pytest.mark.parametrize("kind, eos", [("r1", "<｜end▁of▁sentence｜>"), ("qwq", "<|im_end|>")])
def test_a_student_whose_template_drops_the_reasoning_gets_text_rows_trl_trains_whole(capfd, tmp_path, kind, eos,
                                                                                       one_torch_thread):
    """DeepSeek-R1-Distill's and QwQ's templates keep only the text after </think> of an assistant turn: in TRL's
    conversational format `trl sft` trained on `\\boxed{5}` and the end of turn alone. With --model, export writes
    text rows: TRL's SFTTrainer and DPOTrainer then train on the reasoning too, after exactly the prompt the student
    is given when asked (one bos), and the end of turn once."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from rtool.generate.core import render_prompts

    student = reasoning_student(kind, tmp_path / kind)
    tokenizer = AutoTokenizer.from_pretrained(student)
    assert (tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id) == (kind == "r1")  # as the real tokenizers
    rows, err = export(capfd, "--to", "trl-sft", "--model", student, rows=REASONED, tmp_path=tmp_path)
    assert "drops the reasoning from assistant turns" in " ".join(err.split())
    assert len(rows) == 1 and isinstance(rows[0]["prompt"], str) and isinstance(rows[0]["completion"], str)

    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, use_cpu=True, bf16=False, report_to="none",
                     per_device_train_batch_size=1, save_strategy="no")
    example = SFTTrainer(model=str(student), args=args, train_dataset=Dataset.from_list(rows)).train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    asked = render_prompts(tokenizer, [REASONED[0]["prompt_messages"]])[0]  # what the student is given (rtool's)
    assert ids[:len(asked)] == asked and all(label == -100 for label in labels[:len(asked)])
    trained = tokenizer.decode([label for label in labels if label != -100])
    assert trained == f"I add 2 and 3 and get 5.\n</think>\n\n\\boxed{{5}}{eos}"  # the prompt opened <think>

    pairs, _ = export(capfd, "--to", "trl-preference", "--model", student, rows=REASONED, tmp_path=tmp_path)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, use_cpu=True, bf16=False, report_to="none",
                     per_device_train_batch_size=1)
    pair = DPOTrainer(model=str(student), args=args, train_dataset=Dataset.from_list(pairs)).train_dataset[0]
    assert pair["prompt_ids"] == asked
    assert tokenizer.decode(pair["chosen_ids"]) == f"I add 2 and 3 and get 5.\n</think>\n\n\\boxed{{5}}{eos}"
    assert tokenizer.decode(pair["rejected_ids"]) == f"I add 2 and 3 and get 6.\n</think>\n\n\\boxed{{6}}{eos}"


def test_reasoning_rows_without_a_student_are_conversational_with_a_warning(capfd, tmp_path, tiny_model_dir):
    rows, err = export(capfd, "--to", "trl-sft", rows=REASONED, tmp_path=tmp_path)
    assert rows[0]["completion"] == [{"role": "assistant", "content": REASONED[0]["completion"]}]
    assert "1 rows hold <think> reasoning: a student whose chat template drops it" in " ".join(err.split())
    # A template that keeps the reasoning (the tiny ChatML one): conversational, and nothing to warn about.
    rows, err = export(capfd, "--to", "trl-sft", "--model", tiny_model_dir, rows=REASONED, tmp_path=tmp_path)
    assert rows[0]["completion"] == [{"role": "assistant", "content": REASONED[0]["completion"]}]
    assert "reasoning" not in err


def test_the_readme_pipeline_runs_trl_sft_itself_on_the_export(tmp_path):
    """README's "Coming from TRL", as written: `rtool export --to trl-sft --model S` into a folder, then TRL's own
    `trl sft` command on it (a step, on the CPU)."""
    import os
    import subprocess
    import sys

    from helpers import RTOOL

    student = reasoning_student("r1", tmp_path / "student")
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(row) + "\n" for row in REASONED))
    (tmp_path / "trl-data").mkdir()
    exported = subprocess.run([RTOOL, "export", "--to", "trl-sft", "--model", student, "-i", traces, "-o",
                               tmp_path / "trl-data" / "train.jsonl"], capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    trl = str(Path(sys.executable).with_name("trl"))
    trained = subprocess.run([trl, "sft", "--model_name_or_path", student, "--dataset_name", tmp_path / "trl-data",
                              "--output_dir", tmp_path / "runs" / "trl-sft", "--max_steps", "1", "--use_cpu",
                              "--report_to", "none", "--save_strategy", "no"],
                             capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (tmp_path / "runs" / "trl-sft" / "model.safetensors").is_file()
