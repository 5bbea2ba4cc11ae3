"""rtool prm-label: labels from rollout verdicts as pure functions; continuation of a partial assistant message on the
hf backend and over HTTP; exact labels from a scripted policy endpoint; real runs on the tiny model; resume; bad
input."""

import json

import pytest

from helpers import jsonl, last_error_line, run_rtool
from openai_server import serve
from rtool.generate.core import SamplingParams, render_prompts
from rtool.prm.label import Labeling, label_steps, rollout_seeds, step_prefixes
from scripted import scripted_endpoint

# Pure functions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, sep, steps, prefixes", [
    ("a\n\nb\n\nc", "\n\n", ["a", "b", "c"], ["a", "a\n\nb", "a\n\nb\n\nc"]),
    ("  a \n\n\n\n b\n\n", "\n\n", ["a", "b"], ["  a", "  a \n\n\n\n b"]),  # spacing kept as it appeared
    ("x1. y\n2. z", "\n", ["x1. y", "2. z"], ["x1. y", "x1. y\n2. z"]),
    ("\n\n", "\n\n", [], []),
])
def test_step_prefixes_keep_the_text_as_it_appeared(text, sep, steps, prefixes):
    assert step_prefixes(text, sep) == (steps, prefixes)
    for prefix in prefixes:
        assert text.startswith(prefix)


T, F = True, False


@pytest.mark.parametrize("verdicts, final, label_all, labels, values, rollouts", [
    # hard: any rollout right; soft: the share right; last step: the trace's own correctness
    ([[T, F, F, F], [F, F, T, T]], True, False, [1, 1, 1], [0.25, 0.5, 1.0], [4, 4, 0]),
    ([[T, T], [T, F]], False, False, [1, 1, 0], [1.0, 0.5, 0.0], [2, 2, 0]),
    # early stop: after a 0, the later steps (the last one too) are 0 without rollouts
    ([[T, F], [F, F], None, None], True, False, [1, 0, 0, 0, 0], [0.5, 0.0, 0.0, 0.0, 0.0], [2, 2, 0, 0, 0]),
    ([[F, F]], True, False, [0, 0], [0.0, 0.0], [2, 0]),
    # --label-all: every step measured; the last step is the trace's correctness even after a 0
    ([[T, F], [F, F], [F, T]], True, True, [1, 0, 1, 1], [0.5, 0.0, 0.5, 1.0], [2, 2, 2, 0]),
    ([], False, False, [0], [0.0], [0]),  # one step: no rollouts at all
    ([[None, T, None]], True, False, [1, 1], [1 / 3, 1.0], [3, 0]),  # an ungradable rollout is not a correct one
    # a step whose every rollout was truncated (no verdict counts): unknown, and no early stop after it
    ([[], [T, F]], True, False, [None, 1, 1], [None, 0.5, 1.0], [0, 2, 0]),
    ([[], [F]], True, False, [None, 0, 0], [None, 0.0, 0.0], [0, 1, 0]),
])
def test_labels_from_verdicts(verdicts, final, label_all, labels, values, rollouts):
    assert label_steps(verdicts, final, label_all) == (labels, pytest.approx(values), rollouts)


def test_a_step_without_rollouts_before_any_zero_is_a_bug():
    with pytest.raises(ValueError):
        label_steps([None, [T]], True)
    with pytest.raises(ValueError):
        label_steps([[F], None], True, label_all=True)


def test_labeling_asks_one_step_at_a_time_and_stops_early():
    labeling = Labeling(["a", "b", "c", "d"], ["a", "ab", "abc", "abcd"], final_correct=True)
    assert labeling.pending() == [0] and not labeling.done
    assert labeling.pending() == []  # asked once only
    labeling.record(0, [F, T])
    assert labeling.pending() == [1]
    labeling.record(1, [F, F])
    assert labeling.done and labeling.pending() == []
    assert labeling.result() == ([1, 0, 0, 0], [0.5, 0.0, 0.0, 0.0], [2, 2, 0, 0])

    everything = Labeling(["a", "b", "c"], ["a", "ab", "abc"], final_correct=True, label_all=True)
    assert everything.pending() == [0, 1] and not everything.done
    everything.record(1, [T])
    assert not everything.done
    everything.record(0, [F])
    assert everything.done and everything.result() == ([0, 1, 1], [0.0, 1.0, 1.0], [1, 1, 0])


