"""Load and save causal language models: local dirs, hub ids, GGUF files and PEFT adapters, one entry point
(and, for prm-train, `load_token_classifier`: the same sources as a token-classification model).

    model, tok = load_model("runs/sft")                       # a saved HF dir (*.safetensors)
    model, tok = load_model("SmolLM2-135M-Instruct.Q4_1.gguf") # dequantized into a plain, savable model (and a
                                                               # copy cached for the next load: rtool.io.gguf_cache)
    model, tok = load_model("runs/lora", for_training=True)    # PEFT adapter on its base, still trainable
    model, tok = load_model("runs/sft", weights=False)          # its shapes only, on the meta device (see there)
    save_model(model, tok, "runs/out")                         # safetensors, written atomically

Pickle weights (.bin/.pt) are refused unless `allow_pickle=True`: unpickling runs code. Model code from a checkpoint
runs only with `trust_remote_code=True`. Hub ids resolve from the local cache when HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from rtool.atomic import atomic_dir
from rtool.errors import UserError, one_of
from rtool.log import logger

DTYPES = ("auto", "float32", "bfloat16", "float16")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; other names pass through after a check."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA GPU is available", hint="use --device cpu")
    if device != "cpu" and not device.startswith(("cuda", "mps", "xpu")):
        raise UserError(f"unknown device {device!r}", hint="valid: auto, cpu, cuda, cuda:N")
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu"):
    """'auto' -> bfloat16 on CUDA devices that support it, float16 on older GPUs, float32 on CPU."""
    import torch

    one_of("dtype", str(dtype), DTYPES)
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@dataclass
class Source:
    """Where a model spec points: kind is 'dir', 'gguf', 'peft' or 'hub'.

    A gguf Source names its directory (`path`, what a model loaded from it reports as its name) and its file;
    `converted` is a cached dequantized copy of that file, when one exists (see `rtool.io.gguf_cache`).
    """

    kind: str
    path: str
    gguf_file: str | None = None
    converted: str | None = None


def _looks_like_path(spec: str) -> bool:
    # Hub ids are 'name' or 'org/name'; anything else with path syntax is meant as a file the user mistyped.
    return (
        spec.startswith(("/", "./", "../", "~", ".\\"))
        or spec in (".", "..")
        or spec.endswith((".gguf", ".safetensors", ".bin", ".pt"))
        or spec.count("/") > 1
        or "\\" in spec
    )


def resolve_source(spec, *, allow_pickle: bool = False) -> Source:
    """Classify `spec` and check local weights; raise UserError for missing paths, no weights or pickle-only dirs."""
    text = str(spec)
    path = Path(os.path.expanduser(text))
    if path.is_file():
        if path.suffix == ".gguf":
            return Source("gguf", str(path.parent.resolve()), gguf_file=str(path.resolve()))
        raise UserError("not a model directory or .gguf file", path=text,
                        hint="pass the directory that holds config.json and *.safetensors")
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            _check_weights(path, ("adapter_model",), allow_pickle)
            return Source("peft", str(path))
        if list(path.glob("*.safetensors")):
            return Source("dir", str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1 and not (path / "config.json").is_file():
            return Source("gguf", str(path.resolve()), gguf_file=str(ggufs[0].resolve()))
        _check_weights(path, ("",), allow_pickle)
        return Source("dir", str(path))
    if _looks_like_path(text):
        raise UserError("no such model path", path=text)
    return Source("hub", text)


def _check_weights(path: Path, prefixes: tuple[str, ...], allow_pickle: bool) -> None:
    files = [p.name for p in path.iterdir() if p.is_file() and p.name.startswith(prefixes)]
    if any(name.endswith(".safetensors") for name in files):
        return
    if any(name.endswith(PICKLE_SUFFIXES) for name in files):
        if allow_pickle:
            return
        raise UserError("only pickle weights (.bin/.pt), no *.safetensors; unpickling can run arbitrary code",
                        path=str(path), hint="pass --allow-pickle if you trust this checkpoint")
    raise UserError(f"no model weights (*.safetensors) in {path}")


def localize(src: Source, *, allow_pickle: bool = False) -> Source:
    """Point a Source at the fastest local copy: a GGUF file's converted copy when one is cached, and for a hub id
    the local snapshot when the hub is off or unreachable; else return it as is.

    transformers looks up some files (adapter_config.json) online even with local_files_only, retrying for most of a
    minute when there is no network; loading the cached snapshot as a plain dir avoids that.
    """
    if src.kind == "gguf":
        from rtool.io import gguf_cache

        converted = gguf_cache.find(src.gguf_file)
        return replace(src, converted=str(converted)) if converted else src
    if src.kind != "hub":
        return src
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline and _hub_reachable():
        return src
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(src.path, local_files_only=True)
    except Exception as error:  # LocalEntryNotFoundError, HFValidationError for malformed ids, ...
        raise _hub_error(src.path, error) from error
    return resolve_source(local, allow_pickle=allow_pickle)


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    import threading
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:  # in a thread: getaddrinfo (DNS) ignores socket timeouts
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _hub_error(spec: str, error: Exception) -> UserError:
    return UserError(
        f"model {spec!r} is not a local path, and the hub cannot be reached or has no cached copy "
        f"({type(error).__name__})",
        hint="pass a local directory or .gguf file, or download it first while online",
    )


def read_chat_template(path) -> str | None:
    """The text of a `--chat-template FILE` (a Jinja chat template, as in a tokenizer's chat_template.jinja), checked
    to compile; None for None. A string that is no file and holds Jinja (`{{`, `{%`) is the template itself, as
    open-r1 recipes write `chat_template:` (and vLLM's --chat-template takes it). A missing file or a Jinja syntax
    error is a UserError naming the file (and line)."""
    from rtool.config import is_template_text

    if path is None:
        return None
    text = None
    if is_template_text(str(path)):
        try:
            inline = not Path(path).is_file()
        except OSError:  # a name too long for a file: the template's text
            inline = True
        if inline:
            path, text = "chat_template", str(path)
    try:
        text = text if text is not None else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("no such chat template file", path=path, field="chat-template") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the chat template: {error}", path=path) from None
    if not text.strip():
        raise UserError("the chat template file is empty", path=path)
    import jinja2

    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise UserError(f"not a valid Jinja template: {error.message}", path=path, line=error.lineno) from None
    return text


def load_tokenizer(spec, *, trust_remote_code: bool = False, allow_pickle: bool = False,
                   padding_side: str = "left", source: Source | None = None, chat_template: str | None = None):
    """Load the tokenizer of a model spec (same kinds as `load_model`) with a pad token and `padding_side` set.

    Left padding is what batched generation needs; pass padding_side="right" for training collators that expect it.
    `chat_template` (a template's text: `read_chat_template`) replaces the tokenizer's own, or gives one to a base
    model that has none; a tokenizer saved afterwards (a trained OUT) keeps it.
    """
    from transformers import AutoTokenizer

    src = source or localize(resolve_source(spec, allow_pickle=allow_pickle), allow_pickle=allow_pickle)
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    path = src.path
    if src.converted:
        path = src.converted
    elif src.kind == "gguf":
        kwargs["gguf_file"] = src.gguf_file
    elif src.kind == "peft":
        # An adapter dir saved by a trainer usually carries the (possibly extended) tokenizer; else use the base's.
        if not (Path(path) / "tokenizer_config.json").is_file():
            base = adapter_base_source(Path(path), allow_pickle=True)
            return load_tokenizer(base.path, trust_remote_code=trust_remote_code, padding_side=padding_side,
                                  source=base, chat_template=chat_template)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except OSError as error:
        if src.kind == "hub":
            raise _hub_error(src.path, error) from error
        raise UserError(f"cannot load a tokenizer: {str(error).splitlines()[0][:200]}", path=path) from error
    except Exception as error:
        if src.kind == "gguf" and not src.converted:
            raise _unreadable_gguf(src, error) from error
        raise
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError("tokenizer has neither a pad nor an eos token", path=path)
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _adapter_base(adapter_dir: Path) -> str:
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"unreadable adapter_config.json: {error}", path=adapter_dir) from error
    base = config.get("base_model_name_or_path")
    if not base:
        raise UserError("adapter_config.json has no base_model_name_or_path", path=adapter_dir,
                        field="base_model_name_or_path")
    # A relative base path was relative to where training ran; also try it relative to the adapter.
    if not Path(os.path.expanduser(base)).exists() and (adapter_dir / base).exists():
        return str(adapter_dir / base)
    return base


def adapter_base_source(adapter_dir: Path, *, allow_pickle: bool) -> Source:
    """The base model an adapter names, resolved; an error says the name came from the adapter's config (the user
    did not type it: a relative path recorded where training ran, a base since moved)."""
    base = _adapter_base(adapter_dir)
    try:
        return localize(resolve_source(base, allow_pickle=allow_pickle), allow_pickle=allow_pickle)
    except UserError as error:
        raise UserError(f"the adapter's base model {base!r}, named by base_model_name_or_path in "
                        f"adapter_config.json: {error.message}", path=adapter_dir / "adapter_config.json",
                        hint=error.hint or "point base_model_name_or_path at the base model's dir or hub id"
                        ) from error


def record_absolute_base(adapter_dir: Path) -> None:
    """Make a saved adapter's base_model_name_or_path absolute when it is a local path: PEFT records the path as the
    user typed it (`--model ../base`), which breaks as soon as the adapter is used from another directory. A hub
    id, or a path that does not exist here, is left as it is."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base or not Path(os.path.expanduser(base)).exists():
        return
    absolute = str(Path(os.path.expanduser(base)).resolve())
    if absolute != base:
        config["base_model_name_or_path"] = absolute
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_model(spec, *, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False,
               allow_pickle: bool = False, for_training: bool = False, chat_template: str | None = None,
               weights: bool = True):
    """Load (model, tokenizer) from a local dir, hub id, .gguf file or PEFT adapter dir.

    GGUF weights are dequantized into a plain model (savable and trainable). A PEFT adapter is loaded on its base
    model: kept as a trainable PeftModel when `for_training`, else merged into the base for fast inference.
    The model is in eval() mode unless `for_training`; the tokenizer pads left (right when `for_training`).
    `weights=False` builds the same model without reading its weights (`_empty_model`): for a training process
    that receives them from rank 0 (`rtool.train.sharding`).
    """
    src = localize(resolve_source(spec, allow_pickle=allow_pickle), allow_pickle=allow_pickle)
    require_causal_lm(src, spec)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if src.kind == "peft":
        model = _load_peft(src, torch_dtype, device, trust_remote_code, allow_pickle, for_training, weights)
    else:
        model = _load_base(src, torch_dtype, device, trust_remote_code, allow_pickle, weights)
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                               padding_side="right" if for_training else "left", source=src,
                               chat_template=chat_template)
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id  # else generate() warns on every call
    model.train(for_training)
    logger.debug("loaded %s (%s) as %s on %s", spec, src.kind, torch_dtype, device if weights else "meta")
    return model, tokenizer


def check_causal_lm(spec, *, allow_pickle: bool = False) -> None:
    """UserError when `spec` is a classifier (a PRM, a reward model) rather than a causal LM: checked with the
    flags, before data or weights load (`require_causal_lm`)."""
    require_causal_lm(localize(resolve_source(spec, allow_pickle=allow_pickle), allow_pickle=allow_pickle), spec)


def require_causal_lm(src: Source, spec) -> None:
    """UserError when the checkpoint `src` names is a classifier: its config's architecture (a PEFT adapter's task
    type, and its base's) ends with a classification head. Loaded as a causal LM, its head would be dropped and a
    random LM head made up, and training or sampling would go on without a word. A config that cannot be read
    passes: the loader reports it."""
    if src.kind == "peft":
        task = _adapter_task(Path(src.path))
        if task in NOT_LM_TASKS:
            raise UserError(f"a {task} adapter (a classifier such as a PRM), not a causal LM: its head would be "
                            "dropped", path=str(spec), hint=_CAUSAL_LM_HINT)
        base = adapter_base_source(Path(src.path), allow_pickle=True)
        require_causal_lm(base, spec)
        return
    if src.kind not in ("dir", "hub") or src.converted:
        return  # a GGUF file holds a language model
    arch = _architecture(src.path)
    if arch is not None and arch.endswith(NOT_LM_HEADS):
        raise UserError(f"a {arch} checkpoint (a classifier such as a PRM), not a causal LM: its head would be "
                        "dropped", path=str(spec), hint=_CAUSAL_LM_HINT)


# Heads a causal LM cannot stand in for (the config's `architectures`), and PEFT task types of such adapters.
NOT_LM_HEADS = ("ForTokenClassification", "ForSequenceClassification", "ForProcessRewardModel",
                "ForQuestionAnswering")
NOT_LM_TASKS = ("TOKEN_CLS", "SEQ_CLS", "QUESTION_ANS")
_CAUSAL_LM_HINT = "pass a causal LM; a PRM scores traces with rtool prm-score, or rewards grpo with --prm PATH"


def _architecture(path: str) -> str | None:
    from transformers import PretrainedConfig

    try:  # the raw config.json: no model code runs
        config = PretrainedConfig.get_config_dict(path)[0]
    except (OSError, ValueError):
        return None
    return (list(config.get("architectures") or []) or [None])[0]


def _load_base(src: Source, torch_dtype, device: str, trust_remote_code: bool, allow_pickle: bool,
               weights: bool = True):
    """The model `src` names, in `torch_dtype` on `device`. A GGUF file not converted yet is dequantized in float32
    on the CPU and kept so (`rtool.io.gguf_cache`), then cast and moved: its copy then serves every later load, in any
    dtype and on any device (a GPU's auto dtype is bf16). One too large to keep is dequantized straight into
    `torch_dtype` on `device`. Without `weights`, nothing is dequantized: the GGUF's config gives the shapes."""
    import torch

    if weights and src.kind == "gguf" and not src.converted:
        from rtool.io import gguf_cache

        if gguf_cache.worth_keeping(src.gguf_file):
            model = _from_pretrained(src, torch.float32, "cpu", trust_remote_code, allow_pickle)
            tokenizer = load_tokenizer(src.gguf_file, trust_remote_code=trust_remote_code, source=src)
            gguf_cache.store(src.gguf_file, model, lambda where: save_model(model, tokenizer, where))
            return model.to(device=device, dtype=torch_dtype)
    return _from_pretrained(src, torch_dtype, device, trust_remote_code, allow_pickle, weights)


def _from_pretrained(src: Source, torch_dtype, device: str, trust_remote_code: bool, allow_pickle: bool,
                     weights: bool = True):
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if device != "cpu":
        kwargs["device_map"] = device  # load straight onto the GPU, no CPU copy of the whole model
    path = src.path
    if src.converted:
        path = src.converted
        kwargs["use_safetensors"] = True
    elif src.kind == "gguf":
        from transformers import GgufConfig

        # Dequantize always: packed GGUF layers can neither be saved nor trained.
        kwargs.update(gguf_file=src.gguf_file, quantization_config=GgufConfig(dequantize=True))
    else:
        kwargs["use_safetensors"] = None if allow_pickle else True
    try:
        if weights:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        else:
            model = _empty_model(AutoModelForCausalLM, path, {"gguf_file": kwargs.get("gguf_file")}, torch_dtype,
                                 trust_remote_code)
    except ImportError as error:
        raise UserError(f"cannot load {src.gguf_file or src.path}: {error}") from error
    except Exception as error:
        if src.kind == "gguf" and not src.converted:
            raise _unreadable_gguf(src, error) from error
        if not isinstance(error, (OSError, ValueError)):
            raise
        if src.kind == "hub":
            raise _hub_error(src.path, error) from error
        raise UserError(f"cannot load model: {str(error).splitlines()[0][:300]}", path=src.path) from error
    if src.converted:
        # Named as if loaded from the GGUF itself: an adapter trained on it records that as its base, not the cache.
        model.name_or_path = model.config.name_or_path = src.path
    elif src.kind == "gguf":
        _clear_quantizer(model)
    return model


def _empty_model(auto, path: str, config_kwargs: dict, torch_dtype, trust_remote_code: bool):
    """The model `auto` builds from the config at `path` (`config_kwargs` added to it, e.g. gguf_file or labels)
    without reading a weight: its parameters on the meta device (shapes and dtypes, no memory), its buffers real
    (what the model computes, e.g. rotary frequencies, which no checkpoint holds), its generation config read as
    `from_pretrained` reads it. For a process that receives its weights from another (FSDP's broadcast from rank 0:
    `rtool.train.sharding`)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, GenerationConfig

    config_kwargs = {key: value for key, value in config_kwargs.items() if value is not None}
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **config_kwargs)
    with init_empty_weights():  # parameters only: buffers stay real
        model = auto.from_config(config, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    model.tie_weights()  # init_empty_weights gives each module its own meta parameter, tied ones too
    if model.can_generate() and "gguf_file" not in config_kwargs:
        try:
            model.generation_config = GenerationConfig.from_pretrained(path)
        except OSError:  # none saved: the one from_config derived from the model config stays
            pass
    return model


def _unreadable_gguf(src: Source, error: Exception) -> UserError:
    # The GGUF reader fails on a truncated or corrupt file with whatever the bytes trip (struct.error, IndexError,
    # KeyError on missing metadata): all of them mean the file, not rtool.
    detail = (str(error).splitlines() or [""])[0][:200]
    return UserError(f"cannot load this GGUF file ({type(error).__name__}: {detail})", path=src.gguf_file,
                     hint="is it complete? compare its size or checksum with the source")


def _clear_quantizer(model) -> None:
    # transformers 5.x does this itself for GgufConfig(dequantize=True) (HfQuantizer.remove_quantization_config);
    # kept so a model dequantized some other way still saves: save_pretrained refuses non-serializable quantizers.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def _load_peft(src: Source, torch_dtype, device, trust_remote_code, allow_pickle, for_training, weights=True):
    from peft import PeftModel

    base_spec = _adapter_base(Path(src.path))
    base_src = adapter_base_source(Path(src.path), allow_pickle=allow_pickle)
    if base_src.kind == "peft":
        raise UserError("an adapter's base model is itself an adapter; merge it first", path=src.path)
    # A GGUF base is kept unmerged; without `weights`, the adapter's (small) weights load onto an empty base.
    base = _load_base(base_src, torch_dtype, device, trust_remote_code, allow_pickle, weights)
    try:
        with _quiet_meta_copies():
            model = PeftModel.from_pretrained(base, src.path, is_trainable=for_training)
    except (OSError, ValueError, RuntimeError) as error:
        raise UserError(f"cannot load adapter onto {base_spec}: {str(error).splitlines()[0][:300]}",
                        path=src.path) from error
    return model if for_training else model.merge_and_unload()


@contextlib.contextmanager
def _quiet_meta_copies():
    """Adapter weights loaded onto an empty base (`weights=False`) are no-op copies into meta tensors, as meant:
    no torch warning for each."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="for .*: copying from a non-meta parameter")
        yield


def load_token_classifier(spec, *, num_labels: int = 2, new_tokens=(), dtype: str = "auto", device: str = "auto",
                          trust_remote_code: bool = False, allow_pickle: bool = False, for_training: bool = False,
                          weights: bool = True):
    """Load (model, tokenizer) as a `*ForTokenClassification` model with `num_labels` labels (prm-train's PRM).

    A token-classification checkpoint (its config's architecture) loads as it is, and must have `num_labels`
    labels. Any other model (a causal LM: a dir, hub id, GGUF file, or a causal-LM LoRA adapter, merged) lends its
    backbone to a fresh, randomly initialised head (seed torch first for a reproducible head). A token-classification
    LoRA adapter (PEFT task TOKEN_CLS, as prm-train --lora writes) loads on its base, kept trainable when
    `for_training`, else merged. `new_tokens` missing from the tokenizer are added, and the embedding matrix grows
    to cover them when it has no rows to spare. The tokenizer pads right when `for_training`. `weights=False`: the
    same model, its weights not read (as `load_model`'s).
    """
    import torch

    src = localize(resolve_source(spec, allow_pickle=allow_pickle), allow_pickle=allow_pickle)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                               padding_side="right" if for_training else "left", source=src)
    missing = [token for token in new_tokens if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing)
    if src.kind == "peft" and _adapter_task(Path(src.path)) == "TOKEN_CLS":
        from peft import PeftModel

        base_spec = adapter_base_source(Path(src.path), allow_pickle=allow_pickle).path
        base, _ = load_token_classifier(base_spec, num_labels=num_labels, new_tokens=new_tokens, dtype=dtype,
                                        device=device, trust_remote_code=trust_remote_code,
                                        allow_pickle=allow_pickle, weights=weights)
        _fit_embeddings(base, len(tokenizer))
        try:
            with _quiet_meta_copies():
                model = PeftModel.from_pretrained(base, src.path, is_trainable=for_training)
        except (OSError, ValueError, RuntimeError) as error:
            raise UserError(f"cannot load adapter onto {base_spec}: {str(error).splitlines()[0][:300]}",
                            path=src.path) from error
        model = model if for_training else model.merge_and_unload()
    else:
        model = _token_classifier(src, spec, num_labels, torch_dtype, torch_device, trust_remote_code, allow_pickle,
                                  weights)
        _fit_embeddings(model, len(tokenizer))
    model.train(for_training)
    return model, tokenizer


