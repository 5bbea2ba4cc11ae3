"""rtool distill records what the teacher saw and how it sampled, draws the same sample for (id, sample) however
the run is cut, and never mixes or doubles samples in an --out file."""

import json
import re

import pytest

from helpers import jsonl, run_in_process, run_rtool
from openai_server import serve
from rtool.generate.traces import REASONING_SYSTEM_PROMPT


def rows_text(rows):
    return "".join(json.dumps(row) + "\n" for row in rows)


def by_key(rows):
    return {(r["id"], r["sample"]): r for rows_ in [rows] for r in rows_}


@pytest.fixture(scope="module")
def endpoint(tiny_model_dir):
    from rtool.generate.backends import open_backend

    with serve(open_backend(tiny_model_dir, "hf", batch_size=4)) as server:
        yield server


def test_rows_record_the_conversation_sent_and_the_sampling_settings(endpoint):
    rows = [{"id": "a", "problem": "What is 2 + 2?", "answer": "4"},
            {"id": "b", "messages": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "What is 3 + 5?"}], "answer": "8"}]
    before = len(endpoint.chat_requests())
    result = run_rtool("distill", "--teacher", endpoint.url, "-n", 2, "--max-new-tokens", 5, "--temperature", 0.7,
                       "--top-k", 7, "--seed", 3, input=rows_text(rows))
    assert result.returncode == 0, result.stderr.decode()
    out = jsonl(result.stdout)
    sent = [body["messages"] for _, _, _, body in endpoint.chat_requests()[before:]]
    assert sorted(json.dumps(m) for m in sent) == sorted(json.dumps(r["prompt_messages"]) for r in out)
    a = next(r for r in out if r["id"] == "a")
    assert a["prompt_messages"] == [{"role": "system", "content": REASONING_SYSTEM_PROMPT},
                                    {"role": "user", "content": "What is 2 + 2?"}]
    b = next(r for r in out if r["id"] == "b")
    assert b["prompt_messages"][0] == {"role": "system", "content": "Be brief."}  # the row's own system wins
    assert a["sampling"] == {"backend": "openai", "teacher": endpoint.backend.name, "temperature": 0.7,
                             "top_p": 0.95, "top_k": 7, "min_p": 0.0, "repetition_penalty": 1.0,
                             "max_new_tokens": 5, "seed": 3, "system": REASONING_SYSTEM_PROMPT, "split": "",
                             "subset": "", "chat_template": "", "prompt_template": ""}


def test_a_resumed_run_draws_what_an_uninterrupted_one_would(tmp_path, capfd, tiny_model_dir, tiny_task_rows):
    rows = tiny_task_rows[:6]
    common = ["distill", "-t", tiny_model_dir, "-n", 2, "--max-new-tokens", 10, "--temperature", 1.0]
    whole, prompts = tmp_path / "whole.jsonl", tmp_path / "prompts.jsonl"
    prompts.write_text(rows_text(rows))
    # The uninterrupted run in this process; the cut one and its resume in their own, as a user runs them.
    assert run_in_process(capfd, *common, "-i", prompts, "-o", whole)[0] == 0
    cut = tmp_path / "cut.jsonl"
    assert run_rtool(*common, "-o", cut, input=rows_text(rows[:2])).returncode == 0
    result = run_rtool(*common, "-o", cut, "--resume", input=rows_text(rows))
    assert result.returncode == 0, result.stderr.decode()
    expected, got = by_key(jsonl(whole.read_text())), by_key(jsonl(cut.read_text()))
    assert got.keys() == expected.keys() and len(got) == 12
    assert {k: r["completion"] for k, r in got.items()} == {k: r["completion"] for k, r in expected.items()}


def test_prompts_in_separate_chunks_do_not_share_a_seed(tiny_model_dir):
    # The same question under two ids, one prompt per chunk: one seed for every chunk gave both the same samples.
    rows = [{"id": "x", "prompt": "Say something"}, {"id": "y", "prompt": "Say something"}]
    result = run_rtool("distill", "-t", tiny_model_dir, "-n", 2, "--max-new-tokens", 12, "--temperature", 1.0,
                       "--batch-size", 1, input=rows_text(rows))
    out = jsonl(result.stdout)
    texts = {r["id"]: [s["completion"] for s in out if s["id"] == r["id"]] for r in rows}
    assert texts["x"] != texts["y"]


