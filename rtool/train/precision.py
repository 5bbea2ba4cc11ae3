"""The precision and LoRA policy of every training command: which dtype the weights load in and which autocast the
trainer runs (`precision`, a pure function of the flags and the hardware), the `--lora*` flags (`LoraSettings`), and
what a LoRA run leaves behind (`merge_adapter`: the base with the adapter merged, in the base's own dtype).

    prec = precision("auto", lora=False)      # CPU: fp32; CUDA: fp32 master weights + bf16 autocast
    lora = LoraSettings(enabled=True, r=16); lora.check(); peft_config = lora.peft_config()
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rtool.errors import UserError, one_of
from rtool.log import logger

@dataclass
class LoraSettings:
    """`--lora*` flags. `targets` is "all-linear" or comma-separated module names."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: str = "all-linear"
    merge: bool = False

    def check(self) -> None:
        if self.merge and not self.enabled:
            raise UserError("--merge-lora needs --lora")
        if self.r < 1:
            raise UserError(f"--lora-r must be at least 1, got {self.r}")
        if self.alpha <= 0:
            raise UserError(f"--lora-alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--lora-dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules():
            raise UserError("--lora-targets is empty", hint="e.g. q_proj,v_proj or all-linear")

    def target_modules(self) -> str | list[str]:
        text = self.targets.strip()
        return text if text == "all-linear" else [name.strip() for name in text.split(",") if name.strip()]

    def peft_config(self, task_type: str = "CAUSAL_LM"):
        """A peft.LoraConfig for a model of `task_type` (PEFT's TaskType: CAUSAL_LM, TOKEN_CLS, ...), or None when
        LoRA is off."""
        if not self.enabled:
            return None
        from peft import LoraConfig

        return LoraConfig(task_type=task_type, r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules())


def lora_user_error(error: Exception) -> UserError | None:
    """The UserError for PEFT's "target modules not found" ValueError (a flag problem), else None."""
    text = str(error)
    if "Target modules" in text and "not found" in text:
        return UserError(f"--lora-targets: {text.splitlines()[0][:300]}",
                         hint="pass module names of this model (e.g. q_proj,v_proj) or all-linear")
    return None


@dataclass
class Precision:
    """How to load and run the model: `load_dtype`/`load_device` for `load_model`, `args` for the trainer."""

    device: str
    load_dtype: str
    load_device: str
    args: dict = field(default_factory=dict)


def precision(dtype: str = "auto", *, lora: bool = False, cuda_available: bool | None = None,
              bf16_supported: bool | None = None) -> Precision:
    """The weights dtype and mixed precision for training; a pure function of its arguments (the two hardware
    flags are detected when None), so tests on any machine can compute what a GPU run does.

    ==========================  ========================================  ========================================
    device, --dtype              full fine-tuning                          --lora (base weights frozen)
    ==========================  ========================================  ========================================
    CPU, auto | float32          float32 weights, no autocast              float32 weights, no autocast
    CPU, bfloat16                bfloat16 weights, no autocast             bfloat16 weights, no autocast
    CUDA with bf16, auto         float32 weights + bf16 autocast           bfloat16 weights + bf16 autocast
    CUDA, bfloat16               bfloat16 weights + bf16 autocast          bfloat16 weights + bf16 autocast
    CUDA without bf16, auto      float32 weights + fp16 autocast           float32 weights + fp16 autocast
    CUDA, float16                float32 weights + fp16 autocast           float32 weights + fp16 autocast
    CUDA, float32                float32 weights, no autocast              float32 weights, no autocast
    ==========================  ========================================  ========================================

    Why: AdamW on bf16 weights rounds away every update below bf16's resolution (one step at lr 2e-5 left ~70% of
    a model's weights unchanged; at REDI's 1e-6 nearly all), so full fine-tuning keeps float32 master weights and
    runs the forward/backward in bf16 autocast. LoRA trains float32 adapter weights (PEFT upcasts them) on a frozen
    base, which can stay bf16 and halve the memory. fp16 weights do not train with AdamW, so fp16 is autocast only.
    --dtype float16 on the CPU and bfloat16 on a GPU without it are errors. `use_cpu` on the CPU lets gloo run
    several processes. The model loads on the CPU and the trainer moves it to its (each rank's) device: a
    device_map would pin every rank to GPU 0 and make the trainer treat the model as model-parallel.
    """
    from rtool.io.models import DTYPES

    one_of("dtype", dtype, DTYPES)
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if cuda_available and bf16_supported is None:
        import torch

        bf16_supported = torch.cuda.is_bf16_supported()
    if not cuda_available:
        if dtype == "float16":
            raise UserError("--dtype float16 training needs a GPU", hint="use --dtype auto (float32 on CPU)")
        return Precision("cpu", "float32" if dtype == "auto" else dtype, "cpu",
                         {"bf16": False, "fp16": False, "use_cpu": True})
    if dtype == "auto":
        if not bf16_supported:
            dtype = "float16"
        elif lora:
            dtype = "bfloat16"
        else:  # float32 master weights, bf16 autocast
            return Precision("cuda", "float32", "cpu", {"bf16": True, "fp16": False})
    if dtype == "bfloat16":
        if not bf16_supported:
            raise UserError("this GPU does not support bfloat16", hint="use --dtype auto (fp16 mixed precision)")
        return Precision("cuda", "bfloat16", "cpu", {"bf16": True, "fp16": False})
    if dtype == "float16":
        return Precision("cuda", "float32", "cpu", {"bf16": False, "fp16": True})
    return Precision("cuda", "float32", "cpu", {"bf16": False, "fp16": False})


def gradient_checkpointing(asked: bool | None, prec: Precision, *, lora: bool) -> bool:
    """--gradient-checkpointing / --no-gradient-checkpointing as asked; auto (None): on for full fine-tuning on a GPU,
    where the activations of 16-32k-token traces, not the weights, fill the memory (TRL's and open-r1's default),
    off on the CPU (memory is rarely what stops a CPU run, and recomputing costs 20-30% more time) and with --lora
    (the frozen base keeps no optimizer state, so memory is seldom short)."""
    if asked is not None:
        return asked
    return prec.device == "cuda" and not lora


def merge_adapter(adapter_dir: Path, out_dir: Path, *, trust_remote_code: bool = False, allow_pickle: bool = False,
                  loader=None) -> Path:
    """Write the LoRA adapter in `adapter_dir` merged into its base model to `out_dir`, in the base's stored dtype.

    The base is loaded again, on the CPU, in that dtype, rather than merged in the trainer's copy: on a GPU a LoRA
    run loads the base in bf16, and merging there would round every tensor of a float32 base. So the merged model
    has the base's dtype, and only the adapted tensors differ from the base's. `loader` loads the adapter merged
    into its base, called like `rtool.io.models.load_model` (the default: a causal LM).
    """
    from rtool.io.models import load_model, save_model

    dtype = stored_dtype(adapter_dir, trust_remote_code=trust_remote_code)
    merged, tokenizer = (loader or load_model)(adapter_dir, dtype=dtype, device="cpu",
                                               trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    save_model(merged, tokenizer, out_dir)
    logger.info("merged LoRA model (%s) in %s", dtype, out_dir)
    return Path(out_dir)


def stored_dtype(spec, *, trust_remote_code: bool = False) -> str:
    """The dtype a checkpoint stores its weights in, as named in `--dtype`: its config's dtype (for a PEFT adapter,
    its base model's), float32 when the config names none (as transformers then loads it) and for GGUF files (a
    dequantized model's values fit float32 exactly, not bf16)."""
    from rtool.io.models import DTYPES, adapter_base_source, localize, resolve_source

    src = localize(resolve_source(spec, allow_pickle=True), allow_pickle=True)
    if src.kind == "gguf":
        return "float32"
    if src.kind == "peft":
        base = adapter_base_source(Path(src.path), allow_pickle=True)
        return stored_dtype(base.gguf_file or base.path, trust_remote_code=trust_remote_code)
    config_file = Path(src.path) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    else:  # a hub id: the config comes through the hub cache
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(src.path, trust_remote_code=trust_remote_code).to_dict()
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32").replace("torch.", "")
    return name if name in DTYPES and name != "auto" else "float32"
