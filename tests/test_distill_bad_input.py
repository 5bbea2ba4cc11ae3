"""Bad input to rtool distill: one line naming the place, exit code 2 (1 for failures not the user's), no
traceback, and output written before the problem stays intact."""

import io
import json
import sys
from types import SimpleNamespace

import pytest

from helpers import jsonl, last_error_line, run_in_process, run_rtool

GOOD = json.dumps({"id": "a", "problem": "What is 1 + 1?", "answer": "2"}) + "\n"
GOOD2 = json.dumps({"id": "b", "problem": "What is 2 + 2?", "answer": "4"}) + "\n"
FLAGS = ["-n", 1, "--max-new-tokens", 4, "--batch-size", 1]


@pytest.fixture
def distill(capfd, monkeypatch):
    """`rtool distill --teacher MODEL ...` with `input` on stdin, in this process (a subprocess per case cost ~3 s of
    imports; test_empty_input runs the installed command): a result with returncode, stdout and stderr (bytes)."""

    def run(model, *extra, input=GOOD):
        if input is not None:
            data = input.encode() if isinstance(input, str) else input
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        code, stdout, stderr = run_in_process(capfd, "distill", "--teacher", model, *FLAGS, *extra)
        return SimpleNamespace(returncode=code, stdout=stdout.encode(), stderr=stderr.encode())

    return run


def assert_clean_error(result, code, *fragments):
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert "Traceback" not in stderr
    line = last_error_line(result)
    assert line.startswith("rtool: error: "), line
    for fragment in fragments:
        assert fragment in line, line


@pytest.mark.parametrize("bad_line, fragments", [
    ("{not json\n", ["<stdin>:3:", "malformed JSON"]),
    ("[1, 2, 3]\n", ["<stdin>:3:", "expected a JSON object, got list"]),
    (json.dumps({"id": "c", "text": "no prompt here"}) + "\n", ["<stdin>:3:", "no prompt field", "found: id, text"]),
    (json.dumps({"id": "c", "problem": 42}) + "\n", ["<stdin>:3:", "field 'problem' must be a string"]),
    ("\xff\xfe binary\n", ["<stdin>:3:", "not UTF-8"]),
])
def test_bad_line_after_good_ones_keeps_earlier_output(distill, tiny_model_dir, tmp_path, bad_line, fragments):
    data = (GOOD + GOOD2).encode() + (bad_line.encode("latin-1") if "\xff" in bad_line else bad_line.encode())
    out = tmp_path / "out.jsonl"
    result = distill(tiny_model_dir, "--out", out, input=data)
    assert_clean_error(result, 2, *fragments)
    assert [row["id"] for row in jsonl(out.read_text())] == ["a", "b"]


def test_prompt_field_flag_names_the_missing_field(distill, tiny_model_dir):
    result = distill(tiny_model_dir, "--prompt-field", "query")
    assert_clean_error(result, 2, "<stdin>:1:", "missing field 'query'", "found: id, problem, answer")


def test_skip_bad_counts_and_goes_on(distill, tiny_model_dir):
    result = distill(tiny_model_dir, "--skip-bad", input=GOOD + "{oops\n" + GOOD2)
    assert result.returncode == 0
    assert [row["id"] for row in jsonl(result.stdout)] == ["a", "b"]
    assert "skipped 1 bad input lines" in result.stderr.decode()


def test_empty_input(tiny_model_dir):  # the installed command, stdin piped: exit 2 and one line, no traceback
    result = run_rtool("distill", "--teacher", tiny_model_dir, *FLAGS, input="")
    assert_clean_error(result, 2, "<stdin>: no input rows")


def test_a_50_mb_line(distill, tiny_model_dir, tmp_path):
    huge = tmp_path / "huge.jsonl"
    with open(huge, "w") as handle:
        handle.write(GOOD)
        handle.write(json.dumps({"id": "big", "problem": "x" * (50 * 1024 * 1024)}) + "\n")
    result = distill(tiny_model_dir, "-i", huge, input=None)
    assert_clean_error(result, 2, f"{huge}:2:", "line longer than")
    assert [row["id"] for row in jsonl(result.stdout)] == ["a"]


def test_missing_model_path(distill, tmp_path):
    assert_clean_error(distill(tmp_path / "no-such-model"), 2, "no-such-model")


def test_model_dir_without_weights(distill, tmp_path, tiny_model_dir):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    assert_clean_error(distill(empty), 2, "empty-model", "no model weights")


@pytest.mark.parametrize("content", [b"GGUF\x03\x00\x00\x00 cut short", b"not a gguf file at all"])
def test_truncated_or_foreign_gguf_file(distill, tmp_path, content):
    model = tmp_path / "teacher.Q4_K_M.gguf"
    model.write_bytes(content)
    assert_clean_error(distill(model), 2, f"{model}:", "cannot load this GGUF file")


def test_pickle_only_model_needs_allow_pickle(distill, tmp_path, tiny_model_dir):
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    weights = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(weights, pickled / "pytorch_model.bin")
    assert_clean_error(distill(pickled), 2, "pickled", "--allow-pickle")
    allowed = distill(pickled, "--allow-pickle")
    assert allowed.returncode == 0, allowed.stderr.decode()
    assert len(jsonl(allowed.stdout)) == 1


def test_unknown_backend(distill, tiny_model_dir):
    assert_clean_error(distill(tiny_model_dir, "--backend", "tgi"), 2, "unknown backend 'tgi'", "hf", "openai")


@pytest.mark.parametrize("flags, fragment", [
    (["-n", "0"], "-n must be at least 1, got 0"),
    (["--temperature", "-0.5"], "--temperature must be >= 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
])
def test_impossible_sampling_flags(distill, tiny_model_dir, flags, fragment):
    assert_clean_error(distill(tiny_model_dir, *flags), 2, fragment)


def test_unreachable_endpoint_fails_fast(distill):
    import time

    started = time.time()
    result = distill("http://127.0.0.1:9/v1", "--api-model", "m")
    assert_clean_error(result, 2, "127.0.0.1:9")
    assert time.time() - started < 60
