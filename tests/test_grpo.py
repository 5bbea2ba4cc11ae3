"""rtool grpo: the prompts it trains on, and the command on the tiny Llama: metrics under rtool's names with the
weighted reward sum, KL, python and PRM rewards, a live failure-curve warning, resume, LoRA, bad input."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import run_in_process
from rtool.errors import UserError
from rtool.grade.fields import FieldMap
from rtool.train.grpo import GRPOPrompts, window_metrics
from rtool.io.records import Row

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows_of(records, name="prompts.jsonl"):
    return [Row(record, path=name, line=i + 1) for i, record in enumerate(records)]


def test_prompts_one_per_id_as_recorded_with_gold_and_options():
    recorded = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    records = [
        {"id": "a", "problem": "What is 1 + 1?", "answer": "2"},
        {"id": "a", "problem": "What is 1 + 1?", "answer": "2", "sample": 1},  # a second sample of prompt a
        {"id": "b", "problem": "ignored", "prompt_messages": recorded, "answer": "4"},
        {"id": "c", "question": "Which?", "options": {"A": "x", "B": "y"}, "answer": "B"},
    ]
    prompts = GRPOPrompts(FieldMap(), system="SYS", needs_gold=True)
    examples = list(prompts(rows_of(records)))
    assert [e["prompt"] for e in examples] == [
        [{"role": "system", "content": "SYS"}, {"role": "user", "content": "What is 1 + 1?"}],
        recorded,  # the conversation as distill sent it wins over --system
        [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Which?\n\nA. x\nB. y"}]]
    assert [e["answer"] for e in examples] == ["2", "4", "B"]
    assert [json.loads(e["options"]) if e["options"] else None for e in examples] == [None, None, {"A": "x", "B": "y"}]
    assert (prompts.counts.read, prompts.counts.kept, prompts.counts.repeated, prompts.counts.recorded) == (4, 3, 1, 1)


def test_a_prompt_without_gold_is_an_error_only_when_accuracy_needs_it():
    records = [{"id": "a", "problem": "q", "answer": "1"}, {"id": "b", "problem": "no gold here"}]
    with pytest.raises(UserError) as caught:
        list(GRPOPrompts(needs_gold=True)(rows_of(records)))
    assert caught.value.render().startswith("prompts.jsonl:2: no gold answer; the accuracy reward compares")
    examples = list(GRPOPrompts(needs_gold=False)(rows_of(records)))
    assert [e["answer"] for e in examples] == ["1", ""]


def test_trl_metrics_keep_trls_names():
    trl = {"reward": [0.5], "rewards/accuracy/mean": [0.25], "rewards/accuracy/std": [0.4],
           "completions/mean_length": [20.0], "completions/clipped_ratio": [0.1], "frac_reward_zero_std": [0.5],
           "clip_ratio/region_mean": [0.0], "clip_ratio/low_min": [0.0], "completions/max_terminated_length": [3.0],
           "entropy": [2.0], "kl": [0.01]}
    out = window_metrics(trl, ["accuracy"])
    assert dict(out) == {**trl, "accuracy": [0.25]}  # TRL's names as TRL logs them, plus rtool's accuracy
    # Over a logging window of several steps, the length's extremes are the window's, not means of each step's.
    window = window_metrics({"completions/min_length": [12.0, 7.0, 9.0], "completions/max_length": [80.0, 95.0]}, [])
    assert dict(window) == {"completions/min_length": [7.0], "completions/max_length": [95.0]}


def test_curve_panels_lead_with_reward_and_skip_a_lone_rewards_copy():
    from rtool.train.grpo import curve_panels

    one = [{"step": 1, "loss": 0.0, "reward": 0.5, "rewards/accuracy/mean": 0.5, "accuracy": 0.5,
            "completions/mean_length": 9.0, "entropy": 1.0, "learning_rate": 1e-3, "flags": ["x"]}]
    assert curve_panels(one) == ["reward", "completions/mean_length", "entropy", "loss", "learning_rate"]
    two = [{**one[0], "reward": 0.6, "rewards/format/mean": 1.0, "rewards/format/std": 0.0, "kl": 0.1}]
    assert curve_panels(two) == ["reward", "rewards/accuracy/mean", "rewards/format/mean", "accuracy",
                                 "completions/mean_length", "kl", "entropy", "loss", "learning_rate"]


@pytest.mark.parametrize("kind", ["r1", "qwq", "chatml"])
def test_the_format_reward_counts_the_think_tag_the_generation_prompt_opened(tmp_path, kind):
    """DeepSeek-R1-Distill's and QwQ's generation prompts end with "<think>\\n" (their real templates, copied in
    test_chat_templates): what the model writes starts inside the block, and the trainer's format reward
    (--format-tags think,answer) counts the tag the prompt opened. Under ChatML the completion opens it itself."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from rtool.io.models import load_tokenizer
    from rtool.train.grpo import GRPOSettings, make_trainer
    from rtool.train.rewards import RewardSet, parse_reward_spec
    from test_chat_templates import build, generation_prompt

    path = build(kind, tmp_path / kind)
    tokenizer = load_tokenizer(path)
    assert generation_prompt(tokenizer, "What is 2+3?").endswith("<think>\n") is (kind != "chatml")
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 2+3?"}], "answer": "5",
                                  "options": ""}] * 4)
    rewards = RewardSet(parse_reward_spec("format=1"), max_completion_length=16, format_tags=("think", "answer"))
    args = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=1, report_to=[],
                save_strategy="no", use_cpu=True)
    trainer = make_trainer(model=AutoModelForCausalLM.from_pretrained(path), tokenizer=tokenizer, dataset=dataset,
                           args=args, peft_config=None, callbacks=[], rewards=rewards,
                           settings=GRPOSettings(num_generations=4, max_completion_length=16))
    [format_reward] = trainer.reward_funcs
    inside = "I add 2 and 3.\n</think>\n<answer>5</answer>"  # as written after a prompt that opened <think>
    opened = "<think>\nI add 2 and 3.\n</think>\n<answer>5</answer>"
    completions = [[{"role": "assistant", "content": text}] for text in (inside, opened)]
    # After a prompt that opened <think>, a completion that opens it again has a nested block: not the format.
    expected = [0.0, 1.0] if kind == "chatml" else [1.0, 0.0]
    assert format_reward(prompts=[dataset[0]["prompt"]] * 2, completions=completions) == expected


