"""TRL's names in rtool: a TRL command line (underscored or dashed flags) and a TRL/open-r1 YAML recipe train as they
are; an unknown key names the nearest real one."""

import json

import pytest

from helpers import run_in_process

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def traces(tiny_task_rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("trl-names") / "traces.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in tiny_task_rows[:8]), encoding="utf-8")
    return path


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sft_runs_a_trl_command_line(capfd, tmp_path, tiny_model_dir, traces):
    out = tmp_path / "run"
    code, stdout, stderr = run_in_process(
        capfd, "sft", "--model_name_or_path", tiny_model_dir, "--dataset-name", traces, "--output_dir", out,
        "--learning_rate", "0.003", "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--gradient-accumulation-steps", "2", "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
        "--logging_steps", "1", "--num_train_epochs", "1", "--max-length", "256")
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2]
    assert [row["learning_rate"] for row in rows] == pytest.approx([0.003, 0.003])  # constant, as asked


def test_a_trl_yaml_recipe_sets_the_flags(capfd, tmp_path, tiny_model_dir, traces):
    out = tmp_path / "yaml"
    config = tmp_path / "recipe.yaml"
    config.write_text(f"model_name_or_path: {tiny_model_dir}\ndataset_name: {traces}\noutput_dir: {out}\n"
                      "learning_rate: 0.004\nlr_scheduler_type: constant\nwarmup_ratio: 0\nmax_steps: 1\n"
                      "per_device_train_batch_size: 2\ngradient_accumulation_steps: 1\nlogging_steps: 1\n"
                      "max_length: 256\nuse_peft: true\nlora_target_modules: [q_proj, v_proj]\n")
    code, _, stderr = run_in_process(capfd, "sft", "--config", config)
    assert code == 0, stderr
    assert metrics(out)[0]["learning_rate"] == pytest.approx(0.004)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]


@pytest.mark.parametrize("text, message", [
    ("learning_rte: 0.1\n", ":1: unknown key 'learning_rte' (did you mean 'learning_rate'?"),
    ("lr: 0.1\nlearning_rate: 0.2\n", ":2: 'learning_rate' sets the same flag as 'lr'"),
])
def test_yaml_key_errors(capfd, tmp_path, text, message):
    config = tmp_path / "recipe.yaml"
    config.write_text(text)
    code, _, stderr = run_in_process(capfd, "sft", "--config", config)
    assert code == 2 and f"{config}{message}" in stderr


@pytest.mark.parametrize("command", ["sft", "redi", "grpo", "prm-train"])
def test_every_training_command_takes_trl_flag_names(capfd, command):
    code, stdout, _ = run_in_process(capfd, command, "--help")
    assert code == 0
    for name in ("--learning-rate", "--num-train-epochs", "--per-device-train-batch-size",
                 "--gradient-accumulation-steps", "--output-dir", "--model-name-or-path", "--dataset-name",
                 "--lr-scheduler-type", "--use-peft", "--resume-from-checkpoint", "--warmup-ratio", "--max-steps",
                 "--seed", "--logging-steps", "--save-steps"):
        assert name in stdout, name


def test_trl_conversational_rows_train_as_they_are_bare_prompts_get_the_system(tiny_model_dir, caplog):
    import logging

    from rtool.grade.fields import FieldMap
    from rtool.io.models import load_tokenizer
    from rtool.io.records import Row
    from rtool.train.data import SFTExamples

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    rows = [Row({"prompt": [{"role": "user", "content": "1+1?"}],
                 "completion": [{"role": "assistant", "content": "2"}]}, "t.jsonl", 1),
            Row({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
                "t.jsonl", 2),
            Row({"prompt": "3+3?", "completion": "6"}, "t.jsonl", 3)]
    examples = SFTExamples(FieldMap(), system="Think.", max_length=512)
    texts = [tokenizer.decode(example["input_ids"]) for example in examples(rows, tokenizer)]
    assert ["Think." in text for text in texts] == [False, False, True]
    with caplog.at_level(logging.INFO, logger="rtool"):
        examples.report()
    assert "2 rows train on the conversation they record (prompt_messages or a conversational prompt), 1 bare " \
           "prompts get the system prompt 'Think.'" in caplog.text