def test_rollout_seeds_are_one_per_trace_sample_step_rollout():
    seeds = {seed for trace in ("a", "b") for sample in (0, 1) for step in (0, 1)
             for seed in rollout_seeds(0, (trace, sample), step, 4)}
    assert len(seeds) == 2 * 2 * 2 * 4
    assert rollout_seeds(0, ("a", 1), 2, 3) == rollout_seeds(0, ("a", 1), 2, 3) != rollout_seeds(1, ("a", 1), 2, 3)


# Continuing a partial assistant message ------------------------------------------------------------------------

QUESTION = [{"role": "user", "content": "What is 2+3?"}]
GREEDY = SamplingParams(n=1, temperature=0, max_new_tokens=8)


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    from rtool.generate.backends import open_backend

    backend = open_backend(tiny_model_dir, "hf", batch_size=4)
    yield backend
    backend.close()


def test_hf_continues_a_partial_assistant_message(hf):
    tokenizer, prefix = hf.tokenizer, "Step 1: 2 + 3 = 5. Zq"
    continued = [*QUESTION, {"role": "assistant", "content": prefix}]
    # The prompt is the question's prompt (ending with the open assistant turn) and the prefix's tokens: no end of
    # turn, no second assistant turn.
    question_ids = render_prompts(tokenizer, [QUESTION])[0]
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    assert render_prompts(tokenizer, [continued])[0] == question_ids + prefix_ids
    # What the backend draws is what the model writes after exactly those ids.
    import torch

    ids = torch.tensor([question_ids + prefix_ids], device=hf.model.device)
    out = hf.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
    if tokenizer.eos_token_id in out:
        out = out[: out.index(tokenizer.eos_token_id)]
    [[continuation]], [[restart]] = hf.generate([continued], GREEDY), hf.generate([QUESTION], GREEDY)
    assert continuation.text == tokenizer.decode(out)
    # The untrained model repeats the last token it sees: continued, it writes on after "q"; a new answer would not.
    assert continuation.text.startswith("q") and continuation.text != restart.text


def test_a_continuation_is_drawn_the_same_whatever_its_batch(hf):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=3)
    continued = [*QUESTION, {"role": "assistant", "content": "Step one"}]
    together = hf.generate([QUESTION, continued], params, seeds=[[1, 2], [3, 4]])
    alone = hf.generate([continued], params, seeds=[[3, 4]])
    assert [c.text for c in together[1]] == [c.text for c in alone[0]]


def test_openai_backend_sends_continue_final_message_and_gets_the_continuation(hf):
    from rtool.generate.backends import open_backend

    continued = [*QUESTION, {"role": "assistant", "content": "Step 1: Zq"}]
    with serve(hf) as server:
        backend = open_backend(server.url)
        [[over_http]] = backend.generate([continued], GREEDY)
        [[fresh]] = backend.generate([QUESTION], GREEDY)
        backend.close()
    [[local]] = hf.generate([continued], GREEDY)
    assert over_http.text == local.text and over_http.text.startswith("q")
    bodies = [body for _, _, _, body in server.chat_requests()]
    assert bodies[0]["continue_final_message"] is True and bodies[0]["add_generation_prompt"] is False
    assert bodies[0]["messages"][-1] == {"role": "assistant", "content": "Step 1: Zq"}
    assert "continue_final_message" not in bodies[1] and fresh.text != over_http.text


def test_an_endpoint_that_refuses_continuation_is_one_clear_error(hf):
    from rtool.generate.backends import open_backend
    from rtool.errors import UserError

    with serve(hf, refuse_fields=("continue_final_message",)) as server:
        backend = open_backend(server.url)
        with pytest.raises(UserError, match="cannot continue a partial assistant message"):
            backend.generate([[*QUESTION, {"role": "assistant", "content": "Step"}]], GREEDY)
        assert backend.generate([QUESTION], GREEDY)[0][0].finish_reason in ("stop", "length")
        backend.close()


# The command ---------------------------------------------------------------------------------------------------