# The command on the tiny Llama.

def run_grpo(capfd, *args):
    return run_in_process(capfd, "grpo", *args)


def fast(steps=2):
    """4 completions per prompt, 2 prompts a step, 24 tokens at most: a step takes well under a second."""
    return ["--max-steps", str(steps), "--lr", "1e-3", "--num-generations", "4", "--batch-size", "8",
            "--grad-accum", "1", "--max-completion-length", "24", "--logging-steps", "1", "--save-steps", "0",
            "--no-system"]


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def test_training_logs_rewards_by_name_and_their_weighted_sum(capfd, tmp_path, tiny_model_dir, tiny_task_file):
    out = tmp_path / "run"
    code, stdout, stderr = run_grpo(capfd, "--model", tiny_model_dir, "--data", tiny_task_file, "--out", out,
                                    *fast(3), "--reward", "accuracy=1,format=0.5,length=0.25", "--length-buffer", "8",
                                    "--beta", "0.05")
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    assert "grpo: 50 prompts of 50 rows read" in stderr
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        # TRL's metrics under TRL's names (what TRL's GRPOTrainer logs), rtool's additions under rtool's.
        expected = {"loss", "learning_rate", "tokens_per_s", "reward", "reward_std", "rewards/accuracy/mean",
                    "rewards/format/mean", "rewards/length/mean", "rewards/length/std", "accuracy",
                    "completions/mean_length", "completion_length_median", "completions/min_length",
                    "completions/max_length", "completions/clipped_ratio", "frac_reward_zero_std",
                    "zero_std_share", "kl", "entropy", "completion_tokens_per_s"}
        assert expected <= set(row), expected - set(row)
        assert not {"completion_length", "truncated_share", "reward/accuracy"} & set(row)
        # The reward is the weighted sum of the functions' means (no reward gave None here).
        assert row["reward"] == pytest.approx(row["rewards/accuracy/mean"] + 0.5 * row["rewards/format/mean"]
                                              + 0.25 * row["rewards/length/mean"], abs=1e-5)
        assert -1 <= row["rewards/length/mean"] <= 0 and 0 <= row["completions/clipped_ratio"] <= 1
        assert 1 <= row["completions/min_length"] <= row["completion_length_median"] <= row[
            "completions/max_length"] <= 24
        assert row["completion_tokens_per_s"] > 0 and math.isfinite(row["kl"]) and row["entropy"] > 0
        assert "flags" not in row
    before, after = weights(tiny_model_dir), weights(out)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert (out / "curves.png").exists()

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generate(torch.tensor([[1, 2, 3]], device=model.device), max_new_tokens=3).shape[1] >= 4


