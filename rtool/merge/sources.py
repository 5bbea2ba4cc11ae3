"""Inputs of merge-bai: a model dir (config.json + safetensors) or a PEFT LoRA adapter dir on its base model.

    source = open_source("reasoning", Path("ckpt/sft"))                        # model dir or adapter dir
    source = open_source("reasoning", Path("ckpt/lora"), lora_base=Path("I"))  # adapter on a given base
    rows = source.read_rows(reader, name, row0, nrows, buffer, scratch)         # fp32 rows, LoRA delta added

An adapter is never merged to disk: its tensors replace the base's where it stores full weights, and each LoRA
module's scale · B·A (PEFT's merge rule: alpha / r or rsLoRA, alpha_pattern, fan_in_fan_out, embeddings) is added
to the rows as they are read. Bad inputs raise UserError naming the file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtool.errors import UserError
from rtool.merge.arithmetic import Scratch
from rtool.io.tensors import Reader, TensorEntry, file_tensors, list_tensors, read_json


@dataclass(frozen=True)
class LoraDelta:
    """One LoRA update of a base tensor W: W + scale · B·A, or W + scale · (B·A)ᵀ for embeddings and
    fan_in_fan_out layers."""

    a: TensorEntry
    b: TensorEntry
    scale: float
    transposed: bool


@dataclass
class Source:
    """One merge input: a model dir, or a PEFT LoRA adapter dir applied to its base model on the fly."""

    role: str
    path: Path
    kind: str  # "model" | "lora"
    model_dir: Path  # the dir with config.json and the (base) weights
    config: dict
    tensors: dict[str, TensorEntry]  # base tensors, with an adapter's full replacements already swapped in
    deltas: dict[str, LoraDelta] = field(default_factory=dict)

    @property
    def files_dir(self) -> Path:
        """Where config and tokenizer files come from: an adapter dir that has tokenizer files, else model_dir."""
        if self.kind == "lora" and any((self.path / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
            return self.path
        return self.model_dir

    def read_rows(self, reader: Reader, name: str, row0: int, nrows: int, buffer: np.ndarray,
                  scratch: Scratch) -> np.ndarray:
        """Rows [row0, row0 + nrows) of tensor `name` as a flat fp32 array, LoRA delta included: a view of
        the file where possible, else `buffer` (fp32, large enough)."""
        rows = reader.rows_fp32(self.tensors[name], row0, nrows, buffer)
        delta = self.deltas.get(name)
        if delta is None:
            return rows
        if not np.shares_memory(rows, buffer):  # a read-only view of the file: copy before adding
            np.copyto(buffer[: rows.size], rows)
            rows = buffer[: rows.size]
        a = reader.rows_fp32(delta.a, 0, delta.a.rows, scratch.get("lora.a", delta.a.numel, np.float32))
        b = reader.rows_fp32(delta.b, 0, delta.b.rows, scratch.get("lora.b", delta.b.numel, np.float32))
        a, b = a.reshape(delta.a.shape), b.reshape(delta.b.shape)
        # PEFT's merge: W + (B @ A) * scaling, transposed for embeddings and fan_in_fan_out layers.
        part = (a[:, row0:row0 + nrows].T @ b.T) if delta.transposed else (b[row0:row0 + nrows] @ a)
        part *= np.float32(delta.scale)
        matrix = rows.reshape(nrows, -1)
        matrix += part
        return rows

    def prefetch(self, reader: Reader, name: str, row0: int, nrows: int) -> None:
        """Start reading these rows into the file cache (see Reader.prefetch)."""
        reader.prefetch(self.tensors[name], row0, nrows)

    def release(self, reader: Reader, name: str, row0: int, nrows: int) -> None:
        """Drop the pages of these rows from the process (see Reader.release)."""
        reader.release(self.tensors[name], row0, nrows)


def open_source(role: str, path: Path, lora_base: Path | None = None) -> Source:
    """Open a model dir (config.json + safetensors) or a LoRA adapter dir (adapter_config.json) for reading."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{role} model: no such directory", path=path)
    if not path.is_dir():
        raise UserError(f"{role} model: not a directory", path=path)
    if (path / "adapter_config.json").is_file():
        return _open_lora(role, path, lora_base)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UserError(f"{role} model: no config.json", path=path, hint="pass a Hugging Face model dir")
    return Source(role, path, "model", path, read_json(config_path), list_tensors(path))