def test_out_with_samples_is_refused_unless_resume_or_overwrite(tmp_path, capfd, tiny_model_dir, tiny_task_rows):
    out, prompts = tmp_path / "traces.jsonl", tmp_path / "prompts.jsonl"
    prompts.write_text(rows_text(tiny_task_rows[:2]))
    common = ["-t", tiny_model_dir, "-n", 2, "--max-new-tokens", 4, "-i", prompts, "-o", out]
    assert run_in_process(capfd, "distill", *common)[0] == 0
    before = out.read_text()
    code, _, stderr = run_in_process(capfd, "distill", *common)
    assert code == 2 and "already holds 4 samples" in stderr.strip().splitlines()[-1]
    assert out.read_text() == before  # nothing appended: a rerun once doubled samples_per_prompt
    code, _, stderr = run_in_process(capfd, "distill", *common, "--overwrite", "--seed", 5)
    assert code == 0, stderr
    rows = jsonl(out.read_text())
    assert len(rows) == 4 and {r["sampling"]["seed"] for r in rows} == {5}


@pytest.fixture(scope="module")
def one_sample_run(tmp_path_factory, tiny_model_dir, tiny_task_rows):
    """A finished `distill --resume -o` run of one prompt, its flags, and the input of a longer run."""
    work = tmp_path_factory.mktemp("resume-settings")
    out, prompts = work / "traces.jsonl", work / "prompts.jsonl"
    prompts.write_text(rows_text(tiny_task_rows[:3]))
    common = ["-t", tiny_model_dir, "-n", 1, "--max-new-tokens", 4, "-o", out, "--resume"]
    assert run_rtool("distill", *common, input=rows_text(tiny_task_rows[:1])).returncode == 0
    return out, prompts, common


# The refusal is a flag check before any sampling: in this process (a subprocess per case cost ~4 s of imports).
@pytest.mark.parametrize("changed, key", [(["--temperature", "0.5"], "temperature"), (["--top-p", "0.5"], "top_p"),
                                          (["--no-system"], "system"), (["--seed", "1"], "seed")])
def test_resume_with_other_sampling_settings_is_an_error(capfd, one_sample_run, changed, key):
    out, prompts, common = one_sample_run
    before = out.read_text()
    code, _, stderr = run_in_process(capfd, "distill", *common, *changed, "-i", prompts)
    assert code == 2
    line = stderr.strip().splitlines()[-1]
    assert "--resume with other sampling settings" in line and f"{key} " in line and f"{out}:1:" in line
    assert out.read_text() == before and len(jsonl(before)) == 1


def test_several_greedy_samples_warn(tiny_model_dir):
    result = run_rtool("distill", "-t", tiny_model_dir, "-n", 2, "--temperature", 0, "--max-new-tokens", 3,
                       input=json.dumps({"prompt": "hi"}) + "\n")
    assert result.returncode == 0
    assert "every sample of a prompt is the same greedy answer" in " ".join(result.stderr.decode().split())


def test_files_with_and_without_a_system_prompt_load_together_in_datasets(tmp_path, capfd, tiny_model_dir,
                                                                          tiny_task_rows):
    """`datasets` reads a set of JSONL files with the first file's schema: a key null in one file and a string in
    the next would not load (sampling.system once was)."""
    import datasets

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(rows_text(tiny_task_rows[:2]))
    bare, briefed = tmp_path / "bare.jsonl", tmp_path / "briefed.jsonl"
    common = ["distill", "-t", tiny_model_dir, "-i", prompts, "-n", 1, "--max-new-tokens", 4, "--temperature", 0]
    assert run_in_process(capfd, *common, "--no-system", "-o", bare)[0] == 0
    assert run_in_process(capfd, *common, "--system", "Be brief.", "-o", briefed)[0] == 0
    loaded = datasets.load_dataset("json", data_files=[str(bare), str(briefed)], split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert [row["system"] for row in loaded["sampling"]] == ["", "", "Be brief.", "Be brief."]


def test_a_budget_that_cuts_the_samples_warns_once_naming_the_flag(tmp_path, capfd, tiny_model_dir, tiny_task_rows):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(rows_text(tiny_task_rows[:2]))
    code, _, stderr = run_in_process(capfd, "distill", "-t", tiny_model_dir, "-i", prompts, "-n", 2,
                                     "--max-new-tokens", 2, "-o", tmp_path / "cut.jsonl")
    assert code == 0, stderr
    warnings = re.findall(r"(\d+)% of samples \((\d) of 4\) ended at --max-new-tokens 2 .*?: raise it", " ".join(stderr.split()))
    assert len(warnings) == 1 and int(warnings[0][1]) >= 1  # one warning, whatever the share (an early EOS is rare)


def test_the_truncation_warning_starts_above_five_percent():
    import logging

    from rtool.generate.traces import warn_truncated
    from rtool.log import logger

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        warn_truncated(5, 100, 256)  # a few long outliers: normal
        warn_truncated(0, 0, 256)
        assert records == []
        warn_truncated(12, 100, 256)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage()[:56] for r in records] == ["12% of samples (12 of 100) ended at --max-new-tokens 256"]


