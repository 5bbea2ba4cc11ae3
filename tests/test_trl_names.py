"""TRL's names in rtool: a TRL command line (underscored or dashed flags) and a TRL/open-r1 YAML recipe train as they
are: open-r1's own recipes (tests/recipes, copied unchanged) run with a local model and data; TRL-only settings are
mapped to rtool's flags, passed to the TRL config, or ignored in one warning; an unknown name is an error that
suggests a name only when one is close."""

import json
import re
from pathlib import Path

import pytest

from helpers import run_in_process

RECIPES = Path(__file__).resolve().parent / "recipes"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def traces(tiny_task_rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("trl-names") / "traces.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in tiny_task_rows[:8]), encoding="utf-8")
    return path


# A ChatML template written otherwise than the tiny model's own, so a test can tell which one OUT keeps.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


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
                      "max_length: 256\nuse_peft: true\nlora_target_modules: [q_proj, v_proj]\n"
                      f"chat_template: {json.dumps(CHATML)}\n")  # open-r1 writes the template's text inline
    code, _, stderr = run_in_process(capfd, "sft", "--config", config)
    assert code == 0, stderr
    assert metrics(out)[0]["learning_rate"] == pytest.approx(0.004)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert (out / "chat_template.jinja").read_text() == CHATML


@pytest.mark.parametrize("text, message", [
    ("learning_rte: 0.1\n", ":1: unknown key 'learning_rte' (did you mean 'learning_rate'?"),
    ("lr: 0.1\nlearning_rate: 0.2\n", ":2: 'learning_rate' sets the same flag as 'lr'"),
    ("seed: 1\nper_device_eval_batchsize: 2\n", ":2: unknown key 'per_device_eval_batchsize' (did you mean "
                                                  "'per_device_eval_batch_size'? valid: "),
    ("torch_dtype: bfloat16\ndtype: float32\n", ":2: 'dtype' sets the same flag as 'torch_dtype'"),
    ("lr_scheduler_kwargs: 0.1\n", ":1: bad value for 'lr_scheduler_kwargs': expected a mapping, got float"),
])
def test_yaml_key_errors(capfd, tmp_path, text, message):
    config = tmp_path / "recipe.yaml"
    config.write_text(text)
    code, _, stderr = run_in_process(capfd, "sft", "--config", config)
    assert code == 2 and f"{config}{message}" in stderr, stderr


@pytest.mark.parametrize("key", ["input_dir", "frobnicate", "model_dir"])
def test_a_key_no_library_knows_is_an_error_that_suggests_no_unrelated_name(capfd, tmp_path, key):
    """`overwrite_output_dir` once got "did you mean 'output_dir'?": a neighbour is not a misspelling."""
    config = tmp_path / "recipe.yaml"
    config.write_text(f"{key}: x\n")
    code, _, stderr = run_in_process(capfd, "sft", "--config", config)
    assert code == 2 and f"{config}:1: unknown key '{key}' (valid: " in stderr, stderr
    code, _, stderr = run_in_process(capfd, "sft", f"--{key}", "x")
    assert code == 2 and f"unknown option --{key.replace('_', '-')} (valid: " in stderr, stderr


def test_command_line_errors(capfd):
    code, _, stderr = run_in_process(capfd, "sft", "--lerning_rate", "1")
    assert code == 2 and "unknown option --lerning-rate (did you mean --learning_rate? valid: " in stderr
    code, _, stderr = run_in_process(capfd, "sft", "traces.jsonl")
    assert code == 2 and "unexpected argument 'traces.jsonl'" in stderr
    code, _, stderr = run_in_process(capfd, "sft", "--dtype", "float32", "--torch_dtype", "bfloat16")
    assert code == 2 and "--torch-dtype sets the same flag as --dtype" in stderr


SFT_PARAMS = {"max_length", "subset", "split", "chat_template", "system", "prompt_field", "overwrite", "save_steps",
              "dtype"}