def _open_lora(role: str, path: Path, lora_base: Path | None) -> Source:
    adapter_config = read_json(path / "adapter_config.json")
    where = path / "adapter_config.json"
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{role}: peft_type {adapter_config.get('peft_type')!r} is not supported, only LORA",
                        path=where)
    for flag in ("use_dora", "lora_bias"):
        if adapter_config.get(flag):
            raise UserError(f"{role}: LoRA adapters with {flag}=true are not supported", path=where,
                            hint="merge it with PEFT's merge_and_unload() and pass the merged model")
    base = lora_base
    if base is None:
        named = adapter_config.get("base_model_name_or_path")
        if not named or not Path(named).is_dir():
            raise UserError(f"{role}: the adapter's base model {named!r} is not a local directory", path=where,
                            hint="pass --lora-base DIR")
        base = Path(named)
    base_source = open_source(role, Path(base))
    if base_source.kind != "model":
        raise UserError(f"{role}: the base of a LoRA adapter must be a model dir, not another adapter", path=base)
    adapter_file = path / "adapter_model.safetensors"
    if not adapter_file.is_file():
        raise UserError(f"{role}: no adapter_model.safetensors in the adapter dir", path=path,
                        hint="save the adapter with safe_serialization (PEFT's default)")
    tensors = dict(base_source.tensors)
    parts: dict[str, dict[str, TensorEntry]] = {}
    for entry in file_tensors(adapter_file):
        key = entry.name.removeprefix("base_model.model.")
        for suffix, (kind, slot) in _LORA_SUFFIXES.items():
            if key.endswith(suffix):
                parts.setdefault(key[: -len(suffix)], {})[slot] = entry
                parts[key[: -len(suffix)]]["kind"] = kind
                break
        else:
            target = key.replace(".base_layer.", ".")
            if target not in tensors:
                raise UserError(f"{role}: adapter tensor {entry.name!r} matches no tensor of the base model",
                                path=adapter_file)
            _same_shape(role, target, tensors[target], entry, adapter_file)
            tensors[target] = TensorEntry(target, entry.dtype, entry.shape, entry.path, entry.offset, entry.nbytes)
    deltas = {}
    for module, slots in parts.items():
        target = module + ".weight"
        if "a" not in slots or "b" not in slots or target not in tensors:
            raise UserError(f"{role}: LoRA module {module!r} is incomplete or matches no base tensor "
                            f"{target!r}", path=adapter_file)
        a, b = slots["a"], slots["b"]
        transposed = slots["kind"] == "embedding" or bool(adapter_config.get("fan_in_fan_out"))
        rank = a.shape[0]
        shape = (a.shape[1], b.shape[0]) if transposed else (b.shape[0], a.shape[1])
        if len(a.shape) != 2 or len(b.shape) != 2 or b.shape[1] != rank or shape != tensors[target].shape:
            raise UserError(f"{role}: LoRA module {module!r} has A {list(a.shape)} and B {list(b.shape)}, which do "
                            f"not fit base tensor {target!r} of shape {list(tensors[target].shape)}", path=adapter_file)
        alpha = _pattern_value(adapter_config.get("alpha_pattern") or {}, module, adapter_config.get("lora_alpha", 8))
        scale = alpha / math.sqrt(rank) if adapter_config.get("use_rslora") else alpha / rank
        deltas[target] = LoraDelta(a, b, float(scale), transposed)
    return Source(role, path, "lora", base_source.model_dir, base_source.config, tensors, deltas)


_LORA_SUFFIXES = {
    ".lora_A.weight": ("linear", "a"),
    ".lora_B.weight": ("linear", "b"),
    ".lora_embedding_A": ("embedding", "a"),
    ".lora_embedding_B": ("embedding", "b"),
}


def _pattern_value(patterns: dict, module: str, default):
    # PEFT matches rank_pattern / alpha_pattern keys as a suffix of the module name (peft.utils.get_pattern_key).
    for pattern, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return value
    return default


def _same_shape(role: str, name: str, want: TensorEntry, got: TensorEntry, path: Path) -> None:
    if want.shape != got.shape:
        raise UserError(f"{role}: adapter tensor for {name!r} has shape {list(got.shape)} but the base model's is "
                        f"{list(want.shape)}", path=path)
