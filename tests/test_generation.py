"""rtool.generate.core: the hf backend on a tiny real model, and the openai backend over HTTP against a real local
server (tests/openai_server.py) that runs the same model."""

import importlib.util
import time

import pytest
import torch

from openai_server import serve
from rtool.generate.backends.hf import HFBackend
from rtool.generate.backends.openai import normalize_base_url
from rtool.errors import UserError
from rtool.generate.backends import open_backend
from rtool.generate.core import Completion, SamplingParams

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer question, 12*12?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Count: 1 2 3 4 5 6 7 8 9"}],
]
GREEDY = SamplingParams(n=1, temperature=0, max_new_tokens=12)


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    backend = open_backend(tiny_model_dir, "hf", batch_size=3)
    yield backend
    backend.close()


def _flat(results):
    return [(c.text, c.finish_reason, c.completion_tokens) for row in results for c in row]


def test_auto_picks_hf_for_a_local_model(tiny_model_dir, hf):
    backend = open_backend(str(tiny_model_dir))
    assert isinstance(backend, HFBackend) and backend.name == str(tiny_model_dir)


def test_hf_n_samples_shapes_and_types(hf):
    results = hf.generate(CONVERSATIONS, SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=1))
    assert [len(row) for row in results] == [3, 3, 3, 3]
    for row in results:
        for c in row:
            assert isinstance(c, Completion) and c.finish_reason in ("stop", "length")
            assert 1 <= c.completion_tokens <= 8
            assert "<|im_end|>" not in c.text and "<|pad|>" not in c.text
    assert len({c.text for c in results[1]}) > 1  # three samples of one prompt are not all the same


def test_hf_order_preserved_across_length_sorting(hf):
    # Each conversation alone (no batching, no sorting) must give what it gets inside a sorted, padded batch.
    together = hf.generate(CONVERSATIONS, GREEDY)
    alone = [hf.generate([conv], GREEDY)[0] for conv in CONVERSATIONS]
    assert _flat(together) == _flat(alone)


def test_hf_greedy_is_deterministic_and_matches_plain_generate(hf):
    assert _flat(hf.generate(CONVERSATIONS, GREEDY)) == _flat(hf.generate(CONVERSATIONS, GREEDY))
    # Against transformers directly, one unpadded prompt: the backend adds nothing of its own.
    tok, model = hf.tokenizer, hf.model
    text = tok.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    assert hf.generate(CONVERSATIONS[:1], GREEDY)[0][0].text == tok.decode(new)


def test_hf_seeded_sampling_is_reproducible(hf):
    params = SamplingParams(n=2, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=7)
    first = _flat(hf.generate(CONVERSATIONS, params))
    assert first == _flat(hf.generate(CONVERSATIONS, params))
    other = SamplingParams(n=2, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=8)
    assert first != _flat(hf.generate(CONVERSATIONS, other))


def _eos_bias(hf, value):
    """Add `value` to the eos logit through an lm_head bias (None removes it)."""
    if value is None:
        hf.model.lm_head.bias = None
        return
    weight = hf.model.lm_head.weight
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)  # where the model is (a GPU too)
    bias[hf.tokenizer.eos_token_id] = value
    hf.model.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)


@pytest.mark.parametrize("eos_bias, expected", [(-1e4, {("length", 5)}), (1e4, {("stop", 1)})])
def test_hf_finish_reasons_and_token_counts(hf, eos_bias, expected):
    # Forbid or force the end-of-turn token: every row then runs to max_new_tokens, or stops at once.
    _eos_bias(hf, eos_bias)
    try:
        results = hf.generate(CONVERSATIONS, SamplingParams(n=2, temperature=1.0, max_new_tokens=5))
    finally:
        _eos_bias(hf, None)
    assert {(c.finish_reason, c.completion_tokens) for row in results for c in row} == expected
    texts = [c.text for row in results for c in row]
    assert all(t == "" for t in texts) if eos_bias > 0 else all(t for t in texts)


def test_hf_small_token_budget_still_batches_correctly(tiny_model_dir, hf):
    tight = HFBackend(hf.model, hf.tokenizer, name="tight", batch_size=8, max_batch_tokens=40)
    batches = list(tight._batches([(i, 0) for i in range(4)], [[0] * 25, [0] * 20, [0] * 5, [0] * 5], 10))
    assert [rows for rows, _, _ in batches] == [[(0, 0)], [(1, 0)], [(2, 0), (3, 0)]]  # 35 tokens a row, 15 at the end
    assert _flat(tight.generate(CONVERSATIONS, GREEDY)) == _flat(hf.generate(CONVERSATIONS, GREEDY))


def test_no_conversations_no_work(hf):
    assert hf.generate([], GREEDY) == []


def test_sampling_params_are_checked(hf):
    for bad in (SamplingParams(n=0), SamplingParams(temperature=-1), SamplingParams(top_p=0),
                SamplingParams(max_new_tokens=0)):
        with pytest.raises(UserError):
            hf.generate(CONVERSATIONS[:1], bad)


