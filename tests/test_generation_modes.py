"""The hf backend's generation modes (RTOOL_HF_GENERATION=loop|static|continuous) on the tiny model: the faster
modes give loop's greedy completions, finish reasons and token counts; static keeps loop's seeded samples too.

The model is loaded in float32 on every device, so loop and the other modes agree to the token on a GPU as well
(in bf16 a near tie between two logits could flip with the kernel). On a GPU, static compiles the decode step."""

import pytest
import torch

from rtool.generate.backends import open_backend
from rtool.generate.backends.hf import GENERATION_ENV, HFBackend, generation_mode
from rtool.errors import UserError
from rtool.generate.core import SamplingParams

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer question, 12*12?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Count: 1 2 3 4 5 6 7 8 9"}],
]
GREEDY = SamplingParams(n=1, temperature=0, max_new_tokens=12)
SAMPLED = SamplingParams(n=2, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=7)


@pytest.fixture(scope="module")
def loop(tiny_model_dir):
    backend = open_backend(tiny_model_dir, "hf", batch_size=4, dtype="float32")
    assert backend.generation == "loop"  # the default, with RTOOL_HF_GENERATION unset
    yield backend
    backend.close()


def mode(loop, generation, **kwargs):
    return HFBackend(loop.model, loop.tokenizer, name="tiny", batch_size=kwargs.pop("batch_size", 4),
                     generation=generation, **kwargs)


def _flat(results):
    return [(c.text, c.finish_reason, c.completion_tokens) for row in results for c in row]


@pytest.fixture(autouse=True)
def no_mode_in_env(monkeypatch):
    monkeypatch.delenv(GENERATION_ENV, raising=False)


def test_mode_comes_from_the_argument_then_the_environment(monkeypatch):
    assert generation_mode() == "loop"
    monkeypatch.setenv(GENERATION_ENV, "static")
    assert generation_mode() == "static"
    assert generation_mode("continuous") == "continuous"


@pytest.mark.parametrize("value", ["fast", "Static", "loop,static"])
def test_an_unknown_mode_is_a_one_line_user_error(tiny_model_dir, monkeypatch, value):
    monkeypatch.setenv(GENERATION_ENV, value)
    with pytest.raises(UserError) as error:
        # Refused before the model loads: the spec does not even exist.
        open_backend(tiny_model_dir / "missing", "hf")
    message = str(error.value)
    assert "\n" not in message and repr(value) in message and "valid: loop, static, continuous" in message


def test_an_unknown_mode_argument_is_refused(loop):
    with pytest.raises(UserError, match="unknown hf generation mode 'paged'"):
        mode(loop, "paged")


@pytest.mark.parametrize("generation", ["static", "continuous"])
def test_greedy_completions_match_the_loop(loop, generation):
    expected = _flat(loop.generate(CONVERSATIONS, GREEDY))
    assert _flat(mode(loop, generation).generate(CONVERSATIONS, GREEDY)) == expected
    # Another batch size changes how rows are grouped, never what they say.
    assert _flat(mode(loop, generation, batch_size=2).generate(CONVERSATIONS, GREEDY)) == expected


def test_static_keeps_the_seeded_samples_of_the_loop(loop):
    assert _flat(mode(loop, "static").generate(CONVERSATIONS, SAMPLED)) == _flat(loop.generate(CONVERSATIONS, SAMPLED))


def test_static_filler_rows_are_dropped(loop):
    # 3 rows padded to 4 (a power of two), as on a GPU; the filler's completion must not leak into the results.
    backend = mode(loop, "static", batch_size=8)
    backend.pad_rows = True
    assert _flat(backend.generate(CONVERSATIONS[:3], SAMPLED)) == _flat(loop.generate(CONVERSATIONS[:3], SAMPLED))


def _eos_bias(model, tokenizer, value):
    if value is None:
        model.lm_head.bias = None
        return
    weight = model.lm_head.weight
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    bias[tokenizer.eos_token_id] = value
    model.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)


@pytest.mark.parametrize("generation", ["static", "continuous"])
@pytest.mark.parametrize("eos_bias, expected", [(-1e4, {("length", 5)}), (1e4, {("stop", 1)})])
def test_finish_reasons_and_token_counts(loop, generation, eos_bias, expected):
    _eos_bias(loop.model, loop.tokenizer, eos_bias)
    try:
        results = mode(loop, generation).generate(CONVERSATIONS, SamplingParams(n=2, temperature=1.0,
                                                                                max_new_tokens=5))
    finally:
        _eos_bias(loop.model, loop.tokenizer, None)
    assert [len(row) for row in results] == [2, 2, 2, 2]
    assert {(c.finish_reason, c.completion_tokens) for row in results for c in row} == expected
    texts = [c.text for row in results for c in row]
    assert all(t == "" for t in texts) if eos_bias > 0 else all(t and "<|pad|>" not in t for t in texts)


def test_continuous_samples_are_well_formed(loop):
    results = mode(loop, "continuous").generate(CONVERSATIONS, SamplingParams(n=3, temperature=1.0, top_k=20,
                                                                                min_p=0.01, max_new_tokens=8))
    assert [len(row) for row in results] == [3, 3, 3, 3]
    for row in results:
        for c in row:
            assert c.finish_reason in ("stop", "length") and 1 <= c.completion_tokens <= 8
            assert "<|im_end|>" not in c.text and "<|pad|>" not in c.text
    assert len({c.text for row in results for c in row}) > 1


def test_continuous_refuses_a_repetition_penalty(loop):
    with pytest.raises(UserError, match="repetition-penalty.*continuous"):
        mode(loop, "continuous").generate(CONVERSATIONS, SamplingParams(temperature=1.0, repetition_penalty=1.1))


def test_modes_leave_the_model_as_they_found_it(loop):
    loop.model.train()
    attn = loop.model.config._attn_implementation
    try:
        for generation in ("static", "continuous"):
            mode(loop, generation).generate(CONVERSATIONS[:1], GREEDY)
            assert loop.model.training and loop.model.config._attn_implementation == attn
    finally:
        loop.model.eval()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_static_compiles_the_decode_step_on_cuda(tiny_model_dir):
    # bf16 (the GPU's auto dtype): the decode step goes through torch.compile, and a smaller batch reuses a shape.
    backend = HFBackend.load(tiny_model_dir, batch_size=4, generation="static")
    assert backend.model.device.type == "cuda" and backend.pad_rows
    results = backend.generate(CONVERSATIONS, GREEDY) + backend.generate(CONVERSATIONS[:3], GREEDY)
    assert hasattr(backend.model, "_compiled_call")
    for row in results:
        assert row[0].finish_reason in ("stop", "length") and 1 <= row[0].completion_tokens <= 12