SCRIPTED_TRACES = [
    # right answer; step 1 recovers half the time, step 2 never: [1, 0, 0] (label-all: [1, 0, 1])
    {"id": "add", "sample": 0, "problem": "What is 2 + 2?", "answer": "4",
     "completion": "Two and two.\n\nThat is five.\n\nNo, \\boxed{4}"},
    # wrong answer; its first step always recovers: [1, 0]
    {"id": "add", "sample": 1, "problem": "What is 2 + 2?", "answer": "4",
     "completion": "Add them.\n\n\\boxed{5}"},
]
POLICY_SCRIPT = {
    "Two and two.": [" So \\boxed{4}", " So \\boxed{22}"],
    "Two and two.\n\nThat is five.": [" \\boxed{5}", " Done."],
    "Add them.": [" 2 + 2 = \\boxed{4}"],
}


def _lines(rows):
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.mark.parametrize("label_all", [False, True])
def test_scripted_policy_gives_exact_labels(label_all):
    with scripted_endpoint(POLICY_SCRIPT, name="scripted-policy") as server:
        result = run_rtool("prm-label", "--policy", server.url, "-k", 2, "--batch-size", 1, "--temperature", 0.7,
                           "--max-new-tokens", 1024,
                           *(["--label-all"] if label_all else []), input=_lines(SCRIPTED_TRACES))
    assert result.returncode == 0, result.stderr.decode()
    assert server.backend.unscripted == []
    rows = jsonl(result.stdout)
    assert [{k: row[k] for k in source} for row, source in zip(rows, SCRIPTED_TRACES)] == SCRIPTED_TRACES
    first, second = rows
    assert first["steps"] == ["Two and two.", "That is five.", "No, \\boxed{4}"]
    assert first["step_labels"] == ([1, 0, 1] if label_all else [1, 0, 0])
    assert first["step_values"] == ([0.5, 0.0, 1.0] if label_all else [0.5, 0.0, 0.0])
    assert first["step_rollouts"] == [2, 2, 0]
    assert (second["steps"], second["step_labels"], second["step_values"]) == (["Add them.", "\\boxed{5}"],
                                                                               [1, 0], [1.0, 0.0])
    assert first["prm_labeling"] == {
        "backend": "openai", "policy": "scripted-policy", "k": 2, "temperature": 0.7, "top_p": 0.95, "top_k": 0,
        "min_p": 0.0, "repetition_penalty": 1.0, "max_new_tokens": 1024, "seed": 0, "step_sep": "\n\n",
        "label_all": label_all, "count_truncated": False,
        "system": "Please reason step by step, and put your final answer within \\boxed{}."}
    bodies = [body for _, _, _, body in server.chat_requests()]
    assert len(bodies) == 6  # 2 rollouts of 3 prefixes; the last steps need none
    for body in bodies:
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
        assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant"]
    assert len({body["seed"] for body in bodies}) == 6


def test_truncated_rollouts_decide_no_label_and_are_counted(tmp_path):
    from rtool.generate.core import Completion
    from rtool.train.prm import IGNORE, row_steps
    from rtool.io.records import Row

    # A correct trace whose first step's rollouts were all cut by --max-new-tokens, and one of the second's: counted
    # as wrong they made it [0, 0, 0].
    trace = {"id": "t", "problem": "What is 2 + 2?", "answer": "4",
             "completion": "Two and two.\n\nThat is four.\n\nSo \\boxed{4}"}
    cut = Completion(" Let me think about this very", "length", 8)
    script = {"Two and two.": [cut, cut], "Two and two.\n\nThat is four.": [cut, " \\boxed{4}"]}
    outcomes = {}
    for flags in ([], ["--count-truncated"]):
        with scripted_endpoint(script, name="scripted-policy") as server:
            result = run_rtool("prm-label", "--policy", server.url, "-k", 2, "--batch-size", 1, "--max-new-tokens", 8,
                               *flags, input=_lines([trace]))
        assert result.returncode == 0, result.stderr.decode()
        (row,) = jsonl(result.stdout)
        outcomes[tuple(flags)] = row
        assert row["prm_labeling"]["count_truncated"] == bool(flags)
    default, counted = outcomes[()], outcomes[("--count-truncated",)]
    assert (default["step_labels"], default["step_values"]) == ([None, 1, 1], [None, 1.0, 1.0])
    assert (default["step_rollouts"], default["step_truncated"]) == ([0, 1, 0], [2, 1, 0])
    assert (counted["step_labels"], counted["step_rollouts"], counted["step_truncated"]) == ([0, 0, 0], [2, 0, 0],
                                                                                            [2, 0, 0])
    stderr = result.stderr.decode()  # the --count-truncated run: 2 of its 2 rollouts cut
    assert "2 of 2 rollouts (100.0%) were cut by --max-new-tokens 8" in stderr
    # prm-train reads the unknown label as a step not trained on.
    steps, targets, labels = row_steps(Row(default), "hard")
    assert (targets, labels) == ([float(IGNORE), 1.0, 1.0], [IGNORE, 1, 1])
    steps, targets, labels = row_steps(Row(default), "soft")
    assert (targets, labels) == ([float(IGNORE), 1.0, 1.0], [IGNORE, 1, 1])


