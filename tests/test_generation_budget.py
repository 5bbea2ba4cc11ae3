"""A large --max-new-tokens costs nothing while completions are short, and never runs past the model: the hf backend
batches --batch-size rows whatever the budget, shrinks a batch only when memory could not hold it at worst (said
once), and clamps the budget to the model's context (one warning); an endpoint's context (/v1/models, or a vLLM 400)
clamps it the same way. Speed itself is measured in bench/generation_budget.py."""

import json
import logging
import string

import pytest
import torch

from helpers import jsonl, last_error_line, run_rtool
from openai_server import serve
from rtool.generate.backends import open_backend
from rtool.generate.backends.hf import HFBackend
from rtool.generate.core import SamplingParams, render_prompts

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer question, 12*12?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Count: 1 2 3 4 5 6 7 8 9"}],
]
CONTEXT = 96  # the short model's max_position_embeddings


@pytest.fixture(scope="module")
def short_model_dir(tmp_path_factory):
    """A tiny random Llama with a 96-token context, so that a budget reaches it in a few dozen steps."""
    from rtool.tiny import char_tokenizer, save_tiny, tiny_llama

    tokenizer = char_tokenizer([string.ascii_letters + string.digits + string.punctuation + " \n"])
    model = tiny_llama(tokenizer, hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=CONTEXT, seed=0)
    return save_tiny(model, tokenizer, tmp_path_factory.mktemp("short") / "model")


@pytest.fixture(scope="module")
def short(short_model_dir):
    # float32 on every device: samples compared across batch sizes agree to the token on a GPU too.
    backend = open_backend(short_model_dir, "hf", batch_size=4, dtype="float32")
    yield backend
    backend.close()


def eos_bias(backend, value):
    """Add `value` to the end-of-turn logit (through an lm_head bias), or remove the bias (None): +1e4 ends every
    row at its first token, -1e4 never."""
    head = backend.model.lm_head
    if value is None:
        head.bias = None
        return
    bias = torch.zeros(head.weight.shape[0], dtype=head.weight.dtype, device=head.weight.device)
    bias[backend.tokenizer.eos_token_id] = value
    head.bias = torch.nn.Parameter(bias, requires_grad=False)


def prefill_rows(backend, call):
    """The row count of every batch `call()` generates (the first forward pass of each `generate`)."""
    rows = []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:  # the prompt pass; each decode step feeds one token
            rows.append(ids.shape[0])

    handle = backend.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        call()
    finally:
        handle.remove()
    return rows


def texts(results):
    return [[(c.text, c.finish_reason, c.completion_tokens) for c in row] for row in results]


def test_a_large_budget_keeps_batch_size_rows_in_a_batch(tiny_model_dir):
    # 32768 new tokens once capped a batch at batch_size x 2048 padded tokens: one row per batch, 8 batches here.
    backend = open_backend(tiny_model_dir, "hf", batch_size=4)
    eos_bias(backend, 1e4)
    try:
        rows = prefill_rows(backend, lambda: backend.generate(CONVERSATIONS * 2, SamplingParams(
            temperature=1.0, max_new_tokens=32768)))
    finally:
        eos_bias(backend, None)
    assert rows == [4, 4]


def test_kv_cache_bytes_per_token_is_what_transformers_fills(tiny_model_dir):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from rtool.generate.backends.limits import kv_cache_bytes_per_token

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.inference_mode():
        out = model.generate(input_ids=torch.ones(3, 7, dtype=torch.long, device=model.device), max_new_tokens=2,
                             min_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    cache = out.past_key_values
    filled = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert kv_cache_bytes_per_token(model.config, model.dtype) == filled / (3 * cache.get_seq_length())
    # Model cards' sizes, by hand: layers x KV heads x head dim x 2 (key, value) x 2 bytes (bf16).
    qwen_7b = Qwen2Config(num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, hidden_size=3584)
    llama_8b = LlamaConfig(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096)
    assert kv_cache_bytes_per_token(qwen_7b, torch.bfloat16) == 28 * 4 * 128 * 2 * 2 == 57344
    assert kv_cache_bytes_per_token(llama_8b, torch.bfloat16) == 131072


@pytest.mark.parametrize("rope, expected", [
    (None, 32768),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, 131072),  # Qwen2.5's card
    ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0}, 32768),  # Llama 3.1 states the stretched length itself
    ({"rope_type": "linear", "factor": 2.0}, 65536),
])
def test_context_length_follows_rope_scaling(rope, expected):
    from transformers import LlamaConfig

    from rtool.generate.backends.limits import context_length

    config = LlamaConfig(max_position_embeddings=32768)
    if rope is not None:
        config.rope_parameters = {"rope_theta": 10000.0, **rope}
    assert context_length(config) == expected


def test_batches_shrink_to_what_memory_holds_at_worst_said_once(short, caplog):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=3)
    questions = [[{"role": "user", "content": f"What is {a}+{b}?"}] for a, b in ((2, 3), (4, 1), (7, 7), (1, 8))]
    [width] = set(map(len, render_prompts(short.tokenizer, questions)))  # one length: every batch plans alike
    row = (width + 12) * short.kv_bytes_per_token  # a row's KV cache if it runs to the end of its budget
    tight = HFBackend(short.model, short.tokenizer, name="tight", batch_size=8, free_memory=int(2.5 * row / 0.8))
    with caplog.at_level(logging.INFO, logger="rtool"):
        rows = prefill_rows(tight, lambda: [tight.generate(questions, params) for _ in range(2)])
    assert rows == [2] * 8  # 8 rows a call, 2 at a time, twice
    said = [r.getMessage() for r in caplog.records if "batches of 2 rows, not 8" in r.getMessage()]
    assert len(said) == 1 and "of KV cache" in said[0] and "--max-new-tokens" in said[0]
    # Each row draws from its own seed: the same samples as in batches of 4.
    assert texts(tight.generate(questions, params)) == texts(short.generate(questions, params))


