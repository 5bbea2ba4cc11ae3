"""rtool sft on the tiny Llama: training changes weights, outputs load and generate, LoRA (merged in the base's
dtype), config, resume, torchrun, bad data, the default system prompt, rows over --max-length, and Masked Thought
as a pure function. What a row is tokenized into: tests/test_train_data.py."""

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rtool.train.core import apply_mask_thought, mask_thought

# Two loaded cores: one intra-op thread avoids oversubscription (10-100x slower steps on this tiny model).
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def fast(steps=2):
    """Flags for a few quick steps at a high learning rate."""
    return ["--max-steps", str(steps), "--lr", "1e-2", "--warmup-ratio", "0", "--batch-size", "4",
            "--logging-steps", "1", "--max-length", "256"]


FAST = fast()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_sft(capfd, *args):
    """`rtool sft ARGS` in this process; returns (exit code, stdout, stderr) as captured at the file descriptors."""
    from rtool.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["sft", *map(str, args)])
    captured = capfd.readouterr()
    return exit_.value.code, captured.out, captured.err


def flat(text):
    """stderr with rich's line wrapping undone: words separated by single spaces."""
    return " ".join(text.split())


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def without_clock(rows):
    """Metrics rows without what depends on the wall clock or counts from the process start (TRL's num_tokens)."""
    return [{key: value for key, value in row.items() if key not in ("tokens_per_s", "num_tokens")} for row in rows]


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


@pytest.fixture(scope="module")
def traces(tiny_task_rows, tmp_path_factory):
    """MATH rows (solution only) plus three distill-style negatives with a `completion` and `correct: false`."""
    negatives = [{"problem": row["problem"], "completion": "no idea", "correct": False} for row in tiny_task_rows[:3]]
    return write_rows(tmp_path_factory.mktemp("sft") / "traces.jsonl", tiny_task_rows[:20] + negatives)


def test_full_finetune_changes_weights_logs_metrics_and_generates(capfd, tmp_path, tiny_model_dir, traces):
    out = tmp_path / "run"
    code, stdout, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", traces, "--out", out, *FAST)
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    assert "20 training rows of 23 read, skipped 3 with correct == false" in stderr
    # Rows without prompt_messages get the system prompt distill and eval send by default.
    assert "no row records its conversation (prompt_messages or a conversational prompt): all get the system prompt " \
        "'Please reason step by step" in flat(stderr)

    before, after = weights(tiny_model_dir), weights(out)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert not list(out.rglob("*.bin"))  # transformers' pickled training_args.bin became JSON
    assert json.loads((out / "training_args.json").read_text())["learning_rate"] == 1e-2
    card = (out / "README.md").read_text()  # the model card, with no checkpoint saved (--save-steps 500 > 2 steps)
    # The local base by its folder's name, never an absolute path (the card travels with OUT).
    assert 'base_model: "model"' in card and "trained this model from `model`" in card and "None" not in card
    data_hash = hashlib.sha256(traces.read_bytes()).hexdigest()
    assert f"| `{traces}` | 23 | {data_hash} |" in card
    assert f"rtool sft --model {tiny_model_dir} --data {traces} --out {out}" in card and "--max-steps 2" in card
    assert "| loss |" in card and "![training curves](curves.png)" in card
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert {"step", "loss", "learning_rate", "tokens_per_s", "epoch"} <= set(row)
        assert math.isfinite(row["loss"]) and row["tokens_per_s"] > 0

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                         add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]


def test_lora_saves_adapter_and_merged_model(capfd, tmp_path, tiny_model_dir, traces, monkeypatch):
    out = tmp_path / "lora"
    monkeypatch.chdir(Path(tiny_model_dir).parent)  # --model as a relative path: the adapter records it absolute
    code, stdout, stderr = run_sft(capfd, "--model", Path(tiny_model_dir).name, "--data", traces, "--out", out, *FAST,
                                   "--lora", "--lora-r", "4", "--lora-targets", "q_proj,v_proj", "--merge-lora",
                                   "--mask-thought", "0.2", "--no-system")
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    assert "all get no system prompt" in flat(stderr)
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    recorded = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == str(Path(tiny_model_dir).resolve())

    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    before = weights(tiny_model_dir)
    after = {name: tensor for name, tensor in merged.state_dict().items() if name in before}
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)
    assert {tensor.dtype for tensor in weights(out / "merged").values()} == {torch.float32}  # the base's dtype

    from rtool.io.models import load_model

    adapter_model, _ = load_model(out)  # the adapter dir loads onto its base and merges
    assert torch.allclose(adapter_model.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                          merged.state_dict()["model.layers.0.self_attn.q_proj.weight"], atol=1e-6)


