"""Sampling is defined by rtool's settings alone: the filters (rtool.generate.sampler), per-sample seeds, a checkpoint's
generation_config set aside, the caller's state left alone, and what an endpoint is sent and answers."""

import json
import shutil
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from rtool.errors import UserError
from rtool.generate.backends import open_backend
from rtool.generate.core import SamplingParams, sample_seed
from rtool.generate.sampler import draw, penalize_repeats, row_uniforms, sampling_probs

CONVERSATIONS = [[{"role": "user", "content": "What is 2+3?"}], [{"role": "user", "content": "Count: 1 2 3 4"}]]


def params(**settings):
    return SamplingParams(**{"temperature": 1.0, **settings})


def test_filters_match_hand_computed_probabilities():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])
    logits = probs.log()
    assert torch.allclose(sampling_probs(logits, params()), probs)
    # top-k 2: the two most likely, renormalised
    assert torch.allclose(sampling_probs(logits, params(top_k=2)), torch.tensor([[5 / 7, 2 / 7, 0, 0, 0]]))
    # top-p 0.6: 0.5 alone does not reach 0.6, so the token that crosses it (0.2) is kept
    assert torch.allclose(sampling_probs(logits, params(top_p=0.6)), torch.tensor([[5 / 7, 2 / 7, 0, 0, 0]]))
    assert torch.allclose(sampling_probs(logits, params(top_p=0.5)), torch.tensor([[1.0, 0, 0, 0, 0]]))
    # min-p 0.3: below 0.3 x 0.5 = 0.15 goes; 0.15 itself stays
    assert torch.allclose(sampling_probs(logits, params(min_p=0.3)), torch.tensor([[0.5, 0.2, 0.15, 0, 0]]) / 0.85)
    # temperature 0.5 squares the probabilities before renormalising
    squared = probs ** 2 / (probs ** 2).sum()
    assert torch.allclose(sampling_probs(logits, params(temperature=0.5)), squared, atol=1e-6)


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens_only():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    history = torch.tensor([[0, 1, 3, 3]])
    mask = torch.tensor([[True, True, False, False]])  # tokens 3 are padding, not text
    assert penalize_repeats(logits, history, mask, 2.0).tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_draw_is_inverse_cdf_and_never_picks_an_impossible_token():
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75]] * 4)
    uniforms = torch.tensor([1e-12, 0.25, 0.2500001, 1.0], dtype=torch.float64)
    assert draw(probs, uniforms).tolist() == [1, 1, 3, 3]
    many = draw(probs[:1].repeat(4000, 1), row_uniforms(range(4000), 1)[:, 0])
    assert set(many.tolist()) == {1, 3} and 0.70 < (many == 3).float().mean().item() < 0.80


def test_row_uniforms_depend_on_the_seed_alone():
    a = row_uniforms([5, 6], 8)
    assert torch.equal(a[0], row_uniforms([5], 8)[0]) and torch.equal(a[1], row_uniforms([7, 6], 8)[1])
    assert not torch.equal(a[0], a[1]) and bool((a > 0).all()) and bool((a <= 1).all())


def test_sample_seeds_are_stable_and_distinct():
    assert sample_seed(0, "p1", 0) == sample_seed(0, "p1", 0)
    seeds = {sample_seed(s, key, k) for s in (0, 1) for key in ("p1", "p2", 0, 1) for k in range(4)}
    assert len(seeds) == 32 and all(0 <= x < 2**31 - 1 for x in seeds)


@pytest.mark.parametrize("bad, flag", [(dict(top_k=-1), "--top-k"), (dict(min_p=1.0), "--min-p"),
                                       (dict(repetition_penalty=0), "--repetition-penalty")])
def test_bad_settings_name_their_flag(bad, flag):
    with pytest.raises(UserError, match=flag):
        params(**bad).check()