@pytest.fixture(scope="module")
def letters_model_dir(tmp_path_factory):
    """A tiny Llama whose vocabulary is A, B and the special tokens: a completion of a token or two is often a lone
    letter, a multiple-choice answer, so accuracy is neither always 0 nor always 1."""
    from rtool.tiny import char_tokenizer, save_tiny, tiny_llama

    tokenizer = char_tokenizer(["AB"])
    model = tiny_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=4, seed=0)
    return save_tiny(model, tokenizer, tmp_path_factory.mktemp("letters") / "model")


SPY = """import json
def record(prompts, completions, completion_ids, answer, trainer_state, **kwargs):
    with open({path!r}, "a") as handle:
        for completion, ids, gold in zip(completions, completion_ids, answer):
            text = completion[0]["content"] if isinstance(completion, list) else completion
            handle.write(json.dumps({{"step": trainer_state.global_step, "text": text, "gold": gold,
                                      "length": len(ids)}}) + "\\n")
    return [0.0] * len(completions)
"""


def test_metrics_match_the_completions_counted_independently(capfd, tmp_path, monkeypatch, letters_model_dir):
    """A reward that records every completion: accuracy (a lone letter equal to the gold), the share of groups with
    one reward under --scale-rewards batch, the count, median and std of lengths, recomputed from the record. The
    trainer is slow to set up (2 s after it is built): completion tokens/s counts the steps only."""
    import statistics
    import time

    import rtool.train.grpo

    data = tmp_path / "choices.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": f"Pick {i}", "options": {"A": "yes", "B": "no"},
                                        "answer": "AB"[i % 2]}) + "\n" for i in range(16)))
    record = tmp_path / "record.jsonl"
    (tmp_path / "spy.py").write_text(SPY.format(path=str(record)))
    monkeypatch.chdir(tmp_path)
    built = rtool.train.grpo.trainer_class

    def slow_to_set_up():
        class SlowSetup(built()):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                time.sleep(2)  # as a large dataset or checkpoint would, after the trainer is built

        return SlowSetup

    monkeypatch.setattr(rtool.train.grpo, "trainer_class", slow_to_set_up)
    out = tmp_path / "run"
    code, _, stderr = run_grpo(capfd, "--model", letters_model_dir, "--data", data, "--out", out, "--max-steps", "4",
                               "--lr", "1e-3", "--num-generations", "4", "--batch-size", "8", "--grad-accum", "1",
                               "--max-completion-length", "2", "--logging-steps", "1", "--save-steps", "0",
                               "--no-system", "--reward", "accuracy=1,python:spy:record=1",
                               "--scale-rewards", "batch")
    assert code == 0, stderr
    recorded = [json.loads(line) for line in record.read_text().splitlines()]
    rows = metrics(out)
    for row in rows:
        mine = [r for r in recorded if r["step"] == row["step"] - 1]  # generated before the step counted
        right = [r["text"].strip() == r["gold"] for r in mine]
        groups = [right[i:i + 4] for i in range(0, len(right), 4)]  # TRL's groups: 4 in a row, one prompt
        lengths = [r["length"] for r in mine]
        assert row["completions"] == len(mine) == 8
        assert row["accuracy"] == pytest.approx(sum(right) / len(right))
        assert row["zero_std_share"] == pytest.approx(sum(len(set(g)) == 1 for g in groups) / len(groups))
        assert row["completion_length_median"] == statistics.median(lengths)
        assert row["completion_length_std"] == pytest.approx(statistics.stdev(lengths))
    # Not vacuous: some rows with right and wrong answers, some with a group of one reward beside one of two (TRL's
    # whole-batch flag under --scale-rewards batch could only say 0 or 1).
    assert any(0 < row["accuracy"] < 1 for row in rows)
    assert any(0 < row["zero_std_share"] < 1 for row in rows)
    first = rows[0]
    seconds = first["completions"] * first["completions/mean_length"] / first["completion_tokens_per_s"]
    assert seconds < 1.5, seconds  # one step's time, not the 2 s of setup before it