def test_rows_without_id_resume_and_overwrite(tmp_path):
    # Keyed as the run keys them: a prompt's hash for the id, as distill makes one.
    rows = [{"problem": "What is 2 + 2?", "answer": "4", "sample": s, "completion": f"Add them.\n\n\\boxed{{{a}}}"}
            for s, a in enumerate(["4", "5"])]
    out = tmp_path / "steps.jsonl"
    script = {"Add them.": [" 2 + 2 = \\boxed{4}"]}
    with scripted_endpoint(script, name="scripted-policy") as server:
        label = ["prm-label", "--policy", server.url, "-k", 1, "--batch-size", 1, "-o", out]
        first = run_rtool(*label, input=_lines(rows[:1]))
        assert first.returncode == 0, first.stderr.decode()
        resumed = run_rtool(*label, "--resume", input=_lines(rows))
        assert resumed.returncode == 0, resumed.stderr.decode()
        assert "resuming: 1 traces" in resumed.stderr.decode()
        assert [(row["sample"], row["step_labels"]) for row in jsonl(out.read_text())] == [(0, [1, 1]), (1, [1, 0])]
        out.write_text("not what prm-label writes\n")  # --overwrite never reads the old file
        again = run_rtool(*label, "--overwrite", input=_lines(rows))
        assert again.returncode == 0, again.stderr.decode()
        assert [row["sample"] for row in jsonl(out.read_text())] == [0, 1]


def _trace_rows(task_rows, count):
    """Distill-like traces of the tiny task: a few steps each, every other one with the right answer."""
    rows = []
    for i, task in enumerate(task_rows[:count]):
        answer = task["answer"] if i % 2 == 0 else task["answer"] + "1"
        rows.append({**task, "sample": i % 2, "completion": f"First, read it.\n\nThen work.\n\nSo \\boxed{{{answer}}}"})
    return rows


def test_tiny_policy_run_writes_labels_of_the_right_lengths(tmp_path, tiny_model_dir, tiny_task_rows):
    traces = _trace_rows(tiny_task_rows, 4)
    # 6 new tokens: most rollouts are cut; --count-truncated grades them all, so every step has 3 verdicts.
    result = run_rtool("prm-label", "--policy", tiny_model_dir, "--backend", "hf", "-k", 3, "--max-new-tokens", 6,
                       "--label-all", "--temperature", 1.0, "--count-truncated", input=_lines(traces))
    assert result.returncode == 0, result.stderr.decode()
    rows = jsonl(result.stdout)
    assert len(rows) == 4
    for i, (row, source) in enumerate(zip(rows, traces)):
        assert {k: row[k] for k in source} == source
        assert row["steps"] == ["First, read it.", "Then work.", row["completion"].split("\n\n")[-1]]
        assert len(row["step_labels"]) == len(row["step_values"]) == len(row["step_rollouts"]) == 3
        assert row["step_rollouts"] == [3, 3, 0]
        assert all(0 <= cut <= 3 for cut in row["step_truncated"]) and row["step_truncated"][-1] == 0
        assert all(v * 3 == round(v * 3) and label == int(v > 0)
                   for label, v in zip(row["step_labels"], row["step_values"]))
        assert row["step_labels"][-1] == (1 if i % 2 == 0 else 0)  # the trace's own correctness
        assert row["prm_labeling"]["policy"] == str(tiny_model_dir) and row["prm_labeling"]["backend"] == "hf"
    assert "prm-label: 4 traces, 12 steps" in result.stderr.decode()