@pytest.fixture(scope="module")
def top_k_1_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a checkpoint generation_config that says top_k=1 (what a shipped config can do)."""
    copy = tmp_path_factory.mktemp("topk1") / "model"
    shutil.copytree(tiny_model_dir, copy)
    config_path = copy / "generation_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config.update(top_k=1, do_sample=True, repetition_penalty=1.3)
    config_path.write_text(json.dumps(config))
    return copy


def test_hf_ignores_the_checkpoints_generation_config(top_k_1_model_dir, tiny_model_dir):
    # With the checkpoint's top_k=1 merged in, 4 samples at temperature 1.0 were 1 distinct text.
    settings = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=3)
    shipped = open_backend(top_k_1_model_dir, "hf").generate(CONVERSATIONS, settings)
    plain = open_backend(tiny_model_dir, "hf").generate(CONVERSATIONS, settings)
    assert len({c.text for c in shipped[0]}) > 1
    assert [[c.text for c in row] for row in shipped] == [[c.text for c in row] for row in plain]


def test_hf_leaves_the_callers_state_alone(tiny_model_dir):
    from rtool.generate.backends.hf import HFBackend
    from rtool.io.models import load_model

    model, tokenizer = load_model(tiny_model_dir, for_training=True)
    padding_side, state = tokenizer.padding_side, torch.get_rng_state()
    backend = HFBackend(model, tokenizer, name="policy")
    backend.generate(CONVERSATIONS, SamplingParams(n=2, temperature=1.0, max_new_tokens=6))
    assert model.training and tokenizer.padding_side == padding_side == "right"
    assert torch.equal(torch.get_rng_state(), state)


def test_hf_sample_does_not_depend_on_its_batch(tiny_model_dir):
    backend = open_backend(tiny_model_dir, "hf", batch_size=8)
    settings = SamplingParams(n=3, temperature=1.0, max_new_tokens=10, seed=11)
    together = backend.generate(CONVERSATIONS, settings, seeds=[[1, 2, 3], [4, 5, 6]])
    alone = backend.generate(CONVERSATIONS[1:], settings, seeds=[[5]])
    assert together[1][1].text == alone[0][0].text
    assert len({c.text for c in together[0]}) == 3


def test_hf_top_k_1_is_greedy(tiny_model_dir):
    backend = open_backend(tiny_model_dir, "hf")
    greedy = backend.generate(CONVERSATIONS, SamplingParams(n=1, temperature=0, max_new_tokens=8))
    top1 = backend.generate(CONVERSATIONS, SamplingParams(n=3, temperature=1.5, top_k=1, max_new_tokens=8))
    assert all(c.text == greedy[i][0].text for i, row in enumerate(top1) for c in row)


class _Scripted(BaseHTTPRequestHandler):
    """Answers chat requests with the server's scripted payloads in turn (the last one repeats)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._send(200, {"data": [{"id": "m"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(body)
            status, payload = self.server.script[min(len(self.server.bodies), len(self.server.script)) - 1]
        if callable(payload):
            status, payload = payload(body)
        self._send(status, payload)

    def _send(self, status, data):
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@contextmanager
def scripted(*script):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.script, server.bodies, server.lock = list(script), [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def answer(text, usage=None):
    data = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    if usage is not None:
        data["usage"] = {"completion_tokens": usage}
    return 200, data


def test_openai_answer_without_choices_is_retried():
    with scripted((200, {"object": "error", "message": "overloaded"}), answer("\\boxed{5}", usage=7)) as (server, url):
        backend = open_backend(url, max_retries=2)
        [[completion]] = backend.generate(CONVERSATIONS[:1], SamplingParams(n=1, temperature=0))
        backend.close()
    assert completion.text == "\\boxed{5}" and completion.completion_tokens == 7
    assert len(server.bodies) == 2


def test_openai_token_count_is_null_without_usage():
    with scripted(answer("a long answer that is not counted")) as (_, url):
        backend = open_backend(url)
        [[completion]] = backend.generate(CONVERSATIONS[:1], SamplingParams(n=1, temperature=0))
        backend.close()
    assert completion.completion_tokens is None


def _refuses_top_k(body):
    if "top_k" in body:
        return 400, {"error": {"message": "Unrecognized request argument supplied: top_k"}}
    return answer("ok", usage=1)


def test_openai_endpoint_refusing_neutral_extras_is_asked_without_them():
    with scripted((None, _refuses_top_k)) as (server, url):
        backend = open_backend(url)
        results = backend.generate(CONVERSATIONS, SamplingParams(n=2, temperature=1.0))
        backend.close()
    assert [[c.text for c in row] for row in results] == [["ok", "ok"], ["ok", "ok"]]
    assert "top_k" not in server.bodies[-1] and server.bodies[-1]["temperature"] == 1.0


def test_openai_endpoint_refusing_a_setting_in_use_is_an_error():
    with scripted((None, _refuses_top_k)) as (_, url):
        backend = open_backend(url)
        with pytest.raises(UserError, match="does not accept top_k"):
            backend.generate(CONVERSATIONS[:1], SamplingParams(n=1, temperature=1.0, top_k=5))
        backend.close()
