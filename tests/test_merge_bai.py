"""rtool merge-bai end to end on tiny saved Llamas: the CLI, its flags, every bad input, LoRA inputs, and
equality with mergekit (two `linear` runs) when mergekit is available.

mergekit may live in another venv (it pins its own torch): point RTOOL_MERGEKIT_BIN at its `mergekit-yaml`,
e.g. RTOOL_MERGEKIT_BIN=/work/venv-mergekit/bin/mergekit-yaml. Without it, and without an importable mergekit,
the equality tests skip. RTOOL_MERGEKIT_PYTHON (that venv's python) runs the slerp/ties/dare path the same way.
"""

import json
import os
import shutil
import string
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import last_error_line, run_rtool
from rtool.merge.arithmetic import bai

ROLES = ("reasoning", "instruct", "pretrained")


def _tokenizer(extra=()):
    from rtool.tiny import char_tokenizer

    return char_tokenizer([string.ascii_letters + string.digits + string.punctuation + " \n"], extra_tokens=extra)


def _model(seed, tokenizer=None, **kwargs):
    from rtool.tiny import tiny_llama

    return tiny_llama(tokenizer or _tokenizer(), hidden_size=32, num_layers=2, num_heads=4, seed=seed, **kwargs)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Three tiny Llamas (same shapes, different seeds); the reasoning one is sharded, as big checkpoints are."""
    root = tmp_path_factory.mktemp("bai")
    tokenizer = _tokenizer()
    paths = {}
    for seed, role in enumerate(ROLES, start=1):
        model = _model(seed, tokenizer)
        paths[role] = root / role
        model.save_pretrained(paths[role], max_shard_size="40KB" if role == "reasoning" else "5GB")
        tokenizer.save_pretrained(paths[role])
    assert (paths["reasoning"] / "model.safetensors.index.json").is_file()
    return paths


def load_weights(model_dir):
    from safetensors.numpy import load_file

    tensors = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def merge(models, out, *extra, **env):
    return run_rtool("merge-bai", "-r", models["reasoning"], "--instruct-model", models["instruct"], "-p", models["pretrained"],
                     "--out", out, *extra, env=env or None)


def assert_ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


def test_merge_writes_the_two_stage_formula_and_a_loadable_model(models, tmp_path):
    out = tmp_path / "bai"
    assert assert_ok(merge(models, out, "--w", "0.3", "--v", "0.6")) == [str(out)]
    got = load_weights(out)
    inputs = {role: load_weights(models[role]) for role in ROLES}
    assert set(got) == set(inputs["instruct"])
    for name, tensor in got.items():
        r, i, p = (inputs[role][name] for role in ROLES)
        assert tensor.dtype == np.float32
        assert np.array_equal(tensor, bai("linear", r, i, p, 0.3, 0.6))
        np.testing.assert_allclose(tensor, 0.6 * (0.3 * r + 0.7 * i) + 0.4 * p, rtol=1e-5, atol=1e-6)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (models["instruct"] / name).read_bytes()
    record = json.loads((out / "rtool_merge.json").read_text())
    assert (record["method"], record["w"], record["v"]) == ("linear", 0.3, 0.6)
    assert record["coefficients"] == pytest.approx({"reasoning": 0.18, "instruct": 0.42, "pretrained": 0.4})
    assert record["inputs"]["reasoning"]["path"] == str(models["reasoning"].resolve())
    assert len(record["inputs"]["reasoning"]["index_sha256"]) == 64
    assert len(record["inputs"]["instruct"]["config_sha256"]) == 64
    assert record["rtool_version"]
    assert not [p for p in tmp_path.iterdir() if p.name != "bai"], "no temporary dir left beside the output"

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("What is 1+1?", return_tensors="pt").input_ids
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 5


def test_sharded_output_has_an_index_and_loads(models, tmp_path):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert_ok(merge(models, whole))
    assert_ok(merge(models, sharded, "--max-shard-size", "30KB"))
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((sharded / f).stat().st_size <= 30_000 + 4096 for f in files)
    a, b = load_weights(whole), load_weights(sharded)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(sharded)


def test_sweep_writes_one_dir_per_point_in_one_run(models, tmp_path):
    out = tmp_path / "sweep"
    dirs = assert_ok(merge(models, out, "--sweep", "0.3:0.5,0.7:0.2"))
    assert dirs == [str(out / "w0.3-v0.5"), str(out / "w0.7-v0.2")]
    inputs = {role: load_weights(models[role]) for role in ROLES}
    for path, (w, v) in zip(dirs, [(0.3, 0.5), (0.7, 0.2)]):
        got = load_weights(path)
        name = "model.layers.1.mlp.up_proj.weight"
        assert np.array_equal(got[name], bai("linear", *(inputs[r][name] for r in ROLES), w, v))
        assert json.loads((Path(path) / "rtool_merge.json").read_text())["w"] == w


def test_dtype_bfloat16_and_save_intermediate(models, tmp_path):
    import torch

    out = tmp_path / "bf16"
    assert_ok(merge(models, out, "--dtype", "bfloat16", "--save-intermediate", "--w", "0.25"))
    from safetensors.torch import load_file

    got = load_file(out / "model.safetensors")
    mid = load_file(out / "stage1" / "model.safetensors")
    inputs = {role: load_weights(models[role]) for role in ROLES}
    name = "model.embed_tokens.weight"
    r, i, p = (inputs[role][name] for role in ROLES)
    expect = torch.from_numpy(bai("linear", r, i, p, 0.25, 0.5)).to(torch.bfloat16)
    assert got[name].dtype == torch.bfloat16 and torch.equal(got[name], expect)
    assert torch.equal(mid[name], torch.from_numpy(bai("linear", r, i, p, 0.25, 1.0)).to(torch.bfloat16))
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert (out / "stage1" / "config.json").is_file()


def test_bf16_inputs_give_bf16_output(models, tmp_path):
    import torch
    from safetensors.torch import load_file

    half = {}
    for role in ROLES:
        model = _model(ROLES.index(role) + 1)
        half[role] = tmp_path / role
        model.to(torch.bfloat16).save_pretrained(half[role])
    out = tmp_path / "out"
    assert_ok(merge(half, out))
    got = load_file(out / "model.safetensors")
    name = "model.norm.weight"
    ins = [load_file(half[role] / "model.safetensors")[name].float().numpy() for role in ROLES]
    assert got[name].dtype == torch.bfloat16
    assert torch.equal(got[name], torch.from_numpy(bai("linear", *ins, 0.5, 0.5)).to(torch.bfloat16))


def test_task_arithmetic(models, tmp_path):
    out = tmp_path / "ta"
    assert_ok(merge(models, out, "--method", "task-arithmetic", "--w", "0.3", "--v", "0.6"))
    got = load_weights(out)
    inputs = {role: load_weights(models[role]) for role in ROLES}
    for name, tensor in got.items():
        r, i, p = (inputs[role][name] for role in ROLES)
        assert np.array_equal(tensor, bai("task-arithmetic", r, i, p, 0.3, 0.6))


def test_lora_adapter_input_equals_the_merged_adapter(models, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = _model(2)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"],
                        rank_pattern={"down_proj": 2}, alpha_pattern={"v_proj": 16}, init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    merged = tmp_path / "merged"
    peft_model.merge_and_unload().save_pretrained(merged)
    shutil.copy(models["instruct"] / "tokenizer.json", merged)

    out_lora, out_merged = tmp_path / "from-lora", tmp_path / "from-merged"
    assert_ok(run_rtool("merge-bai", "-r", adapter, "--lora-base", models["instruct"], "--instruct-model", models["instruct"],
                        "-p", models["pretrained"], "--out", out_lora))
    assert_ok(run_rtool("merge-bai", "-r", merged, "--instruct-model", models["instruct"], "-p", models["pretrained"],
                        "--out", out_merged))
    a, b = load_weights(out_lora), load_weights(out_merged)
    changed = [k for k in a if not np.array_equal(load_weights(models["instruct"])[k], load_weights(merged)[k])]
    assert len(changed) >= 7  # q, v, down in two layers and the embedding
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)
    record = json.loads((out_lora / "rtool_merge.json").read_text())["inputs"]["reasoning"]
    assert record["kind"] == "lora" and record["base"]["path"] == str(models["instruct"].resolve())


def test_lora_adapter_without_a_local_base_asks_for_lora_base(models, tmp_path):
    from peft import LoraConfig, get_peft_model

    adapter = tmp_path / "adapter"
    get_peft_model(_model(2), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    result = merge({**models, "reasoning": adapter}, tmp_path / "out")
    assert_one_line_error(result, "--lora-base")
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(models, tmp_path):
    out = tmp_path / "never"
    lines = assert_ok(merge(models, out, "--dry-run", "--sweep", "0.5:0.5,0.3:0.5"))
    plan = json.loads(lines[0])
    weights = load_weights(models["instruct"])
    assert plan["tensors"] == len(weights)
    assert plan["parameters"] == sum(t.size for t in weights.values())
    assert plan["read_bytes"] == 3 * sum(t.nbytes for t in weights.values())
    assert plan["output_bytes_total"] == 2 * plan["output_bytes_per_model"] > 0
    assert not out.exists()


def test_existing_out_is_replaced_only_with_force_and_only_when_a_merge_wrote_it(models, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    assert_one_line_error(merge(models, out), "output dir exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "old"
    # A dir of the user's is never deleted, --force or not (issue 24: --overwrite took whole folders).
    assert_one_line_error(merge(models, out, "--force"), "keep.txt is not one's", "nothing was deleted")
    assert (out / "keep.txt").read_text() == "old"
    (out / "keep.txt").unlink()
    assert_ok(merge(models, out, "--force"))  # empty: replaced
    assert_ok(merge(models, out, "--force", "--w", "0.2"))  # an earlier merge: replaced
    assert json.loads((out / "rtool_merge.json").read_text())["w"] == 0.2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / "notes.txt").write_text("mine")  # added to a merge's output: that output is no longer only a merge's
    assert_one_line_error(merge(models, out, "--force"), "notes.txt is not one's")
    assert (out / "notes.txt").exists() and (out / "model.safetensors").is_file()
    (out / "notes.txt").unlink()
    sweep = tmp_path / "sweep"
    assert len(assert_ok(merge(models, sweep, "--sweep", "0.3:0.5,0.5:0.5"))) == 2
    assert len(assert_ok(merge(models, sweep, "--sweep", "0.3:0.5,0.5:0.5", "--force"))) == 2  # a sweep's: replaced
    monkeypatch.chdir(out)  # never the current directory, merge output or not
    assert_one_line_error(merge(models, Path("."), "--force"), "would replace the current directory")
    assert (out / "rtool_merge.json").is_file()


def test_instruct_model_has_no_short_i_and_old_names_still_work(models, tmp_path):
    # -i is --input across rtool: merge-bai's instruct model is --instruct-model; --instruct and --force, the old
    # names, are hidden/secondary aliases, and --help shows neither -i nor --instruct as a flag of its own.
    result = run_rtool("merge-bai", "-r", models["reasoning"], "-i", models["instruct"], "-p", models["pretrained"],
                       "--out", tmp_path / "a")
    assert result.returncode == 2 and b"-i" in result.stderr
    old = run_rtool("merge-bai", "-r", models["reasoning"], "--instruct", models["instruct"], "-p",
                    models["pretrained"], "--out", tmp_path / "a")
    assert_ok(old)
    assert_ok(merge(models, tmp_path / "a", "--overwrite"))
    help_text = run_rtool("merge-bai", "--help").stdout.decode()
    assert "--instruct-model" in help_text and "--instruct " not in help_text and "-i," not in help_text
    missing = run_rtool("merge-bai", "-r", models["reasoning"], "-p", models["pretrained"], "--out", tmp_path / "b")
    assert_one_line_error(missing, "missing --instruct-model")


def test_out_may_not_replace_an_input(models, tmp_path):
    copy = tmp_path / "pretrained"
    shutil.copytree(models["pretrained"], copy)
    result = merge({**models, "pretrained": copy}, copy, "--force")
    assert_one_line_error(result, "would replace an input")
    assert (copy / "model.safetensors").is_file()


def test_interrupted_merge_leaves_no_output(tmp_path):
    from rtool.merge.bai import staged_output

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with staged_output(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def assert_one_line_error(result, *fragments):
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    line = last_error_line(result)
    assert line.startswith("rtool: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    assert result.stdout == b""


def _without_tensor(src, dst, name):
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    del tensors[name]
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})


def _with_nan(src, dst, name):
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    tensors[name][3] = np.nan
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})


def _bad_inputs(case, models, tmp_path):
    """Inputs (dict of role -> path) and extra flags for one bad-input case."""
    bad = dict(models)
    extra = []
    if case == "missing-dir":
        bad["reasoning"] = tmp_path / "nope"
    elif case == "no-safetensors":
        bad["pretrained"] = tmp_path / "empty"
        bad["pretrained"].mkdir()
        shutil.copy(models["pretrained"] / "config.json", bad["pretrained"])
    elif case == "missing-tensor":
        bad["pretrained"] = tmp_path / "fewer"
        _without_tensor(models["pretrained"], bad["pretrained"], "model.layers.1.mlp.up_proj.weight")
    elif case == "vocab-mismatch":
        bad["reasoning"] = tmp_path / "bigger-vocab"
        tokenizer = _tokenizer(extra=("<think>", "</think>"))
        _model(1, tokenizer).save_pretrained(bad["reasoning"])
    elif case == "architecture":
        from transformers import MistralConfig, MistralForCausalLM

        bad["reasoning"] = tmp_path / "mistral"
        config = MistralConfig(vocab_size=101, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
        MistralForCausalLM(config).save_pretrained(bad["reasoning"])
    elif case == "w-out-of-range":
        extra = ["--w", "1.5"]
    elif case == "v-out-of-range":
        extra = ["--v", "-0.1"]
    elif case == "nan-result":
        bad["instruct"] = tmp_path / "nan"
        _with_nan(models["instruct"], bad["instruct"], "model.layers.0.mlp.gate_proj.weight")
    elif case == "existing-out":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "mine.txt").write_text("keep")
    return bad, extra


BAD_INPUTS = {
    "missing-dir": ["reasoning model: no such directory", "nope"],
    "no-safetensors": ["no safetensors weights", "empty"],
    "missing-tensor": ["pretrained model lacks tensor 'model.layers.1.mlp.up_proj.weight'"],
    "vocab-mismatch": ["tensor 'model.embed_tokens.weight' has shape [103, 32] in the reasoning model but [101, 32]",
                       "vocabulary"],
    "architecture": ["different architectures", "MistralForCausalLM", "LlamaForCausalLM"],
    "w-out-of-range": ["w must be in [0, 1], got 1.5"],
    "v-out-of-range": ["v must be in [0, 1], got -0.1"],
    "nan-result": ["merged tensor 'model.layers.0.mlp.gate_proj.weight' has NaN/Inf", "instruct=nan"],
    "existing-out": ["output dir exists", "--overwrite"],
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_no_output(case, models, tmp_path):
    bad, extra = _bad_inputs(case, models, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = merge(bad, tmp_path / "out", *extra)
    assert_one_line_error(result, *BAD_INPUTS[case])
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no output and no temporary dir left behind"
    if case == "existing-out":
        assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


def test_help_exits_0():
    result = run_rtool("merge-bai", "--help")
    assert result.returncode == 0
    assert b"--sweep" in result.stdout and b"rtool's" in result.stdout


def _mergekit_yaml():
    """The mergekit-yaml command to use as the reference, or None (the equality tests then skip)."""
    explicit = os.environ.get("RTOOL_MERGEKIT_BIN")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("mergekit-yaml")


def _run_mergekit(binary, config, out):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([binary, str(config), str(out)], capture_output=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]


@pytest.mark.parametrize("method,w,v", [("linear", 0.3, 0.6), ("linear", 0.5, 0.5), ("linear", 0.123, 0.9),
                                        ("task-arithmetic", 0.3, 0.6)])
def test_equals_two_mergekit_runs_bit_for_bit(models, tmp_path, method, w, v):
    binary = _mergekit_yaml()
    if binary is None:
        pytest.skip("mergekit not available (install it, or set RTOOL_MERGEKIT_BIN to a mergekit-yaml)")
    import yaml

    def stage(models_weights, base=None):
        name = "linear" if method == "linear" else "task_arithmetic"
        config = {"merge_method": name, "dtype": "float32",
                  "models": [{"model": str(m), "parameters": {"weight": wt}} for m, wt in models_weights]}
        if name == "linear":
            config["parameters"] = {"normalize": True}
        else:
            config["base_model"] = str(base)
        return config

    # The order of the models is the order of the formula: mergekit adds them in the order listed.
    mid, ref = tmp_path / "mk-mid", tmp_path / "mk-out"
    if method == "linear":
        first = stage([(models["reasoning"], w), (models["instruct"], 1 - w)])
        second = stage([(mid, v), (models["pretrained"], 1 - v)])
    else:
        first = stage([(models["reasoning"], w), (models["instruct"], 1 - w)], base=models["pretrained"])
        second = stage([(mid, v)], base=models["pretrained"])
    for k, config in enumerate((first, second)):
        path = tmp_path / f"stage{k + 1}.yaml"
        path.write_text(yaml.safe_dump(config))
        _run_mergekit(binary, path, mid if k == 0 else ref)
    out = tmp_path / "rtool"
    assert_ok(merge(models, out, "--method", method, "--w", str(w), "--v", str(v)))
    got, expect = load_weights(out), load_weights(ref)
    assert set(got) == set(expect)
    for name in got:
        assert got[name].dtype == expect[name].dtype == np.float32
        assert got[name].tobytes() == expect[name].tobytes(), name


def _mergekit_importable():
    try:
        import mergekit  # noqa: F401
    except ImportError:
        return False
    return True


def test_other_methods_need_mergekit(models, tmp_path):
    if _mergekit_importable():
        pytest.skip("mergekit is installed here")
    assert_one_line_error(merge(models, tmp_path / "out", "--method", "slerp"), "needs mergekit", "rtool[mergekit]")
    assert list(tmp_path.iterdir()) == []


MERGEKIT_API_SCRIPT = """
import json, sys
from pathlib import Path
from rtool.merge import bai as merge
from rtool.merge.sources import open_source
roles = ("reasoning", "instruct", "pretrained")
paths, out, method = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
sources = [open_source(role, Path(paths[role])) for role in roles]
plan = merge.plan_merge(*sources, [merge.MergeJob(0.3, 0.6, "a"), merge.MergeJob(0.0, 1.0, "b")], method=method)
print(json.dumps([str(p) for p in merge.merge_with_mergekit(plan, out)]))
"""


@pytest.mark.parametrize("method", ["slerp", "ties", "dare-linear"])
def test_other_methods_run_through_mergekits_api(models, tmp_path, method):
    """In this interpreter when mergekit imports, else in RTOOL_MERGEKIT_PYTHON (the python of a mergekit venv)
    with this checkout's rtool on its path."""
    python = os.environ.get("RTOOL_MERGEKIT_PYTHON")
    if _mergekit_importable():
        import sys

        python = sys.executable
    if not python:
        pytest.skip("mergekit not available (install it, or set RTOOL_MERGEKIT_PYTHON)")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    paths = {role: str(models[role]) for role in ROLES}
    result = subprocess.run([python, "-c", MERGEKIT_API_SCRIPT, json.dumps(paths), str(tmp_path / "out"), method],
                            capture_output=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    dirs = json.loads(result.stdout.decode().splitlines()[-1])
    assert dirs == [str(tmp_path / "out" / "a"), str(tmp_path / "out" / "b")]
    record = json.loads((Path(dirs[0]) / "rtool_merge.json").read_text())
    assert record["engine"] == f"mergekit {method.replace('-', '_')}" and record["w"] == 0.3
    got = load_weights(dirs[0])
    instruct = load_weights(models["instruct"])
    assert set(got) == set(instruct) and all(np.isfinite(t).all() for t in got.values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "b"], "stage-1 models are not kept"
    if method == "slerp":  # w = 0, v = 1: all instruct (ties and dare trim the delta even then)
        for name, tensor in load_weights(dirs[1]).items():
            np.testing.assert_allclose(tensor, instruct[name], rtol=1e-5, atol=1e-6)


def test_small_chunks_and_many_threads_give_the_same_bytes(models, tmp_path):
    """Real models are merged in many row chunks on several threads; tiny ones fit one chunk. Force small
    chunks (3 rows) and more threads than CPUs, with a sweep, a LoRA input and a stage-1 model."""
    from peft import LoraConfig, get_peft_model

    from rtool.merge import bai as merge
    from rtool.merge.sources import open_source

    adapter = tmp_path / "adapter"
    get_peft_model(_model(2), LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"], init_lora_weights=False)
                   ).save_pretrained(adapter)
    sources = [open_source("reasoning", adapter, lora_base=models["instruct"]),
               open_source("instruct", models["instruct"]), open_source("pretrained", models["pretrained"])]
    jobs = [merge.MergeJob(0.3, 0.6, "a"), merge.MergeJob(0.5, 0.5, "b"), merge.MergeJob(0.3, 0.2, "c")]
    plan = merge.plan_merge(*sources, jobs, save_intermediate=True)
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    for out, chunk, threads in ((whole, 1 << 20, 1), (chunked, 100, 5)):
        out.mkdir()
        merge.write_merges(plan, out, threads=threads, chunk_elements=chunk)
    for sub in ("a", "b", "c", "a/stage1", "b/stage1"):
        assert (whole / sub / "model.safetensors").read_bytes() == (chunked / sub / "model.safetensors").read_bytes()
    assert not (whole / "c" / "stage1").exists()  # one stage-1 model per distinct w