def _adapter_task(adapter_dir: Path) -> str | None:
    try:
        return json.loads((adapter_dir / "adapter_config.json").read_text()).get("task_type")
    except (OSError, ValueError) as error:
        raise UserError(f"unreadable adapter_config.json: {error}", path=adapter_dir) from error


def _token_classifier(src: Source, spec, num_labels: int, torch_dtype, device: str, trust_remote_code: bool,
                      allow_pickle: bool, weights: bool = True):
    """The model `src` names as a token classifier: as stored when it is one, else its backbone under a fresh head."""
    import transformers

    path = src.converted or src.path
    arch = None
    if src.kind in ("dir", "hub") or src.converted:
        try:
            config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read the model config: {str(error).splitlines()[0][:200]}", path=str(spec)) \
                from error
        arch = (getattr(config, "architectures", None) or [None])[0]
    if arch is not None and arch.endswith("ForTokenClassification"):
        if config.num_labels != num_labels:
            raise UserError(f"{spec} is a {arch} with {config.num_labels} labels; {num_labels} are needed",
                            hint="start from its causal LM instead, for a fresh head")
        return _from_pretrained_as(transformers.AutoModelForTokenClassification, src, path, {}, torch_dtype, device,
                                   trust_remote_code, allow_pickle, spec, weights=weights)
    if arch is not None and arch.endswith("ForProcessRewardModel"):
        raise UserError(f"{spec} is a {arch}: a head defined by code shipped with the checkpoint, which rtool does "
                        "not train", hint="start from its causal LM (e.g. the Qwen2.5-Math base) instead")
    labels = {"num_labels": num_labels, "id2label": {0: "incorrect", 1: "correct"} if num_labels == 2 else None}
    labels = {key: value for key, value in labels.items() if value is not None}
    if src.kind in ("gguf", "peft") and not src.converted:
        # A GGUF file not converted yet, or a causal-LM adapter: the causal LM (dequantized or merged), its backbone
        # copied under a fresh head.
        causal, _ = load_model(spec, dtype="float32", device="cpu", trust_remote_code=trust_remote_code,
                               allow_pickle=allow_pickle, weights=weights)
        config = causal.config
        for key, value in labels.items():
            setattr(config, key, value)
        config.architectures = None
        from accelerate import init_empty_weights

        with contextlib.nullcontext() if weights else init_empty_weights():
            model = transformers.AutoModelForTokenClassification.from_config(config, dtype=torch_dtype,
                                                                             trust_remote_code=trust_remote_code)
        if not weights:
            model.tie_weights()  # as in _empty_model
            return model
        model.base_model.load_state_dict(causal.base_model.state_dict())
        del causal
        return model.to(device=device, dtype=torch_dtype)
    return _from_pretrained_as(transformers.AutoModelForTokenClassification, src, path, labels, torch_dtype, device,
                               trust_remote_code, allow_pickle, spec, fresh_head=True, weights=weights)