def test_unknown_backend_lists_valid_names(tiny_model_dir):
    with pytest.raises(UserError, match="unknown backend 'tgi'.*valid: auto, hf, vllm, openai"):
        open_backend(tiny_model_dir, "tgi")
    with pytest.raises(UserError, match="needs an endpoint"):
        open_backend("some-model", "openai")
    with pytest.raises(UserError, match="endpoint URL"):
        open_backend("http://127.0.0.1:1/v1", "hf")


def test_vllm_without_gpu_or_package_is_a_user_error(tiny_model_dir):
    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vllm is usable here")
    with pytest.raises(UserError, match="vllm"):
        open_backend(tiny_model_dir, "vllm")


@pytest.mark.gpu
def test_vllm_generates(tiny_model_dir):
    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        pytest.skip("needs vllm and a CUDA GPU")
    backend = open_backend(tiny_model_dir, "vllm")
    results = backend.generate(CONVERSATIONS, SamplingParams(n=2, temperature=0.8, max_new_tokens=8))
    assert [len(row) for row in results] == [2, 2, 2, 2]
    assert all(c.finish_reason in ("stop", "length") and c.completion_tokens <= 8 for row in results for c in row)
    backend.close()


def test_normalize_base_url():
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert normalize_base_url("https://api.x.com/v1/chat/completions") == "https://api.x.com/v1"
    assert normalize_base_url("https://g.com/v1beta/openai") == "https://g.com/v1beta/openai"


def test_openai_matches_hf_greedy_end_to_end(hf, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with serve(hf) as server:
        api = open_backend(server.url, batch_size=4)  # auto -> openai for a URL; model from /v1/models
        assert api.name == hf.name
        got = api.generate(CONVERSATIONS, GREEDY)
        api.close()
    assert _flat(got) == _flat(hf.generate(CONVERSATIONS, GREEDY))
    assert all("Authorization" not in headers for _, _, headers, _ in server.requests)
    bodies = [body for _, _, _, body in server.chat_requests()]
    assert {b["max_tokens"] for b in bodies} == {12} and {b["temperature"] for b in bodies} == {0}
    assert len({b["seed"] for b in bodies}) == len(CONVERSATIONS)  # a distinct seed per prompt
    # Every setting is sent, neutral ones too: a vLLM server would otherwise fill in the checkpoint's defaults.
    assert all((b["top_k"], b["min_p"], b["repetition_penalty"]) == (0, 0.0, 1.0) for b in bodies)


def test_openai_one_request_per_sample_each_with_its_own_seed(hf):
    with serve(hf, max_n=2) as server:
        api = open_backend("tiny", "openai", base_url=server.url.removesuffix("/v1"), api_model=hf.name)
        results = api.generate(CONVERSATIONS[:2], SamplingParams(n=3, temperature=1.0, max_new_tokens=6))
        api.close()
    assert [len(row) for row in results] == [3, 3]
    assert [b["n"] for _, _, _, b in server.chat_requests()] == [1] * 6
    # Six samples, six seeds: no sample is a copy of another because it shared a request's seed.
    assert len({b["seed"] for _, _, _, b in server.chat_requests()}) == 6


@pytest.mark.parametrize("status", [429, 500])
def test_openai_retries_then_succeeds(hf, status):
    with serve(hf, fail_first=2, fail_status=status, retry_after=0 if status == 429 else None) as server:
        api = open_backend(server.url, max_retries=3)
        start = time.monotonic()
        results = api.generate(CONVERSATIONS[:1], GREEDY)
        api.close()
    assert _flat(results) == _flat(hf.generate(CONVERSATIONS[:1], GREEDY))
    assert len(server.chat_requests()) == 3
    if status == 429:
        assert time.monotonic() - start < 2  # Retry-After: 0 is respected instead of exponential backoff


def test_openai_gives_up_after_max_retries(hf):
    with serve(hf, fail_first=100, fail_status=503, retry_after=0) as server:
        api = open_backend(server.url, max_retries=2)
        with pytest.raises(UserError, match=r"chat/completions failed after 3 attempts: HTTP 503 injected failure"):
            api.generate(CONVERSATIONS[:1], GREEDY)
        api.close()


def test_openai_client_errors_are_not_retried(hf):
    with serve(hf) as server:
        api = open_backend(server.url, api_model="no-such-model")
        with pytest.raises(UserError, match="HTTP 404 model 'no-such-model' does not exist"):
            api.generate(CONVERSATIONS[:1], GREEDY)
        api.close()
    assert len(server.chat_requests()) == 1


def test_openai_unreachable_endpoint_fails_fast():
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(UserError, match=rf"http://127.0.0.1:{port}/v1/models failed after 6 attempts: cannot connect"):
        open_backend(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 10


def test_openai_key_sent_as_bearer_when_set(hf, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    with serve(hf) as server:
        api = open_backend(server.url)
        api.generate(CONVERSATIONS[:1], GREEDY)
        api.close()
    assert {headers.get("Authorization") for _, _, headers, _ in server.requests} == {"Bearer sk-test-123"}
