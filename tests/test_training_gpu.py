"""sft on a CUDA GPU: the precision policy as run (expected dtypes come from `core.precision`, the function the
code uses). Full fine-tuning keeps float32 master weights, so one small step changes every trained weight; a merged
LoRA model keeps a float32 base's dtype and changes only the adapted tensors."""

import json
from pathlib import Path

import pytest
import torch

from helpers import run_rtool

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


@pytest.fixture(scope="module")
def rows(tmp_path_factory, tiny_task_rows):
    path = tmp_path_factory.mktemp("gpu") / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in tiny_task_rows[:16]), encoding="utf-8")
    return path


def sft(*args):
    result = run_rtool("sft", *args, "--max-steps", "1", "--warmup-ratio", "0", "--batch-size", "8",
                       "--max-length", "256", "--save-steps", "0", "--no-system")
    assert result.returncode == 0, result.stderr.decode()
    return result


def test_full_finetune_keeps_float32_master_weights(tmp_path, tiny_model_dir, rows):
    from rtool.train.precision import precision

    prec = precision("auto", lora=False)
    assert (prec.load_dtype, prec.args["bf16"]) == ("float32", torch.cuda.is_bf16_supported())
    out = tmp_path / "full"
    # lr 1e-5: AdamW's first step moves each weight by about 1e-5, far below bf16's resolution at the tiny model's
    # weight scale (~1e-4 at 0.02), so bf16 weights would keep nearly all of them.
    sft("--model", tiny_model_dir, "--data", rows, "--out", out, "--lr", "1e-5")
    before, after = weights(tiny_model_dir), weights(out)
    assert {tensor.dtype for tensor in after.values()} == {getattr(torch, prec.load_dtype)}
    for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        changed = (before[name].float() != after[name].float()).float().mean().item()
        assert changed > 0.95, f"{name}: only {changed:.0%} of the weights changed"


def test_merged_lora_keeps_a_float32_base(tmp_path, tiny_model_dir, rows):
    from rtool.train.precision import precision

    assert precision("auto", lora=True).load_dtype == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    out = tmp_path / "lora"
    sft("--model", tiny_model_dir, "--data", rows, "--out", out, "--lr", "1e-2", "--lora", "--lora-r", "4",
        "--lora-targets", "q_proj,v_proj", "--merge-lora")
    base, merged = weights(tiny_model_dir), weights(out / "merged")
    assert {tensor.dtype for tensor in merged.values()} == {torch.float32}
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)


def test_more_processes_than_gpus_is_a_one_line_error(tmp_path, tiny_model_dir, rows):
    import os
    import subprocess
    import sys

    processes = torch.cuda.device_count() + 1
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", str(processes), "-m", "rtool.cli",
                             "sft", "--model", str(tiny_model_dir), "--data", str(rows), "--out", str(tmp_path / "o"),
                             "--max-steps", "1", "--no-system"],
                            capture_output=True, text=True, timeout=240, env={**os.environ, "RTOOL_DEBUG": "0"})
    assert result.returncode != 0
    assert f"rtool: error: {processes} training processes on this machine but" in result.stderr
    assert "Traceback" not in result.stderr and "invalid device ordinal" not in result.stderr
    assert not (tmp_path / "o").exists()
