"""Model and engine options shared by the generating and training commands: --chat-template FILE (a base model
without a template of its own), the vLLM engine options and where they are refused."""

import json
import shutil

import pytest

from helpers import jsonl, last_error_line, run_in_process, run_rtool
from rtool.errors import UserError
from rtool.generate.backends.vllm import engine_options
from rtool.tiny import CHAT_TEMPLATE
from scripted import scripted_endpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = "".join(json.dumps({"id": i, "problem": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(2))


@pytest.fixture(scope="module")
def base_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model as a base model ships: no chat template in its tokenizer."""
    base = tmp_path_factory.mktemp("base") / "model"
    shutil.copytree(tiny_model_dir, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    return base


@pytest.fixture(scope="module")
def template_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "chat.jinja"
    path.write_text(CHAT_TEMPLATE)
    return path


def test_distill_into_a_base_model_needs_and_takes_a_chat_template(base_model_dir, template_file):
    refused = run_rtool("distill", "-t", base_model_dir, "-n", 1, "--max-new-tokens", 4, input=PROMPTS)
    assert refused.returncode == 2, refused.stderr.decode()
    assert "has no chat template" in last_error_line(refused) and "--chat-template" in last_error_line(refused)
    result = run_rtool("distill", "-t", base_model_dir, "-n", 1, "--max-new-tokens", 4,
                       "--chat-template", template_file, "-q", input=PROMPTS)
    assert result.returncode == 0, result.stderr.decode()
    assert [row["id"] for row in jsonl(result.stdout)] == ["0", "1"]
    assert "distill: 2 prompts" not in result.stderr.decode()  # -q after the subcommand: the summary is info


def test_sft_on_a_base_model_with_a_chat_template_keeps_it_in_out(capfd, tmp_path, base_model_dir, template_file):
    from transformers import AutoTokenizer

    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({"problem": f"{i}+1?", "completion": f"\\boxed{{{i + 1}}}"}) + "\n"
                              for i in range(4)))
    flags = ["--data", traces, "--max-steps", "1", "--batch-size", "2", "--max-length", "128", "--save-steps", "0"]
    code, _, stderr = run_in_process(capfd, "sft", "--model", base_model_dir, "--out", tmp_path / "no", *flags)
    assert code == 2 and "chat template" in stderr.strip().splitlines()[-1]
    out = tmp_path / "sft"
    code, stdout, stderr = run_in_process(capfd, "sft", "--model", base_model_dir, "--out", out,
                                          "--chat-template", template_file, *flags)
    assert code == 0, stderr
    assert AutoTokenizer.from_pretrained(out).chat_template == CHAT_TEMPLATE  # the trained model renders as trained


def test_a_bad_template_file_is_one_line_naming_it(tmp_path, base_model_dir, tiny_task_file):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}\n{{ m['content'] }\n")
    result = run_rtool("distill", "-t", base_model_dir, "--chat-template", bad, input=PROMPTS)
    assert result.returncode == 2
    assert last_error_line(result).startswith(f"rtool: error: {bad}:2: not a valid Jinja"), last_error_line(result)
    missing = run_rtool("eval", "-m", base_model_dir, "-b", tiny_task_file, "--chat-template", tmp_path / "no")
    assert missing.returncode == 2 and "no such chat template file" in last_error_line(missing)


def test_the_openai_backend_sends_the_template_with_each_request(template_file):
    with scripted_endpoint({}) as server:
        result = run_rtool("distill", "-t", server.url, "-n", 1, "--chat-template", template_file, input=PROMPTS)
    assert result.returncode == 0, result.stderr.decode()
    bodies = [body for _, _, _, body in server.chat_requests()]
    assert len(bodies) == 2 and all(body["chat_template"] == CHAT_TEMPLATE for body in bodies)


def test_vllm_engine_options_become_llm_keyword_arguments():
    assert engine_options() == {}  # unset: vLLM's own defaults
    assert engine_options(2, 0.85, 32768) == {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85,
                                              "max_model_len": 32768}
    assert engine_options(max_model_len=4096) == {"max_model_len": 4096}
    for bad, flag in (({"tensor_parallel_size": 0}, "--tensor-parallel-size"),
                      ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization"),
                      ({"gpu_memory_utilization": 0.0}, "--gpu-memory-utilization"),
                      ({"max_model_len": 0}, "--max-model-len")):
        with pytest.raises(UserError, match=flag):
            engine_options(**bad)


def test_vllm_engine_flags_reach_the_vllm_backend_only(tiny_model_dir, tiny_task_file):
    other = run_rtool("distill", "-t", tiny_model_dir, "--backend", "hf", "--max-model-len", "4096",
                      "--tensor-parallel-size", "2", input=PROMPTS)
    assert other.returncode == 2
    assert ("--tensor-parallel-size, --max-model-len: vLLM engine options, but the backend is hf"
            in last_error_line(other))
    bad = run_rtool("eval", "-m", tiny_model_dir, "-b", tiny_task_file, "--backend", "vllm",
                    "--gpu-memory-utilization", "2")
    assert bad.returncode == 2 and "--gpu-memory-utilization must be in (0, 1]" in last_error_line(bad)
    import importlib.util

    if importlib.util.find_spec("vllm") is None:  # here: the flags parse, and the backend says what it lacks
        result = run_rtool("prm-label", "--policy", tiny_model_dir, "--backend", "vllm", "--tensor-parallel-size",
                           "2", "--gpu-memory-utilization", "0.5", "--max-model-len", "2048", input=PROMPTS)
        assert result.returncode == 2 and "the vllm backend needs the vllm package" in last_error_line(result)