def test_config_yaml_under_explicit_flags(capfd, tmp_path, tiny_model_dir, traces):
    out = tmp_path / "cfg"
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndata: {traces}\nmax-steps: 1\nlr: 0.003\nwarmup_ratio: 0\n"
                      "logging_steps: 1\nbatch-size: 4\nmax-length: 256\n")
    code, stdout, stderr = run_sft(capfd, "--config", config, "--out", out, "--max-steps", "2")
    assert code == 0, stderr
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2]  # the flag beat the YAML's max-steps: 1
    assert rows[0]["learning_rate"] == pytest.approx(0.003)  # the YAML beat the default lr

    config.write_text("lr: 0.1\nlearning-rate: 0.2\n")
    code, _, stderr = run_sft(capfd, "--config", config, "--model", tiny_model_dir, "--data", traces, "--out", out)
    assert code == 2 and f"{config}:2: 'learning-rate' sets the same flag as 'lr'" in stderr


def test_resume_ends_where_an_uninterrupted_run_ends(capfd, tmp_path, tiny_model_dir, traces):
    """Masked Thought included (its noise must not depend on where the run restarted); a checkpoint whose save was
    cut short is skipped; other training settings are refused."""
    out = tmp_path / "resumable"
    common = ["--model", tiny_model_dir, "--data", traces, "--out", out, "--save-steps", "1", *fast(3),
              "--mask-thought", "0.3", "--keep-checkpoints"]
    code, _, stderr = run_sft(capfd, *common)
    assert code == 0, stderr
    assert re.search(r"step 1/3  loss .*  elapsed \S+  ETA \S+$", stderr, re.M)  # time left, from the mean step
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    uninterrupted, logged = weights(out), metrics(out)
    (out / "trainer_state.json").unlink()  # the mark of a run that ended: as if it had not

    code, _, stderr = run_sft(capfd, *common)  # same --out without --resume: refused, nothing overwritten
    assert code == 2 and "already holds a training run" in stderr and "--resume" in stderr

    code, _, stderr = run_sft(capfd, *common, "--resume", "--lr", "0.02", "--batch-size", "2")
    assert code == 2 and "--resume with other training settings than the run's" in stderr
    assert "--lr 0.01 -> 0.02" in flat(stderr) and "--batch-size 4 -> 2" in flat(stderr)

    (out / "checkpoint-3" / "trainer_state.json").unlink()  # as if killed while writing checkpoint-3
    code, stdout, stderr = run_sft(capfd, *common, "--resume")
    assert code == 0, stderr
    assert stdout == f"{out}\n"
    assert "skipping" in stderr and "checkpoint-3: incomplete" in flat(stderr)
    assert "resuming from" in stderr and "checkpoint-2" in stderr
    assert "step 1/3" not in stderr and "step 3/3" in stderr
    # The resumed run's ETA comes from its own steps (a checkpoint's steps took no time in this process).
    assert re.search(r"step 3/3  loss .*  elapsed \S+  ETA 0s$", stderr, re.M)
    resumed = weights(out)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in resumed)
    assert without_clock(metrics(out)) == without_clock(logged)  # step 3 logged once, as it was
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert not list(out.rglob("*.bin")) and (out / "checkpoint-3" / "training_args.json").exists()

    # --overwrite replaces the finished run: a fresh run in OUT (its model as the first one's), nothing left aside.
    (out / "checkpoint-3" / "stale.txt").write_text("from the old run")
    code, stdout, stderr = run_sft(capfd, *common, "--overwrite")
    assert code == 0, stderr
    assert "removed the earlier run" in stderr and not (out / "checkpoint-3" / "stale.txt").exists()
    assert all(torch.equal(weights(out)[name], uninterrupted[name]) for name in uninterrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resumable"]


def test_out_holding_other_files_is_refused_and_overwrite_deletes_only_the_run(capfd, tmp_path, tiny_model_dir,
                                                                              traces, monkeypatch):
    """Issue 24 item 1: `--out d` with d/notes.txt trained into d (a later --overwrite deleted notes.txt with it);
    `--out .` in a project replaced its README.md with the model card; `--out . --overwrite` raised a ValueError."""
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"], ["--resume"]):
        code, stdout, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", traces, "--out", folder, *FAST,
                                       *extra)
        assert code == 2 and stdout == "" and "Traceback" not in stderr
        assert stderr.startswith(f"rtool: error: {folder}: --out is not empty and holds no rtool training run (it "
                                 "holds 'notes.txt')") and len(stderr.strip().splitlines()) == 1
        assert [p.name for p in folder.iterdir()] == ["notes.txt"]

    project = tmp_path / "proj"
    project.mkdir()
    (project / "README.md").write_text("# my project\n")
    monkeypatch.chdir(project)
    for extra in ([], ["--overwrite"]):
        code, _, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", traces, "--out", ".", *FAST, *extra)
        assert code == 2 and "holds 'README.md'" in stderr and "ValueError" not in stderr
        assert [p.name for p in project.iterdir()] == ["README.md"]
        assert (project / "README.md").read_text() == "# my project\n"

    # A run of rtool's own, with the user's file added: --overwrite deletes the run's files and keeps the user's.
    run = tmp_path / "run"
    code, _, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", traces, "--out", run, *FAST)
    assert code == 0, stderr
    (run / "notes.txt").write_text("mine")
    code, _, stderr = run_sft(capfd, "--model", run, "--data", traces, "--out", run, *FAST, "--overwrite")
    assert code == 2 and "--out would replace an input: it is --model" in stderr
    assert (run / "model.safetensors").exists()  # training on from OUT into OUT: the model it reads stays
    code, stdout, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", traces, "--out", run, *FAST,
                                   "--overwrite")
    assert code == 0 and stdout == f"{run}\n", stderr
    assert "removed the earlier run" in stderr and (run / "notes.txt").read_text() == "mine"
    assert (run / "README.md").exists() and (run / "model.safetensors").exists()
    # A README.md that is not rtool's card is never written over.
    (run / "README.md").write_text("# my notes on this run\n")
    (run / "trainer_state.json").unlink()  # so that --resume trains (and writes a card) again
    code, _, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", traces, "--out", run, *FAST, "--resume")
    assert code == 0, stderr
    assert "is not an rtool model card: kept as it is" in flat(stderr)
    assert (run / "README.md").read_text() == "# my notes on this run\n"