def test_a_python_reward_is_imported_weighted_and_logged_under_its_name(capfd, tmp_path, monkeypatch,
                                                                        tiny_model_dir, tiny_task_file):
    (tmp_path / "my_rewards.py").write_text(
        "def quarter(prompts, completions, completion_ids, answer, **kwargs):\n"
        "    assert len(answer) == len(completions) and kwargs['trainer_state'] is not None\n"
        "    return [0.25 for _ in completions]\n"
        "def wrong_shape(prompts, completions, **kwargs):\n"
        "    return [1.0]\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "python"
    code, _, stderr = run_grpo(capfd, "--model", tiny_model_dir, "--data", tiny_task_file, "--out", out, *fast(2),
                               "--reward", "accuracy=1,python:my_rewards:quarter=2")
    assert code == 0, stderr
    for row in metrics(out):
        assert row["rewards/quarter/mean"] == 0.25 and row["rewards/quarter/std"] == 0.0
        assert row["reward"] == pytest.approx(row["accuracy"] + 0.5, abs=1e-6)

    broken = tmp_path / "broken"
    code, stdout, stderr = run_grpo(capfd, "--model", tiny_model_dir, "--data", tiny_task_file, "--out", broken,
                                    *fast(2), "--reward", "python:my_rewards:wrong_shape=1")
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines()[-1] == (
        "rtool: error: reward 'python:my_rewards:wrong_shape' returned 1 values for 8 completions; it must return "
        "one number (or None) per completion")
    assert not broken.exists()  # failed at step 1: nothing half-made is left


def test_a_prm_reward_scores_completions_in_0_1(capfd, tmp_path, tiny_model_dir, tiny_task_file):
    from prm_models import build_prm

    prm = build_prm("qwen-prm", tmp_path / "prm")
    out = tmp_path / "prm-run"
    code, _, stderr = run_grpo(capfd, "--model", tiny_model_dir, "--data", tiny_task_file, "--out", out, *fast(2),
                               "--reward", "prm=1", "--prm", prm, "--prm-agg", "mean")
    assert code == 0, stderr
    assert "read as qwen-prm" in stderr
    for row in metrics(out):
        assert 0 < row["rewards/prm/mean"] < 1 and row["reward"] == pytest.approx(row["rewards/prm/mean"])
        assert "accuracy" not in row


def test_a_length_collapse_warns_once_flags_the_rows_and_marks_the_curves(capfd, tmp_path, monkeypatch,
                                                                           tiny_model_dir, tiny_task_file):
    """A reward for stopping early at a far too high rate: the completions shrink to a few tokens within steps."""
    (tmp_path / "short.py").write_text(
        "def short(prompts, completions, completion_ids, **kwargs):\n"
        "    return [-float(len(ids)) for ids in completion_ids]\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "collapse"
    code, _, stderr = run_grpo(capfd, "--model", tiny_model_dir, "--data", tiny_task_file, "--out", out, *fast(12),
                               "--reward", "python:short:short=1", "--lr", "0.05", "--watch-window", "2",
                               "--temperature", "1.0")
    assert code == 0, stderr
    rows = metrics(out)
    lengths = [row["completions/mean_length"] for row in rows]
    assert lengths[-1] < 0.5 * (lengths[0] + lengths[1]) / 2, lengths
    assert " ".join(stderr.split()).count("sequence length collapse: mean completion length") == 1
    flagged = [row["step"] for row in rows if "sequence_length_collapse" in row.get("flags", [])]
    assert flagged and flagged == list(range(flagged[0], 13))  # from the step it showed to the final row
    from rtool.train.failure_curves import CurveWatch, event_marks

    marks = event_marks(CurveWatch(window=2).events(rows))
    assert [(m.step, m.metric) for m in marks if m.label == "sequence length collapse"] == [
        (flagged[0], "completions/mean_length")]
    # `rtool plot --check` finds it in the run's metrics.jsonl (at the default 5-step window: the same step or later).
    code, stdout, _ = run_in_process(capfd, "plot", out, "--check")
    checked = json.loads(stdout)
    assert code == 0 and checked["run"] == str(out)
    assert [flag["step"] for flag in checked["flags"] if flag["name"] == "sequence_length_collapse"][0] >= flagged[0]


def test_each_row_averages_a_whole_logging_window(capfd, tmp_path, tiny_model_dir, tiny_task_file):
    out = tmp_path / "window"
    code, _, stderr = run_grpo(capfd, "--model", tiny_model_dir, "--data", tiny_task_file, "--out", out, *fast(4),
                               "--logging-steps", "2")
    assert code == 0, stderr
    assert [row["step"] for row in metrics(out)] == [2, 4]  # no row of step 1 alone


def test_resume_ends_where_an_uninterrupted_run_ends(capfd, tmp_path, tiny_model_dir, tiny_task_file):
    out = tmp_path / "resumable"
    common = ["--model", tiny_model_dir, "--data", tiny_task_file, "--out", out, *fast(3), "--save-steps", "1",
              "--keep-checkpoints"]
    code, _, stderr = run_grpo(capfd, *common)
    assert code == 0, stderr
    uninterrupted, logged = weights(out), metrics(out)
    shutil.rmtree(out / "checkpoint-3")  # as if killed after step 3's log but before its checkpoint
    (out / "trainer_state.json").unlink()  # nor did it finish (the mark of a run that ended)
    code, stdout, stderr = run_grpo(capfd, *common, "--resume")
    assert code == 0, stderr
    assert stdout == f"{out}\n" and "checkpoint-2" in stderr
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2, 3]
    # The same completions sampled and rewarded again (the RNG states come back with the checkpoint).
    assert [row["reward"] for row in rows] == [row["reward"] for row in logged]
    # Tokens (so tokens/s) count from the resume point: step 3 again is step 3's tokens alone, not steps 1-3's.
    assert rows[2]["num_tokens"] == logged[2]["num_tokens"] - logged[1]["num_tokens"]
    resumed = weights(out)
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)