@pytest.mark.parametrize("command, key, value, outcome", [
    ("sft", "max_seq_length", 512, ("param", "max_length", 512)),  # TRL's old name of max_length
    ("sft", "dataset_config", "all", ("param", "subset", "all")),
    ("sft", "overwrite_output_dir", True, ("param", "overwrite", True)),  # transformers 4's, gone in 5
    ("sft", "save_strategy", "no", ("param", "save_steps", 0)),
    ("sft", "save_strategy", "steps", ("same",)),
    ("sft", "save_strategy", "epoch", ("ignored",)),
    ("sft", "torch_dtype", "bfloat16", ("group", "dtype")),
    ("sft", "vllm_server_base_url", "http://x:8000", ("ignored",)),  # grpo's: sft has no --vllm-server-url
    ("grpo", "vllm_server_base_url", "http://x:8000", ("param", "vllm_server_url", "http://x:8000")),
    ("grpo", "epsilon_high", 0.28, ("passed", "epsilon_high", 0.28)),
    ("sft", "epsilon_high", 0.28, ("ignored",)),  # GRPOConfig's, not SFTConfig's
    ("sft", "use_liger", True, ("ignored",)),  # TRL's old name of use_liger_kernel; this CPU has no Liger
    ("sft", "lr_scheduler_kwargs", {"min_lr_rate": 0.1}, ("passed", "lr_scheduler_kwargs", {"min_lr_rate": 0.1})),
    ("sft", "num_generations", 8, ("ignored",)),  # a GRPO field in an SFT recipe: known, not sft's
    ("sft", "reward_funcs", ["accuracy"], ("ignored",)),  # open-r1's
    ("sft", "per_device_eval_batch_size", 16, ("ignored",)),
    ("sft", "overwrite_outptu_dir", True, None),  # no library knows it
])
def test_what_each_trl_name_comes_to(command, key, value, outcome):
    from rtool.trl_names import resolve

    params = SFT_PARAMS | ({"vllm_server_url"} if command == "grpo" else set())
    found = resolve(key, value, command=command, params=params)
    if outcome is None:
        assert found is None
        return
    kind = next(kind for kind in ("param", "passed", "group", "ignored", "same") if getattr(found, kind))
    shown = {"param": (kind, found.param, found.value), "passed": (kind, found.key, found.value),
             "group": (kind, found.key)}.get(kind, (kind,))
    assert shown == outcome


@pytest.mark.parametrize("weights, bf16, fp16, dtype", [
    # TRL's ModelConfig dtype and its mixed-precision switches -> rtool's --dtype (rtool.train.precision's table)
    ("bfloat16", True, None, "bfloat16"), ("bfloat16", None, None, "bfloat16"), ("float16", None, True, "float16"),
    (None, True, None, "auto"), ("float32", True, None, "auto"), ("auto", "true", None, "auto"),
    (None, None, True, "float16"), ("float32", None, None, "float32"), (None, False, None, "float32"),
    ("auto", None, None, "auto"), (None, None, None, None),
])
def test_trl_precision_settings_make_one_rtool_dtype(weights, bf16, fp16, dtype):
    from rtool.trl_names import precision_dtype

    assert precision_dtype(weights, bf16, fp16) == dtype