def test_resume_compares_data_by_content_and_paths_resolved(capfd, tmp_path, tiny_model_dir, traces, monkeypatch):
    """Issue 24 item 4: a resume from another directory (or ./x for x) was refused, while changed data under the
    same name was accepted."""
    (tmp_path / "tpl").mkdir()
    data = tmp_path / "tpl" / "traces.jsonl"
    shutil.copyfile(traces, data)
    monkeypatch.chdir(tmp_path)
    common = ["--model", tiny_model_dir, "--save-steps", "1", *fast(2)]
    code, _, stderr = run_sft(capfd, *common, "--data", "tpl/traces.jsonl", "--out", "run", "--keep-checkpoints")
    assert code == 0, stderr
    (tmp_path / "run" / "trainer_state.json").unlink()  # as if killed after checkpoint-2 was saved
    shutil.rmtree(tmp_path / "run" / "checkpoint-2")
    monkeypatch.chdir(tmp_path / "tpl")
    code, stdout, stderr = run_sft(capfd, *common, "--data", "./traces.jsonl", "--out", "../run", "--resume")
    assert code == 0, stderr
    assert stdout == "../run\n" and "resuming from" in stderr and "checkpoint-1" in stderr

    with open(data, "a") as handle:  # the same file, other rows
        handle.write(json.dumps({"problem": "1+1?", "solution": "\\boxed{2}"}) + "\n")
    code, stdout, stderr = run_sft(capfd, *common, "--data", "traces.jsonl", "--out", "../run", "--resume")
    assert code == 2 and stdout == ""
    assert f"--data {data} changed since the run started ({traces.stat().st_size} bytes, sha256 " in flat(stderr)


