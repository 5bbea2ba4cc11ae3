"""rtool nll: the student's mean negative log-likelihood per completion token, as sft tokenizes the row; checked
against a computation by hand with transformers, across batch sizes (padding), and on its bad input.

Exact comparisons pin the CPU and float32."""

import json

import pytest

from helpers import jsonl, last_error_line, run_rtool
from rtool.generate.traces import REASONING_SYSTEM_PROMPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PINNED = ("--device", "cpu", "--dtype", "float32")


@pytest.fixture(scope="module")
def traces(tiny_task_rows):
    """Trace rows of different lengths: bare prompts (sft adds the system prompt), one recorded conversation."""
    rows = [{"id": row["id"], "prompt": row["problem"], "completion": row["solution"]} for row in tiny_task_rows[:5]]
    rows[2]["completion_tokens"] = 7  # kept as it is
    rows.append({"id": "recorded", "prompt": "ignored: prompt_messages win", "completion": "So \\boxed{4}.",
                 "prompt_messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    rows.append({"id": "short", "prompt": "1+1?", "completion": "2"})
    return rows


def by_hand(model_dir, row) -> tuple[float, int]:
    """Mean nll over the completion and end of turn: the ChatML conversation with the answer, scored token by token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    messages = row.get("prompt_messages") or [{"role": "system", "content": REASONING_SYSTEM_PROMPT},
                                              {"role": "user", "content": row["prompt"]}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": row["completion"]}],
                                         tokenize=False)
    assert full.startswith(prompt)
    start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logprobs = model(input_ids=ids).logits[0].log_softmax(-1)
    losses = [-logprobs[t - 1, ids[0, t]].item() for t in range(start, ids.shape[1])]
    return sum(losses) / len(losses), len(losses)


def run_nll(tmp_path, model_dir, rows, *args):
    data = tmp_path / "traces.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_rtool("nll", "--model", model_dir, "-i", data, *PINNED, *args)
    assert result.returncode == 0, result.stderr.decode()
    return jsonl(result.stdout)


def test_nll_matches_a_computation_by_hand_and_keeps_the_rows(tmp_path, tiny_model_dir, traces):
    out = run_nll(tmp_path, tiny_model_dir, traces, "--batch-size", "3")
    assert [row["id"] for row in out] == [row["id"] for row in traces]  # input order
    for row, scored in zip(traces, out):
        expected, tokens = by_hand(tiny_model_dir, row)
        assert scored["nll"] == pytest.approx(expected, abs=1e-4), row["id"]
        assert scored["completion_tokens"] == row.get("completion_tokens", tokens)
        assert {key: scored[key] for key in row} == row


def test_batch_size_does_not_change_nll(tmp_path, tiny_model_dir, traces):
    one = run_nll(tmp_path, tiny_model_dir, traces, "--batch-size", "1")
    four = run_nll(tmp_path, tiny_model_dir, traces, "--batch-size", "4")
    assert [row["nll"] for row in four] == pytest.approx([row["nll"] for row in one], abs=1e-5)


def test_scorer_runs_on_the_models_device(tiny_model_dir, traces):
    """In process on the default device (a GPU where there is one): inputs follow the model there."""
    from rtool.grade.fields import FieldMap
    from rtool.io.models import load_model
    from rtool.train.nll import NLLScorer

    model, tokenizer = load_model(tiny_model_dir, dtype="float32")
    scorer = NLLScorer(model, tokenizer, FieldMap(), REASONING_SYSTEM_PROMPT, batch_size=2)
    encoded = [scorer.encode(row) for row in traces]
    scored = {index: nll for batch in scorer.score(encoded) for index, nll, _ in batch}
    expected = by_hand(tiny_model_dir, traces[0])[0]
    assert scored[0] == pytest.approx(expected, abs=1e-3)
    assert scorer.recorded == 1


def test_row_without_completion_is_one_line_error(tmp_path, tiny_model_dir, traces):
    data = tmp_path / "bad.jsonl"
    rows = [traces[0], {"id": "x", "prompt": "no answer here"}, traces[1]]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "scored.jsonl"
    result = run_rtool("nll", "--model", tiny_model_dir, "-i", data, "-o", out, *PINNED)
    assert result.returncode == 2
    line = last_error_line(result)
    assert "bad.jsonl:2" in line and "completion" in line, line
    assert "Traceback" not in result.stderr.decode()
    assert not out.exists()  # nothing partial left as finished
    skipped = run_rtool("nll", "--model", tiny_model_dir, "-i", data, "--skip-bad", *PINNED)
    assert skipped.returncode == 0, skipped.stderr.decode()
    assert [row["id"] for row in jsonl(skipped.stdout)] == [traces[0]["id"], traces[1]["id"]]
    assert "skipped 1" in skipped.stderr.decode()


def test_help_shows_the_pipeline():
    result = run_rtool("nll", "--help")
    assert result.returncode == 0
    assert "rtool nll --model S < traces.jsonl | rtool select --per-prompt 1 --prefer nll" in result.stdout.decode()


def test_a_few_sft_steps_on_a_trace_lower_its_nll(tmp_path, capfd, tiny_model_dir, traces):
    """nll measures what sft trains: after 5 sft steps on one trace (as sft tokenizes it: recorded prompt_messages,
    completion, end of turn), the student's nll of that trace is lower, by more than float noise."""
    from helpers import run_in_process

    trace = traces[5]  # the row with prompt_messages: the conversation sft trains on is the recorded one
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps(trace) + "\n")
    out = tmp_path / "trained"
    code, _, err = run_in_process(capfd, "sft", "--model", tiny_model_dir, "--data", data, "--out", out,
                                  "--max-steps", 5, "--lr", "1e-2", "--warmup-ratio", 0, "--batch-size", 1,
                                  "--logging-steps", 1, "--max-length", 256)
    assert code == 0, err
    before = run_nll(tmp_path, tiny_model_dir, [trace])[0]["nll"]
    after = run_nll(tmp_path, out, [trace])[0]["nll"]
    assert after < before - 0.1, (before, after)