def substituted(recipe: Path, out: Path, **values) -> Path:
    """A copy of `recipe` with top-level `key: value` lines replaced (a local model, data and output dir) and no
    tracker (report_to's list: wandb needs an account and network)."""
    text = recipe.read_text(encoding="utf-8")
    for key, value in values.items():
        text, found = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, flags=re.M)
        assert found == 1, key
    text, found = re.subn(r"^report_to:\n(- .*\n)+", "report_to: none\n", text, flags=re.M)
    assert found == 1
    out.write_text(text, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def mixture(tiny_task_rows, tmp_path_factory):
    """A local stand-in for open-r1/Mixture-of-Thoughts as the hub lays it out: conversations (`messages`), subset
    (config) `all` declared in the README's metadata, as `dataset_config: all` asks for."""
    folder = tmp_path_factory.mktemp("mixture") / "Mixture-of-Thoughts"
    (folder / "data" / "all").mkdir(parents=True)
    rows = [{"messages": [{"role": "user", "content": row["problem"]},
                          {"role": "assistant", "content": row["solution"]}]} for row in tiny_task_rows[:8]]
    (folder / "data" / "all" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: all\n  data_files:\n  - split: train\n"
                                      "    path: data/all/train.jsonl\n---\n")
    return folder


def ignored_names(stderr: str) -> list[str]:
    """The names in the one warning about ignored settings (there must be exactly one)."""
    lines = [line for line in stderr.splitlines() if "TRL/transformers/open-r1 setting" in line]
    assert len(lines) == 1, stderr
    listed = re.search(r"has no use for: (.*) \(its flags: rtool \w+ --help\)$", lines[0]).group(1)
    return [re.sub(r" \(.*", "", name) for name in re.split(r", (?![^(]*\))", listed)]


def test_open_r1s_sft_demo_recipe_trains_as_written(capfd, tmp_path, tiny_model_dir, mixture):
    """open-r1's config_demo.yaml with a local model and data: every key is read (19 of them failed one per run
    before), torch_dtype sets the weights' dtype, lr_scheduler_kwargs and gradient_checkpointing_kwargs reach the
    TRL config, overwrite_output_dir replaces the earlier run, and the rest is ignored in one warning."""
    out = tmp_path / "Qwen2.5-1.5B-Open-R1-Distill"
    config = substituted(RECIPES / "open_r1_sft_config_demo.yaml", tmp_path / "config_demo.yaml",
                         model_name_or_path=tiny_model_dir, dataset_name=mixture, output_dir=out)
    for run in (1, 2):  # the second run finds the first one's model in OUT: overwrite_output_dir replaces it
        code, stdout, stderr = run_in_process(capfd, "sft", "--config", config)
        assert code == 0, stderr
        assert stdout == f"{out}\n"
    settings = json.loads((out / "run_settings.json").read_text())
    assert (settings["dtype"], settings["subset"], settings["lr"], settings["lr_scheduler"], settings["seed"]) == \
        ("bfloat16", "all", 4e-05, "cosine_with_min_lr", 42)
    assert settings["trl_args"] == {"lr_scheduler_kwargs": {"min_lr_rate": 0.1},
                                    "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    trained = json.loads((out / "training_args.json").read_text())  # the SFTConfig the run was given
    assert trained["lr_scheduler_kwargs"] == {"min_lr_rate": 0.1}
    assert {"use_reentrant": False} in (trained.get("gradient_checkpointing_kwargs"),
                                        trained.get("activation_checkpointing_kwargs"))
    assert (trained["save_strategy"], trained["save_steps"], trained["logging_steps"]) == ("steps", 100, 5)
    liger = "use_liger_kernel"  # passed where Liger's kernels can run, else ignored with the reason
    assert sorted(ignored_names(stderr)) == sorted(
        ["model_revision", "attn_implementation", "dataset_num_proc", "do_eval", "eval_strategy", "hub_model_id",
         "hub_strategy", "log_level", "per_device_eval_batch_size", "push_to_hub", "save_total_limit"]
        + ([liger] if liger not in settings["trl_args"] else []))
    assert "unknown" not in stderr


def test_open_r1s_grpo_demo_recipe_runs_with_a_cpu_sized_command_line(capfd, tmp_path, tiny_model_dir,
                                                                         tiny_task_rows):
    """open-r1's GRPO config_demo.yaml, made CPU-sized on the command line as a user would (TRL's flag names, which
    win over the YAML): system_prompt and dataset_prompt_column are --system and --prompt-field, grpo's epsilon_high
    reaches GRPOConfig, and reward_funcs (open-r1's reward functions, not rtool's --reward) is ignored, said once."""
    data = tmp_path / "OpenR1-Math-220k.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in tiny_task_rows[:2]))  # problem, solution, answer
    out = tmp_path / "Qwen2.5-1.5B-Open-R1-GRPO"
    config = substituted(RECIPES / "open_r1_grpo_config_demo.yaml", tmp_path / "config_demo.yaml",
                         model_name_or_path=tiny_model_dir, dataset_name=data, output_dir=out, use_vllm="false")
    code, _, stderr = run_in_process(
        capfd, "grpo", "--config", config, "--num_generations", "2", "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1", "--max_completion_length", "16", "--torch_dtype", "float32",
        "--gradient_checkpointing", "false", "--epsilon_high", "0.28", "--run_name", "demo")
    assert code == 0, stderr
    settings = json.loads((out / "run_settings.json").read_text())
    assert settings["system"].startswith("You are a helpful AI Assistant that provides well-reasoned")
    assert (settings["prompt_field"], settings["dtype"], settings["num_generations"]) == ("problem", "auto", 2)
    trained = json.loads((out / "training_args.json").read_text())  # the GRPOConfig the run was given
    assert (trained["epsilon"], trained["epsilon_high"], trained["learning_rate"]) == (0.2, 0.28, 2e-05)
    assert trained["lr_scheduler_type"] == "cosine" and trained["num_generations"] == 2
    ignored = ignored_names(stderr)
    assert {"reward_funcs", "reward_weights", "log_completions", "max_prompt_length", "save_strategy",
            "--run-name"} <= set(ignored)
    assert "--epsilon-high" not in ignored and "epsilon_high" not in ignored


def test_trl_only_flags_of_a_trl_command_line(capfd, tmp_path, tiny_model_dir, tiny_task_rows):
    """`trl sft` flags rtool has no name of its own for: the split, the chat template file, the dtype switches,
    the scheduler's kwargs, save_strategy no, overwrite_output_dir, and --run_name (ignored, said once)."""
    folder = tmp_path / "traces"
    (folder / "data").mkdir(parents=True)
    for split, rows in (("train", tiny_task_rows[:4]), ("test", tiny_task_rows[4:6])):
        (folder / "data" / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    out = tmp_path / "run"
    trl_line = ["--model_name_or_path", tiny_model_dir, "--dataset_name", folder, "--dataset_train_split", "train",
                "--output_dir", out, "--chat_template_path", template, "--torch_dtype", "float32", "--bf16",
                "--learning_rate", "0.01", "--lr_scheduler_type", "cosine_with_min_lr",
                "--lr_scheduler_kwargs", '{"min_lr_rate": 0.5}', "--max_grad_norm", "0.2", "--max_steps", "2",
                "--per_device_train_batch_size", "2", "--save_strategy", "no", "--logging_steps", "1",
                "--max_length", "256", "--run_name", "x", "--overwrite_output_dir", "true"]
    (out / "checkpoint-1").mkdir(parents=True)  # an earlier run's
    (out / "metrics.jsonl").write_text("")
    (out / "run_settings.json").write_text("{}")
    code, _, stderr = run_in_process(capfd, "sft", *trl_line)
    assert code == 0, stderr
    assert ignored_names(stderr) == ["--run-name"]
    settings = json.loads((out / "run_settings.json").read_text())
    assert (settings["split"], settings["dtype"]) == ("train", "auto")
    assert settings["trl_args"] == {"lr_scheduler_kwargs": {"min_lr_rate": 0.5}, "max_grad_norm": 0.2}
    trained = json.loads((out / "training_args.json").read_text())
    assert (trained["lr_scheduler_kwargs"], trained["max_grad_norm"], trained["save_strategy"]) == \
        ({"min_lr_rate": 0.5}, 0.2, "no")
    assert not list(out.glob("checkpoint-*"))
    assert (out / "chat_template.jinja").read_text() == template.read_text()
    # The model card's command line repeats the run, the passed settings under TRL's names.
    card = (out / "README.md").read_text()
    assert """--lr_scheduler_kwargs '{"min_lr_rate": 0.5}' --max_grad_norm 0.2""" in card


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
