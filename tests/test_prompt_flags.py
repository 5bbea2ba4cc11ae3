"""Flags that shape what a model sees or runs: --system / --no-system, --base-url, --answer-field and
--trust-remote-code, checked where their effect shows (the requests an endpoint receives, grades, code executed)."""

import json
import shutil

import pytest

from helpers import jsonl, run_rtool
from openai_server import serve
from rtool.generate.traces import REASONING_SYSTEM_PROMPT

ROWS = [{"id": "a", "problem": "What is 2 + 2?", "answer": "4"}, {"id": "b", "problem": "What is 3 + 5?", "answer": "8"}]
ROWS_JSONL = "".join(json.dumps(row) + "\n" for row in ROWS)


@pytest.fixture(scope="module")
def endpoint(tiny_model_dir):
    from rtool.generate.backends import open_backend

    with serve(open_backend(tiny_model_dir, "hf", batch_size=4)) as server:
        yield server


def sent_messages(server, since: int) -> list[list[dict]]:
    """The `messages` of each chat request the server received after the first `since` requests."""
    return [body["messages"] for _, _, _, body in server.chat_requests()[since:]]


@pytest.mark.parametrize("command", ["distill", "eval"])
@pytest.mark.parametrize("flags, expected_system", [
    ([], REASONING_SYSTEM_PROMPT),
    (["--system", "Answer in one line."], "Answer in one line."),
    (["--no-system"], None),
])
def test_system_prompt_flags_decide_the_messages_sent(endpoint, command, flags, expected_system):
    model_flag = "--teacher" if command == "distill" else "--model"
    extra = [] if command == "distill" else ["--bench", "-"]
    before = len(endpoint.chat_requests())
    # --base-url with a model name, not a URL as the model: the other way to reach an endpoint.
    result = run_rtool(command, model_flag, endpoint.backend.name, "--base-url", endpoint.url, "-n", 1,
                       "--max-new-tokens", 4, *extra, *flags, input=ROWS_JSONL)
    assert result.returncode == 0, result.stderr.decode()
    sent = sent_messages(endpoint, before)
    assert len(sent) == len(ROWS)
    for messages in sent:
        user = messages[-1]
        assert user["role"] == "user" and user["content"] in {row["problem"] for row in ROWS}
        if expected_system is None:
            assert len(messages) == 1
        else:
            assert messages[:-1] == [{"role": "system", "content": expected_system}]


def test_answer_field_names_the_gold(tmp_path):
    rows = [{"q": "What is 2 + 2?", "completion": "so \\boxed{4}", "final": "4", "answer": "5"},
            {"q": "What is 3 + 5?", "completion": "so \\boxed{7}", "final": "8", "answer": "7"}]
    records = tmp_path / "graded.jsonl"
    result = run_rtool("eval", "--prompt-field", "q", "--answer-field", "final", "--records", records,
                       input="".join(json.dumps(row) + "\n" for row in rows))
    assert result.returncode == 0, result.stderr.decode()
    # Graded against `final`, not the auto-detected `answer` (which would flip both grades).
    assert [row["correct"] for row in jsonl(records.read_text())] == [True, False]
    assert json.loads(result.stdout)["pass@1"] == 0.5


def test_answer_field_missing_names_line_and_field():
    result = run_rtool("eval", "--answer-field", "final", input=json.dumps({"problem": "x", "completion": "1"}) + "\n")
    assert result.returncode == 2
    line = result.stderr.decode().strip().splitlines()[-1]
    assert "<stdin>:1" in line and "final" in line and "Traceback" not in result.stderr.decode()


@pytest.fixture
def model_with_custom_code(tiny_model_dir, tmp_path):
    """The tiny model plus an `auto_map` entry whose module, when imported, writes a marker file."""
    model_dir = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, model_dir)
    marker = tmp_path / "custom-code-ran"
    (model_dir / "modeling_custom.py").write_text(
        "from pathlib import Path\n"
        "from transformers import LlamaForCausalLM\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n"
        "    pass\n")
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (model_dir / "config.json").write_text(json.dumps(config))
    return model_dir, marker


def test_custom_model_code_runs_only_with_trust_remote_code(model_with_custom_code, tmp_path):
    model_dir, marker = model_with_custom_code
    env = {"HF_HOME": str(tmp_path / "hf-home")}  # transformers copies remote code under HF_HOME/modules
    args = ["distill", "--teacher", model_dir, "-n", 1, "--max-new-tokens", 2]
    result = run_rtool(*args, input=ROWS_JSONL, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert not marker.exists(), "the model's own code ran without --trust-remote-code"
    result = run_rtool(*args, "--trust-remote-code", input=ROWS_JSONL, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert marker.read_text() == "ran"