@pytest.fixture(scope="module")
def split_run(tmp_path_factory, tiny_model_dir, tiny_task_rows):
    """A finished distill of a data folder's test split through a prompt template and a chat template: (its output,
    the flags that made it, the folder, the two template files)."""
    work = tmp_path_factory.mktemp("split-run")
    data = work / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(rows_text(tiny_task_rows[:2]))
    (data / "test.jsonl").write_text(rows_text(tiny_task_rows[2:4]))
    prompt_template, chat_template = work / "ask.j2", work / "chat.jinja"
    prompt_template.write_text("Solve: {{ problem }}")
    chat_template.write_text((tiny_model_dir / "chat_template.jinja").read_text())
    out = work / "traces.jsonl"
    flags = ["-t", tiny_model_dir, "-i", data, "--split", "test", "-n", 1, "--max-new-tokens", 3, "-o", out,
             "--prompt-template", prompt_template, "--chat-template", chat_template]
    assert run_rtool("distill", *flags).returncode == 0
    return out, flags, data, prompt_template, chat_template


def test_rows_record_the_split_and_the_templates(split_run):
    import hashlib

    out, _, _, prompt_template, chat_template = split_run
    rows = jsonl(out.read_text())
    assert len(rows) == 2 and rows[0]["prompt_messages"][-1]["content"].startswith("Solve: ")
    for row in rows:
        recorded = row["sampling"]
        assert (recorded["split"], recorded["subset"]) == ("test", "")
        assert recorded["prompt_template"] == "sha256:" + hashlib.sha256(prompt_template.read_bytes()).hexdigest()
        assert recorded["chat_template"] == "sha256:" + hashlib.sha256(chat_template.read_bytes()).hexdigest()


def test_resume_refuses_another_split_or_template_and_takes_the_same_text_from_another_path(tmp_path, capfd,
                                                                                           split_run):
    out, flags, data, prompt_template, chat_template = split_run
    before = out.read_text()
    moved = tmp_path / "elsewhere.j2"
    moved.write_text(prompt_template.read_text())
    code, _, stderr = run_in_process(capfd, "distill", *flags, "--resume", "--prompt-template", moved)
    assert code == 0, stderr  # the same template under another name: nothing to redo
    edited = tmp_path / "edited.j2"
    edited.write_text("Solve this: {{ problem }}")
    other_chat = tmp_path / "chat.jinja"
    other_chat.write_text(chat_template.read_text() + "{# edited #}")  # renders the same; another file all the same
    for changed, key in ((["--split", "train"], "split"), (["--prompt-template", edited], "prompt_template"),
                         (["--chat-template", other_chat], "chat_template")):
        code, _, stderr = run_in_process(capfd, "distill", *flags, "--resume", *changed)
        line = stderr.strip().splitlines()[-1]
        assert code == 2 and "--resume with other sampling settings" in line and f"{key} " in line, (key, stderr)
    assert out.read_text() == before


def test_a_file_from_before_split_and_templates_were_recorded_still_resumes(tmp_path, capfd, tiny_model_dir,
                                                                          tiny_task_rows):
    from rtool.generate.traces import LATER_SAMPLING_KEYS

    prompts, out = tmp_path / "prompts.jsonl", tmp_path / "old.jsonl"
    prompts.write_text(rows_text(tiny_task_rows[:1]))
    common = ["distill", "-t", tiny_model_dir, "-n", 1, "--max-new-tokens", 3, "-o", out]
    assert run_in_process(capfd, *common, "-i", prompts)[0] == 0
    old = [{**row, "sampling": {k: v for k, v in row["sampling"].items() if k not in LATER_SAMPLING_KEYS}}
           for row in jsonl(out.read_text())]
    out.write_text(rows_text(old))  # as rtool wrote it before
    prompts.write_text(rows_text(tiny_task_rows[:2]))
    code, _, stderr = run_in_process(capfd, *common, "-i", prompts, "--resume")
    assert code == 0, stderr
    assert "written by an older rtool" in " ".join(stderr.split())
    rows = jsonl(out.read_text())
    assert len(rows) == 2 and rows[1]["sampling"] == old[0]["sampling"]  # one schema in the file
    code, _, stderr = run_in_process(capfd, *common, "-i", prompts, "--resume", "--seed", 9)
    assert code == 2 and "seed 0 -> 9" in stderr.strip().splitlines()[-1]  # the rest is still compared