@pytest.mark.parametrize("generation", ["loop", "static"])
def test_a_budget_past_the_context_stops_there_with_one_warning(short, caplog, generation):
    backend = HFBackend(short.model, short.tokenizer, name="short", batch_size=1, generation=generation)
    prompts = render_prompts(short.tokenizer, CONVERSATIONS)
    eos_bias(backend, -1e4)  # no row ends by itself
    try:
        with caplog.at_level(logging.WARNING, logger="rtool"):
            results = backend.generate(CONVERSATIONS, SamplingParams(temperature=1.0, max_new_tokens=500))
    finally:
        eos_bias(backend, None)
    # One row per batch: each stops where its own prompt + completion reach the context.
    assert [(row[0].finish_reason, row[0].completion_tokens) for row in results] == \
        [("length", CONTEXT - len(prompt)) for prompt in prompts]
    warnings = [r.getMessage() for r in caplog.records if "runs past the context" in r.getMessage()]
    assert len(warnings) == 1 and "--max-new-tokens 500" in warnings[0] and f"({CONTEXT} tokens" in warnings[0]


def test_a_prompt_that_fills_the_context_gets_an_empty_completion(short, caplog):
    long = [{"role": "user", "content": "x" * CONTEXT}]
    with caplog.at_level(logging.WARNING, logger="rtool"):
        results = short.generate([long, CONVERSATIONS[0]], SamplingParams(n=2, temperature=1.0, max_new_tokens=8))
    assert texts(results)[0] == [("", "length", 0)] * 2
    assert all(c.completion_tokens for c in results[1])  # the other prompt is answered as usual
    assert sum("fills the model's context" in r.getMessage() for r in caplog.records) == 1


# An endpoint: the tiny model (1024 positions) served as a vLLM server started with --max-model-len 60.
SERVED_CONTEXT = 60
ROWS = [{"id": "a", "problem": "What is 2 + 2?", "answer": "4"},
        {"id": "b", "problem": "Add 17 and 25, then tell me the sum.", "answer": "42"}]


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    backend = open_backend(tiny_model_dir, "hf", batch_size=4)
    yield backend
    backend.close()


def prompt_tokens(backend, row):
    return len(render_prompts(backend.tokenizer, [[{"role": "user", "content": row["problem"]}]])[0])


@pytest.mark.parametrize("options", [{}, {"context_error": "flat", "list_context": False}],
                         ids=["listed-vllm", "unlisted-old-vllm"])
def test_an_endpoint_budget_is_clamped_to_the_served_context(local, options):
    with serve(local, max_model_len=SERVED_CONTEXT, **options) as server:
        # The default budget (32768) on a server holding the model to 60 tokens: a 400 for each request until now.
        result = run_rtool("distill", "--teacher", server.url, "-n", 3, "--no-system", "--batch-size", 2,
                           input="".join(json.dumps(row) + "\n" for row in ROWS))
        accepted = [body for _, _, _, body in server.chat_requests() if not server.context_refusal(body)]
    assert result.returncode == 0, result.stderr.decode()
    out = jsonl(result.stdout)
    assert len(out) == 6
    room = {row["id"]: SERVED_CONTEXT - prompt_tokens(local, row) for row in ROWS}
    for row in out:  # the whole room after its own prompt, and no more
        assert row["completion_tokens"] <= room[row["id"]]
        assert row["finish_reason"] == "stop" or row["completion_tokens"] == room[row["id"]]
    assert sorted(body["max_tokens"] for body in accepted) == sorted(room[row["id"]] for row in out)
    stderr = " ".join(result.stderr.decode().split())
    assert stderr.count(f"--max-new-tokens 32768 runs past the context of {local.name}") == 1
    assert f"({SERVED_CONTEXT} tokens of prompt and completion)" in stderr and "retry" not in stderr


def test_an_endpoint_context_refusal_without_numbers_is_one_line_naming_the_flag(local):
    with serve(local, max_model_len=SERVED_CONTEXT, context_error="bare", list_context=False) as server:
        result = run_rtool("distill", "--teacher", server.url, "-n", 4, "--batch-size", 4,
                           input="".join(json.dumps(row) + "\n" for row in ROWS))
    assert result.returncode == 2
    stderr = result.stderr.decode()
    line = last_error_line(result)
    assert line.startswith("rtool: error:") and "--max-new-tokens 32768 does not fit" in line
    assert "context length exceeded" in line and stderr.count("rtool: error") == 1 and "retry" not in stderr
    assert "Traceback" not in stderr


def test_an_endpoint_prompt_that_fills_the_context_gets_an_empty_completion(local):
    rows = [{"id": "long", "problem": "x" * SERVED_CONTEXT, "answer": "1"}, ROWS[0]]
    with serve(local, max_model_len=SERVED_CONTEXT) as server:
        result = run_rtool("distill", "--teacher", server.url, "-n", 2, "--max-new-tokens", 8, "--no-system",
                           input="".join(json.dumps(row) + "\n" for row in rows))
    assert result.returncode == 0, result.stderr.decode()
    out = {(row["id"], row["sample"]): row for row in jsonl(result.stdout)}
    assert [(out["long", k]["completion"], out["long", k]["finish_reason"], out["long", k]["completion_tokens"])
            for k in (0, 1)] == [("", "length", 0)] * 2
    assert all(out["a", k]["completion_tokens"] for k in (0, 1))
    assert " ".join(result.stderr.decode().split()).count("fills the context") == 1
