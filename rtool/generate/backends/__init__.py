"""Generation backends (hf, vllm, openai) behind `rtool.generate.core`'s interface, and `open_backend`, which picks one.

    backend = open_backend("runs/sft")                 # auto: hf on CPU, vllm with a GPU
    backend = open_backend("http://localhost:8000/v1") # an OpenAI-compatible endpoint
    backend = open_backend("http://a:8000/v1,http://b:8000/v1")  # a fleet of endpoints (rtool.generate.backends.fleet)

The backends import the interface (`rtool.generate.core`: SamplingParams, Completion, Backend); nothing there imports
them, so the arrows point one way.
"""

from __future__ import annotations

import importlib.util

from rtool.errors import UserError, one_of
from rtool.generate.core import Backend
from rtool.log import logger

BACKENDS = ("auto", "hf", "vllm", "openai")


def is_url(text) -> bool:
    return isinstance(text, str) and text.startswith(("http://", "https://"))


def _fleet_urls(spec) -> list[str] | None:
    """The URLs of a comma-separated endpoint list; None for anything else (one URL, a model path)."""
    if not isinstance(spec, str) or "," not in spec:
        return None
    from rtool.generate.backends.fleet import parse_fleet

    return parse_fleet(spec)


def vllm_usable() -> bool:
    """True when vllm is installed and a CUDA GPU is visible (what `auto` needs to pick vllm)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def open_backend(spec, backend: str = "auto", *, base_url: str | None = None, api_model: str | None = None,
                 batch_size: int = 16, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False,
                 allow_pickle: bool = False, request_timeout: float = 60.0, max_retries: int = 5,
                 max_batch_tokens: int | None = None, chat_template: str | None = None,
                 vllm_engine: dict | None = None) -> Backend:
    """Open a generation backend for `spec` (a model dir/id/.gguf/adapter, or an http(s) endpoint URL).

    backend="auto" picks openai when `spec` or `base_url` is an http(s) URL, vllm when it is installed and a GPU
    is visible, else hf. `batch_size` is sequences per forward batch (hf), or concurrent requests per endpoint
    (openai). Several comma-separated URLs (in `spec` or `base_url`) are a fleet served together.
    `chat_template` (a template's text) replaces the model's on every backend; `vllm_engine` (vllm.engine_options)
    goes to vLLM's engine, and is an error with another backend.
    """
    one_of("backend", backend, BACKENDS)
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    fleet, model = _fleet_urls(spec), api_model
    if fleet is None and base_url:  # --base-url URL1,URL2 --teacher NAME
        fleet, model = _fleet_urls(base_url), api_model or (str(spec) if spec else None)
    if fleet is not None:
        if backend not in ("auto", "openai"):
            raise UserError(f"{len(fleet)} endpoint URLs given; the {backend} backend needs a local model",
                            hint="use --backend openai or auto")
        from rtool.generate.backends.fleet import FleetBackend

        _no_engine_options(vllm_engine, "openai")
        return FleetBackend(fleet, model=model, concurrency=batch_size, request_timeout=request_timeout,
                            max_retries=max_retries, chat_template=chat_template)
    if backend == "auto":
        backend = "openai" if is_url(spec) or is_url(base_url) else "vllm" if vllm_usable() else "hf"
        logger.debug("backend auto -> %s", backend)
    if backend != "vllm":
        _no_engine_options(vllm_engine, backend)
    if backend == "openai":
        from rtool.generate.backends.openai import OpenAIBackend

        if is_url(spec):
            url, model = spec, api_model
        elif base_url:
            url, model = base_url, api_model or (str(spec) if spec else None)
        else:
            raise UserError("the openai backend needs an endpoint", hint="pass --base-url http://HOST:PORT/v1")
        return OpenAIBackend(url, model=model, concurrency=batch_size, request_timeout=request_timeout,
                             max_retries=max_retries, chat_template=chat_template)
    if is_url(spec):
        raise UserError(f"{spec} is an endpoint URL; the {backend} backend needs a local model",
                        hint="use --backend openai or auto")
    if backend == "vllm":
        from rtool.generate.backends.vllm import VLLMBackend

        return VLLMBackend(spec, dtype=dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                           chat_template=chat_template, **(vllm_engine or {}))
    from rtool.generate.backends.hf import HFBackend

    return HFBackend.load(spec, batch_size=batch_size, dtype=dtype, device=device,
                          trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                          max_batch_tokens=max_batch_tokens, chat_template=chat_template)


def engine_settings(chat_template_file=None, tensor_parallel_size: int | None = None,
                    gpu_memory_utilization: float | None = None, max_model_len: int | None = None) -> dict:
    """open_backend's chat_template and vllm_engine from the flags of a generating command (--chat-template FILE
    read and checked; the vLLM engine options checked), to pass as `open_backend(spec, **engine_settings(...))`."""
    from rtool.generate.backends.vllm import engine_options
    from rtool.io.models import read_chat_template

    return {"chat_template": read_chat_template(chat_template_file),
            "vllm_engine": engine_options(tensor_parallel_size, gpu_memory_utilization, max_model_len)}


def _no_engine_options(vllm_engine: dict | None, backend: str) -> None:
    if vllm_engine:
        from rtool.generate.backends.vllm import engine_flags

        raise UserError(f"{engine_flags(vllm_engine)}: vLLM engine options, but the backend is {backend}",
                        hint="pass --backend vllm, or drop them")