def _from_pretrained_as(auto, src: Source, path: str, extra: dict, torch_dtype, device: str, trust_remote_code: bool,
                        allow_pickle: bool, spec, fresh_head: bool = False, weights: bool = True):
    import transformers

    if not weights:
        return _empty_model(auto, path, extra, torch_dtype, trust_remote_code)

    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, "output_loading_info": True,
                    "use_safetensors": True if src.converted else (None if allow_pickle else True), **extra}
    if device != "cpu":
        kwargs["device_map"] = device
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # a fresh head is meant: no "newly initialized" report
    try:
        model, info = auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        if src.kind == "hub":
            raise _hub_error(src.path, error) from error
        raise UserError(f"cannot load {spec} as a token classifier: {str(error).splitlines()[0][:300]}",
                        path=src.path) from error
    finally:
        transformers.logging.set_verbosity(verbosity)
    head = {name for name, _ in model.named_parameters() if not name.startswith(model.base_model_prefix + ".")}
    missing = set(info.get("missing_keys") or ()) - (head if fresh_head else set())
    if missing:
        raise UserError(f"{spec} lacks {len(missing)} weights of its {type(model).__name__} (e.g. "
                        f"{sorted(missing)[0]}): they would be random", path=src.path)
    if fresh_head:
        logger.debug("%s: its %s backbone under a fresh %d-label token-classification head", spec,
                    type(model.base_model).__name__, model.config.num_labels)
    return model


def _fit_embeddings(model, size: int) -> None:
    """Grow the input embeddings to `size` rows when tokens were added beyond the rows it has (new rows: the mean
    and covariance of the old ones, transformers' default; on the meta device, shapes only)."""
    import transformers

    embeddings = model.get_input_embeddings()
    rows = embeddings.num_embeddings
    if rows >= size:
        return
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its note on mean resizing: said once below, in rtool's words
    try:
        model.resize_token_embeddings(size, mean_resizing=not embeddings.weight.is_meta)
    finally:
        transformers.logging.set_verbosity(verbosity)
    logger.info("input embeddings grown from %d to %d rows for added tokens (new rows: the old rows' mean and "
                "covariance)", rows, size)


def save_model(model, tokenizer, out_dir) -> Path:
    """Write safetensors weights, config, generation config and tokenizer to `out_dir`, atomically.

    Everything is written into a temporary dir beside `out_dir` and renamed into place (`rtool.atomic`); an
    existing `out_dir` is replaced only once the new one is complete, and kept if writing fails. A PeftModel saves
    its adapter (which `load_model` reads back).
    """
    out = Path(out_dir)
    with atomic_dir(out, replace=True) as tmp:
        _clear_quantizer(model)
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out