def test_over_http_labels_as_the_local_policy_does(tmp_path, tiny_model_dir, tiny_task_rows, hf):
    traces = _lines(_trace_rows(tiny_task_rows, 2))
    common = ["-k", 1, "--temperature", 0, "--max-new-tokens", 6, "--label-all"]
    local = run_rtool("prm-label", "--policy", tiny_model_dir, "--backend", "hf", *common, input=traces)
    with serve(hf) as server:
        remote = run_rtool("prm-label", "--policy", server.url, *common, input=traces)
    assert local.returncode == remote.returncode == 0, remote.stderr.decode()
    strip = lambda rows: [{k: v for k, v in row.items() if k != "prm_labeling"} for row in jsonl(rows)]  # noqa: E731
    assert strip(local.stdout) == strip(remote.stdout)
    assert all(body["continue_final_message"] for _, _, _, body in server.chat_requests())


def test_resume_from_a_partial_file_writes_what_one_run_writes(tmp_path, tiny_model_dir, tiny_task_rows):
    source = tmp_path / "traces.jsonl"
    source.write_text(_lines(_trace_rows(tiny_task_rows, 5)))
    whole, out = tmp_path / "whole.jsonl", tmp_path / "steps.jsonl"
    flags = ["prm-label", "--policy", tiny_model_dir, "--backend", "hf", "--max-new-tokens", 6, "--label-all",
             "--temperature", 1.0, "--batch-size", 2, "-i", source]
    common = [*flags, "-k", 2]
    assert run_rtool(*common, "-o", whole).returncode == 0
    lines = whole.read_text().splitlines(keepends=True)
    # A run killed after 2 rows and in the middle of writing the third.
    out.write_text(lines[0] + lines[1] + lines[2][:40])
    refused = run_rtool(*common, "-o", out)
    assert refused.returncode == 2 and "already holds 2 labelled traces" in last_error_line(refused)
    other = run_rtool(*flags, "-k", 3, "-o", out, "--resume")
    assert other.returncode == 2 and "other labeling settings" in last_error_line(other)
    resumed = run_rtool(*common, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert "resuming: 2 traces" in resumed.stderr.decode()
    assert out.read_text() == whole.read_text()  # nothing lost, nothing doubled, the same rollouts drawn


def test_bad_input_is_one_line_exit_2(tmp_path, tiny_model_dir, tiny_task_rows):
    good = _trace_rows(tiny_task_rows, 1)[0]
    out = tmp_path / "steps.jsonl"

    def run(*args, rows=(good,)):
        return run_rtool("prm-label", "--max-new-tokens", 4, *args, input=_lines(rows))

    for args, message in [
        (["--policy", tiny_model_dir, "--backend", "hf", "-k", 0], "-k must be at least 1, got 0"),
        (["--policy", tmp_path / "no-such-model"], "no-such-model"),
    ]:
        result = run(*args, "-o", out)
        assert result.returncode == 2 and message in last_error_line(result), result.stderr.decode()
        assert len(result.stderr.decode().strip().splitlines()) == 1 and not out.exists()
    ungraded = {"id": "u", "prompt": "Say hi", "completion": "Hi.\n\nThere."}
    result = run("--policy", tiny_model_dir, "--backend", "hf", "-k", 1, "-o", out, rows=[good, ungraded])
    assert result.returncode == 2
    assert last_error_line(result).startswith("rtool: error: <stdin>:2: no gold answer")
    assert not out.exists()  # a run that wrote nothing leaves no (empty) file
    skipped = run("--policy", tiny_model_dir, "--backend", "hf", "-k", 1, "--skip-ungraded", rows=[ungraded, good])
    assert skipped.returncode == 0 and [r["id"] for r in jsonl(skipped.stdout)] == [good["id"]]
    assert "dropped 1 rows without a gold answer (first: <stdin>:1)" in skipped.stderr.decode()
    empty = run("--policy", tiny_model_dir, "--backend", "hf", "-k", 1, rows=[{**good, "completion": "\n\n"}])
    assert empty.returncode == 2 and "the completion has no steps" in last_error_line(empty)
    twice = run("--policy", tiny_model_dir, "--backend", "hf", "-k", 1, rows=[good, good])
    assert twice.returncode == 2 and "was already read at <stdin>:1" in last_error_line(twice)