def test_a_finished_run_keeps_no_checkpoints_unless_asked(capfd, tmp_path, tiny_model_dir, traces):
    """Issue 24 item 11: checkpoint-N (optimizer, scheduler and RNG pickles) went on filling OUT after the run."""
    out = tmp_path / "run"
    common = ["--model", tiny_model_dir, "--data", traces, "--out", out, "--save-steps", "1", *fast(2)]
    code, _, stderr = run_sft(capfd, *common)
    assert code == 0, stderr
    assert "removed checkpoint-1, checkpoint-2" in flat(stderr) and "--keep-checkpoints keeps them" in flat(stderr)
    assert not list(out.glob("checkpoint-*")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pth"))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    trained = weights(out)
    # A resume of it has nothing to train: it says so, and OUT is as it was.
    code, stdout, stderr = run_sft(capfd, *common, "--resume")
    assert code == 0 and stdout == f"{out}\n", stderr
    assert "finished at step 2; nothing left to train" in flat(stderr) and "resuming from" not in stderr
    assert all(torch.equal(weights(out)[name], tensor) for name, tensor in trained.items())

    kept = tmp_path / "kept"
    code, _, stderr = run_sft(capfd, *common[:4], "--out", kept, *common[6:], "--keep-checkpoints")
    assert code == 0, stderr
    assert sorted(p.name for p in kept.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (kept / "checkpoint-2" / "optimizer.pt").exists()


def test_bad_data_errors_name_file_line_and_field(capfd, tmp_path, tiny_model_dir):
    bad = write_rows(tmp_path / "bad.jsonl", [{"problem": "1+1?", "completion": "2"}, {"problem": "2+2?"}])
    code, stdout, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", bad, "--out", tmp_path / "o")
    assert code == 2 and stdout == ""
    assert f"rtool: error: {bad}:2: no completion field" in stderr

    negatives = write_rows(tmp_path / "neg.jsonl", [{"problem": "1+1?", "completion": "3", "correct": False}])
    code, _, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", negatives, "--out", tmp_path / "o")
    assert code == 2 and "no training rows" in stderr and "--include-incorrect" in stderr

    code, _, stderr = run_sft(capfd, "--data", negatives, "--out", tmp_path / "o")
    assert code == 2 and "--model is required" in stderr
    assert not (tmp_path / "o").exists()


def test_two_process_torchrun_writes_one_model(tmp_path, tiny_model_dir, traces):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    # Two CPU processes, on a GPU machine too (CUDA hidden): this test means the CPU.
    env = {**os.environ, **SINGLE_THREAD, "RTOOL_DEBUG": "0", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "rtool.cli", "sft",
                             "--model", str(tiny_model_dir), "--data", str(traces), "--out", str(out), *FAST,
                             "--batch-size", "2", "--save-steps", "0"],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}\n"  # rank 0 only
    assert len(list(out.rglob("model.safetensors"))) == 1
    assert [row["step"] for row in metrics(out)] == [1, 2]  # one writer
    assert any(not torch.equal(a, b) for a, b in zip(weights(tiny_model_dir).values(), weights(out).values()))


@pytest.mark.parametrize("base_dtype", [torch.bfloat16])
def test_merged_lora_keeps_the_base_dtype_and_only_adapted_weights_change(capfd, tmp_path, tiny_model_dir, traces,
                                                                         base_dtype):
    """A bf16 base trains in float32 on the CPU: its merged model must come out bf16, every other tensor bit-equal to
    the base's (the float32 base is the LoRA test above)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rtool.io.models import save_model

    base_dir = tmp_path / "base"
    save_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=base_dtype),
               AutoTokenizer.from_pretrained(tiny_model_dir), base_dir)
    out = tmp_path / "lora"
    code, _, stderr = run_sft(capfd, "--model", base_dir, "--data", traces, "--out", out, *FAST, "--lora",
                              "--lora-r", "4", "--lora-targets", "q_proj,v_proj", "--merge-lora")
    assert code == 0, stderr
    base, merged = weights(base_dir), weights(out / "merged")
    assert base.keys() == merged.keys()
    assert {tensor.dtype for tensor in merged.values()} == {base_dtype}
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)


def test_rows_over_max_length_are_dropped_and_counted(capfd, tmp_path, tiny_model_dir):
    short = [{"problem": f"{i}+1?", "completion": f"\\boxed{{{i + 1}}}"} for i in range(6)]
    long = {"problem": "9+9?", "completion": "9+9 is " + "very " * 60 + "\\boxed{18}"}
    data = write_rows(tmp_path / "rows.jsonl", short + [long])
    code, _, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "o",
                              *fast(1), "--no-system")
    assert code == 0, stderr
    assert "6 training rows of 7 read" in stderr
    assert "dropped 1 rows longer than --max-length 256 tokens, 14% of the rows" in flat(stderr)

    data = write_rows(tmp_path / "long.jsonl", [long])
    code, _, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "o2", *fast(1))
    assert code == 2
    assert "no training rows (every row is longer than --max-length 256 tokens; raise it or pass --truncation " \
        "keep-start)" in flat(stderr)
    assert not (tmp_path / "o2").exists()

    code, _, stderr = run_sft(capfd, "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "o3",
                              "--truncation", "cut")
    assert code == 2 and "unknown --truncation 'cut' (valid: drop, keep-start)" in flat(stderr)


def test_mask_thought_masks_about_p_of_completion_inputs_only():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 100, (8, 1000))
    labels = input_ids.clone()
    labels[:, :300] = -100  # prompt
    labels[4:, 900:] = -100  # padding
    labels_before = labels.clone()
    masked = mask_thought(input_ids, labels, 0.2, mask_id=0, generator=generator)

    assert torch.equal(labels, labels_before)  # labels are kept
    assert torch.equal(masked[:, :300], input_ids[:, :300])  # prompt untouched
    assert torch.equal(masked[4:, 900:], input_ids[4:, 900:])  # padding untouched
    completion = labels != -100
    changed = masked != input_ids
    assert not (changed & ~completion).any()
    assert (masked[changed] == 0).all()
    assert changed[completion].float().mean().item() == pytest.approx(0.2, abs=0.02)
    assert torch.equal(mask_thought(input_ids, labels, 0.0, mask_id=0), input_ids)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_mask_thought_in_the_training_step_is_keyed_by_step_and_micro_batch(p):
    """The noise of a micro-batch depends on (seed, step, micro-batch), not on how many batches came before in this
    process: a resumed run masks as the uninterrupted one did."""
    from types import SimpleNamespace

    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    examples = [{"input_ids": list(range(10, 410)), "labels": [-100] * 100 + list(range(110, 410))},
                {"input_ids": list(range(10, 210)), "labels": [-100] * 50 + list(range(60, 210))}]
    plain = DataCollatorForLanguageModeling(pad_token_id=1)(examples)
    seen = []
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0),
                              training_step=lambda model, inputs, *rest: seen.append(inputs["input_ids"]))
    apply_mask_thought(trainer, p, mask_id=7, seed=0)
    for step in (0, 0, 1, 0):  # two micro-batches of step 0, one of step 1, then step 0 again as a resumed run
        trainer.state.global_step = step
        trainer.training_step(None, dict(plain))
    for masked in seen:
        changed = masked != plain["input_ids"]
        assert not (changed & (plain["labels"] == -100)).any()
        assert (masked[changed] == 7).all()
        assert changed.sum().item() / (plain["labels"] != -100).sum().item() == pytest.approx(p, abs=0.07)
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[0], seen[2])
    assert torch.equal(seen[3], seen[0])  # step 0's first micro-batch, whatever ran before


def test_rows_piped_in_train_without_data_and_a_terminal_gets_the_flag_named(tmp_path, tiny_model_dir,
                                                                              tiny_task_file):
    """`cat traces.jsonl | rtool sft --model S --out O`: stdin, as every other reader takes it. With nothing piped in
    (a terminal, /dev/null) the error names how to read stdin."""
    from helpers import run_rtool

    out = tmp_path / "piped"
    result = run_rtool("sft", "--model", tiny_model_dir, "--out", out, *fast(1), "--save-steps", "0",
                       input=tiny_task_file.read_bytes(), env=SINGLE_THREAD)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == f"{out}\n"
    assert json.loads((out / "run_settings.json").read_text())["data"] == "-"
    assert "--data not given: reading the rows from stdin" in flat(result.stderr.decode())
    with open(os.devnull, "rb") as nothing:
        refused = subprocess.run([str(Path(sys.executable).with_name("rtool")), "sft", "--model", str(tiny_model_dir),
                                  "--out", str(tmp_path / "o")], stdin=nothing, capture_output=True, text=True)
    assert refused.returncode == 2 and not (tmp_path / "o").exists()
    assert refused.stderr.strip().endswith("--data is required (pass --data or set 'data:' in --config, or pipe the "
                                           "rows in (-d - reads stdin))")