def test_lora_with_config_saves_adapter_and_merged_model(capfd, tmp_path, tiny_model_dir, tiny_task_file):
    out = tmp_path / "lora"
    config = tmp_path / "run.yaml"
    # The length reward varies within a group from the start (accuracy is all 0 for a random model: no signal).
    config.write_text(f"model: {tiny_model_dir}\ndata: {tiny_task_file}\nreward: accuracy=1,length=0.2\n"
                      "length-buffer: 8\nnum-generations: 4\n")
    code, stdout, stderr = run_grpo(capfd, "--config", config, "--out", out, *fast(2), "--lora", "--lora-r", "4",
                                    "--lora-targets", "q_proj,v_proj", "--merge-lora")
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    assert "rewards/length/mean" in metrics(out)[0]
    before, merged = weights(tiny_model_dir), weights(out / "merged")
    changed = {name for name in before if not torch.equal(before[name], merged[name])}
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)


def test_two_process_torchrun_writes_one_model(tmp_path, tiny_model_dir, tiny_task_file):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    # Two CPU processes, on a GPU machine too (CUDA hidden): this test means the CPU.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RTOOL_DEBUG": "0", "CUDA_VISIBLE_DEVICES": ""}
    flags = [*fast(2), "--batch-size", "4", "--reward", "accuracy=1,length=0.5", "--length-buffer", "8"]
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rtool.cli", "grpo",
                             "--model", str(tiny_model_dir), "--data", str(tiny_task_file), "--out", str(out), *flags],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}\n"  # rank 0 only
    assert result.stderr.count("grpo: 50 prompts of 50 rows read") == 1  # one report
    assert len(list(out.rglob("model.safetensors"))) == 1
    assert [row["step"] for row in metrics(out)] == [1, 2]  # one writer
    # Both processes' completions (4 each) in the length statistics, not rank 0's alone.
    assert [row["completions"] for row in metrics(out)] == [8, 8]
    assert any(not torch.equal(a, b) for a, b in zip(weights(tiny_model_dir).values(), weights(out).values()))


def test_bad_input_is_one_line_and_leaves_no_run(capfd, tmp_path, tiny_model_dir, tiny_task_file):
    def fails(*flags, data=tiny_task_file):
        out = tmp_path / "never"
        code, stdout, stderr = run_grpo(capfd, "--model", tiny_model_dir, "--data", data, "--out", out, *fast(1),
                                        *flags)
        assert code == 2 and stdout == "" and not out.exists(), stderr
        errors = [line for line in stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and stderr.rstrip().endswith(errors[0])
        return errors[0]

    no_gold = tmp_path / "no_gold.jsonl"
    no_gold.write_text('{"problem": "What is 1 + 1?", "answer": "2"}\n{"problem": "What is 2 + 2?"}\n')
    assert fails(data=no_gold).startswith(f"rtool: error: {no_gold}:2: no gold answer; the accuracy reward")
    assert "unknown reward 'acc'" in fails("--reward", "acc=1")
    assert "the weight 'x' is not a number" in fails("--reward", "accuracy=x")
    assert "cannot import no_such_module_here" in fails("--reward", "python:no_such_module_here:f=1")
    assert "not a multiple of --num-generations 3" in fails("--num-generations", "3")
    assert "--num-generations must be at least 2" in fails("--num-generations", "1")
    assert "--prm is given but --reward has no prm=W" in fails("--prm", tiny_model_dir)
    assert "the prm reward needs a process reward model" in fails("--reward", "prm=1")
    assert "unknown --loss-type 'ppo'" in fails("--loss-type", "ppo")
    assert "--temperature must be > 0" in fails("--temperature", "0")
    if not _vllm_on_gpu():
        assert "--use-vllm needs vllm installed and a CUDA GPU" in fails("--use-vllm")
        assert "--use-vllm needs vllm" in fails("--use-vllm", "--vllm-mode", "server")
    assert "--vllm-mode without --use-vllm" in fails("--vllm-mode", "server")
    assert "--vllm-server-url without --use-vllm" in fails("--vllm-server-url", "http://localhost:8000")
    assert "unknown --vllm-mode 'remote'" in fails("--use-vllm", "--vllm-mode", "remote")
    assert "--vllm-server-url is for --vllm-mode server" in fails("--use-vllm", "--vllm-mode", "colocate",
                                                                  "--vllm-server-url", "http://h:8000")


@pytest.mark.parametrize("flags, mode, url", [
    ({}, "colocate", None),
    ({"vllm_mode": "colocate"}, "colocate", None),
    ({"vllm_mode": "server"}, "server", None),
    ({"vllm_mode": "server", "vllm_server_url": "http://gpu7:8000/"}, "server", "http://gpu7:8000"),
    ({"vllm_server_url": "http://gpu7:8001"}, "server", "http://gpu7:8001"),  # a server URL means server mode
])
def test_grpo_config_carries_the_vllm_mode_and_server(tmp_path, flags, mode, url):
    from rtool.train.core import Hyperparams, trainer_args
    from rtool.train.grpo import GRPOSettings, grpo_config
    from rtool.train.precision import precision

    args = trainer_args(Hyperparams(out=tmp_path, batch_size=2), precision("auto", lora=False))  # what a run passes
    config = grpo_config(args, GRPOSettings(num_generations=2, use_vllm=True, **flags), [1.0])
    assert config.use_vllm and config.vllm_mode == mode
    assert config.vllm_server_base_url == url
    assert not grpo_config(args, GRPOSettings(num_generations=2), [1.0]).use_vllm


def _vllm_on_gpu() -> bool:
    from rtool.generate.backends import vllm_usable

    return vllm_usable()
