"""Balanced Actor Initialization (BAI, arXiv 2509.00309): a two-stage weighted merge that streams tensors.

    stage 1:  θ_mid = w · θ_reasoning + (1 − w) · θ_instruct
    stage 2:  θ_bai = v · θ_mid + (1 − v) · θ_pretrained

    plan = plan_merge(open_source("reasoning", r), open_source("instruct", i), open_source("pretrained", p),
                      jobs=[MergeJob(w=0.5, v=0.5)], method="linear")
    write_merges(plan, out_dir)          # out_dir/<job.subdir> for each job, or out_dir itself for one job

Both stages run per tensor in one pass, in fp32, over row chunks of a few MB, with several threads: each chunk of
the three inputs is read once (LoRA deltas B·A added on the fly) and every job's result is written straight into
its place in the sharded output. Memory holds a few chunks per thread, never a model.

The arithmetic equals mergekit's, bit for bit in fp32 (`linear_pair`, `task_arithmetic_pair`); both are plain
numpy functions with table tests. Everything here raises UserError for bad input and never prints.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtool.errors import UserError, one_of
from rtool.log import logger
from rtool.safetensors_io import (DTYPE_NAMES, FLOAT_DTYPES, INDEX_NAME, ITEMSIZE, Reader, Shard, ShardWriter,
                                  TensorEntry, file_tensors, fp32_to, header_sha256, list_tensors, plan_shards,
                                  read_json, weight_files, write_index)

_INT64_MIN = np.iinfo(np.int64).min


class Scratch:
    """Reusable buffers of one thread, so a merge allocates per thread, not per chunk."""

    def __init__(self):
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, key: str, n: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.nbytes < n * dtype.itemsize:
            buffer = np.empty(n * dtype.itemsize, dtype=np.uint8)
            self._buffers[key] = buffer
        return buffer[: n * dtype.itemsize].view(dtype)


def linear_pair(a: np.ndarray, wa: float, b: np.ndarray, wb: float, out: np.ndarray,
                scratch: Scratch | None = None) -> np.ndarray:
    """out = (wa·a + wb·b) / (wa + wb) on fp32 arrays, rounded exactly like mergekit's `linear` (normalize: true).

    mergekit (merge_methods/linear.py) computes, in fp32: result = zeros; result.addcmul_(a, wa);
    result.addcmul_(b, wb); result.div_(wa + wb). torch's addcmul is a fused multiply-add on CPUs with FMA and on
    GPUs, so per element: t = fma(a, wa, +0); out = fma(b, wb, t) / fl32(wa + wb). numpy has no FMA. When wb is a
    power of two (w = 0.5, the default) b·wb is exact in fp32 and a plain fp32 add is the fused result. Otherwise
    b·wb is exact in fp64 (24 + 24 bits), so fl32(fl64(b·wb + t)) is the fused result except where the fp64 sum
    was rounded onto an fp32 halfway point (double rounding); those elements are found by their bit pattern and
    recomputed exactly (`_fma32_exact`). `out` must not alias `a` or `b`.
    """
    scratch = scratch or Scratch()
    wa32, wb32 = np.float32(wa), np.float32(wb)
    t = scratch.get("linear.t", a.size, np.float32).reshape(a.shape)
    if wa32 == 0:
        np.multiply(a, wa32, out=t)
        np.add(t, np.float32(0), out=t)
    elif _has_negative_zero(a):
        # fma(a, wa, +0) equals (a + 0) · wa: adding +0 first turns -0 into +0 as the fused add would, and an
        # underflowing negative product keeps its sign in both.
        np.add(a, np.float32(0), out=t)
        np.multiply(t, wa32, out=t)
    else:
        np.multiply(a, wa32, out=t)  # without -0 in `a`, a · wa already equals fma(a, wa, +0)
    if _is_power_of_two(wb32) and _exact_product(b, wb32, out):
        # b·wb is exact in fp32 here, so one fp32 add rounds b·wb + t once, as the FMA does: no fp64 needed.
        np.add(out, t, out=out)
    elif _product_grid_ok(wb32):
        s = scratch.get("linear.s", a.size, np.float64).reshape(a.shape)
        np.multiply(b, np.float64(wb32), out=s)
        np.add(s, t, out=s)
        np.copyto(out, s, casting="same_kind")
        if not _is_power_of_two(wb32):
            # An fp32 halfway point in the normal range has fp64 fraction bits 28..0 equal to 1000...0. Shifting
            # them to the top leaves exactly INT64_MIN there, and a min() finds it faster than a compare would.
            # Exact sums that land there are rounded right already; _fma32_exact redoes them all the same.
            bits = s.view(np.uint64)
            np.left_shift(bits, np.uint64(35), out=bits)
            if bits.view(np.int64).min() == _INT64_MIN:
                flat = np.flatnonzero(bits.view(np.int64).ravel() == _INT64_MIN)
                out.ravel()[flat] = _fma32_exact(b.ravel()[flat], wb32, t.ravel()[flat])
    else:
        np.copyto(out, _fma32_exact(b, wb32, t))
    denominator = np.float32(wa32 + wb32)
    if denominator != 1:
        np.divide(out, denominator, out=out)
    return out


def _exact_product(b: np.ndarray, w32: np.float32, out: np.ndarray) -> bool:
    """out = b·w in fp32; True if every product is exact. For w a power of two only an underflow (a product
    below the normal range losing bits) can round, and the hardware flags exactly that."""
    try:
        with np.errstate(under="raise"):
            np.multiply(b, w32, out=out)
    except FloatingPointError:
        return False
    return True


def _has_negative_zero(a: np.ndarray) -> bool:
    # -0.0 is 0x80000000, the smallest int32: one fast min() instead of a pass that writes.
    if not a.flags.c_contiguous:
        return True
    return bool(a.reshape(-1).view(np.int32).min() == np.iinfo(np.int32).min)


def _is_power_of_two(w32: np.float32) -> bool:
    """True for 0 and powers of two (0.5, 0.25, 1): then b·w has b's 24 bits, and an fp64 sum b·w + t that is
    rounded at all lies far from any fp32 halfway point (its smaller term is below 2^-29 of the larger), so no
    double rounding can happen and the check is skipped. Sums of so few bits often land exactly on halfway
    points, which would otherwise all go the slow way."""
    return w32 == 0 or math.frexp(float(w32))[0] == 0.5


def _product_grid_ok(w32: np.float32) -> bool:
    """True when w is a multiple of 2^-30: then b·w + t is a multiple of 2^-179 and every result below the fp32
    normal range (2^-126) is exact in fp64, so the halfway-point check above needs to cover only normal numbers.
    Weights from 2^-7 to 1 always are; smaller ones take the exact path."""
    return w32 == 0 or float(w32) * 2.0**30 == math.floor(float(w32) * 2.0**30)


def _fma32_exact(b: np.ndarray, w32: np.float32, c: np.ndarray) -> np.ndarray:
    """fl32(b·w + c) rounded once, for fp32 arrays b, c: fp64 sum with round-to-odd, then round to fp32.

    Rounding to odd in a format with at least 2p + 2 bits, then to nearest in p bits, is correctly rounded
    (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd",
    IEEE TC 2008); 53 >= 2·24 + 2. The fp64 rounding error comes from Knuth's TwoSum.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        p = b.astype(np.float64) * np.float64(w32)
        c64 = c.astype(np.float64)
        s = p + c64
        bb = s - p
        error = (p - (s - bb)) + (c64 - bb)
        even = (s.view(np.uint64) & np.uint64(1)) == 0
        fix = (error != 0) & even & np.isfinite(s)
    s[fix] = np.nextafter(s[fix], np.where(error[fix] > 0, np.inf, -np.inf))
    return s.astype(np.float32)


def task_arithmetic_pair(base: np.ndarray, x: np.ndarray, wx: float, y: np.ndarray | None, wy: float,
                         out: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """out = base + (wx·(x − base) + wy·(y − base)) in fp32, as mergekit's `task_arithmetic` (normalize: false,
    lambda 1) rounds it: each delta is computed, scaled and summed as separate fp32 operations. `y=None` merges
    one model: out = base + wx·(x − base). `out` must not alias the inputs."""
    scratch = scratch or Scratch()
    np.subtract(x, base, out=out)
    np.multiply(out, np.float32(wx), out=out)
    if y is not None:
        d = scratch.get("task.d", base.size, np.float32).reshape(base.shape)
        np.subtract(y, base, out=d)
        np.multiply(d, np.float32(wy), out=d)
        np.add(out, d, out=out)
    np.add(base, out, out=out)
    return out


METHODS = ("linear", "task-arithmetic")
# Methods rtool does not reimplement: run through mergekit's Python API (pip install 'rtool[mergekit]').
MERGEKIT_METHODS = {"slerp": "slerp", "ties": "ties", "dare-ties": "dare_ties", "dare-linear": "dare_linear"}


def bai_stage1(method: str, reasoning: np.ndarray, instruct: np.ndarray, pretrained: np.ndarray, w: float,
               out: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """θ_mid = w·θ_reasoning + (1 − w)·θ_instruct (task-arithmetic: as deltas from θ_pretrained)."""
    if method == "linear":
        return linear_pair(reasoning, w, instruct, 1.0 - w, out, scratch)
    return task_arithmetic_pair(pretrained, reasoning, w, instruct, 1.0 - w, out, scratch)


def bai_stage2(method: str, mid: np.ndarray, pretrained: np.ndarray, v: float, out: np.ndarray,
               scratch: Scratch | None = None) -> np.ndarray:
    """θ_bai = v·θ_mid + (1 − v)·θ_pretrained (task-arithmetic: θ_P + v·(θ_mid − θ_P))."""
    if method == "linear":
        return linear_pair(mid, v, pretrained, 1.0 - v, out, scratch)
    return task_arithmetic_pair(pretrained, mid, v, None, 0.0, out, scratch)


def bai(method: str, reasoning: np.ndarray, instruct: np.ndarray, pretrained: np.ndarray, w: float, v: float,
        scratch: Scratch | None = None) -> np.ndarray:
    """Both stages on whole fp32 arrays; returns θ_bai. The streaming merge calls the stages chunk by chunk."""
    scratch = scratch or Scratch()
    mid = bai_stage1(method, reasoning, instruct, pretrained, w, np.empty_like(reasoning), scratch)
    return bai_stage2(method, mid, pretrained, v, np.empty_like(reasoning), scratch)



def check_weight(name: str, value: float) -> float:
    """A stage weight must lie in [0, 1]: it is a share of one model in a two-model average."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise UserError(f"{name} must be in [0, 1], got {value}", field=name)
    return float(value)


def parse_sweep(text: str) -> list[tuple[float, float]]:
    """'0.3:0.5,0.5:0.5' -> [(0.3, 0.5), (0.5, 0.5)]: (w, v) pairs, each weight in [0, 1], no duplicates."""
    pairs = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        parts = item.split(":")
        try:
            w, v = (float(x) for x in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            w = v = None
        if w is None:
            raise UserError(f"bad --sweep item {item!r}", field="sweep", hint="expected W:V pairs like 0.3:0.5,0.7:0.5")
        pairs.append((check_weight("w", w), check_weight("v", v)))
    if not pairs:
        raise UserError("--sweep names no (w, v) pair", field="sweep", hint="expected W:V pairs like 0.3:0.5,0.7:0.5")
    seen = set()
    for pair in pairs:
        if pair in seen:
            raise UserError(f"--sweep names w={pair[0]:g}, v={pair[1]:g} twice", field="sweep")
        seen.add(pair)
    return pairs


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


@dataclass(frozen=True)
class MergeJob:
    """One output of a run: weights w, v and the subdirectory it goes to (None: the output dir itself)."""

    w: float
    v: float
    subdir: str | None = None


def job_dirname(w: float, v: float) -> str:
    """Subdirectory name of one sweep point: w0.3-v0.5."""
    return f"w{w:g}-v{v:g}"


@dataclass
class MergePlan:
    """Everything a merge will do, checked: inputs, tensor order and shapes, output dtypes and file layout."""

    method: str
    reasoning: Source
    instruct: Source
    pretrained: Source
    jobs: list[MergeJob]
    names: list[str]
    out_dtypes: dict[str, str]
    shards: list[Shard]
    save_intermediate: bool = False

    @property
    def sources(self) -> tuple[Source, Source, Source]:
        return self.reasoning, self.instruct, self.pretrained

    @property
    def output_bytes(self) -> int:
        """Bytes of one output model's weight files."""
        return sum(shard.size for shard in self.shards)

    @property
    def read_bytes(self) -> int:
        """Bytes read from the inputs: each tensor of each input once (LoRA factors once per chunk)."""
        return sum(s.tensors[n].nbytes for s in self.sources for n in self.names) + sum(
            d.a.nbytes + d.b.nbytes for s in self.sources for d in s.deltas.values())

    def summary(self) -> dict:
        """The plan as a JSON-ready dict (what --dry-run prints)."""
        outputs = len(self.jobs) * (1 + (self.save_intermediate and 1))
        return {
            "method": self.method,
            "jobs": [{"w": j.w, "v": j.v, "subdir": j.subdir} for j in self.jobs],
            "inputs": {s.role: {"path": str(s.path), "kind": s.kind, "tensors": len(s.tensors),
                                "lora_modules": len(s.deltas)} for s in self.sources},
            "tensors": len(self.names),
            "parameters": sum(self.instruct.tensors[n].numel for n in self.names),
            "read_bytes": self.read_bytes,
            "output_dtypes": sorted(set(self.out_dtypes.values())),
            "output_shards": len(self.shards),
            "output_bytes_per_model": self.output_bytes,
            "output_bytes_total": self.output_bytes * outputs,
        }


def plan_merge(reasoning: Source, instruct: Source, pretrained: Source, jobs: list[MergeJob], *,
               method: str = "linear", dtype: str = "auto", max_shard_size: int = 5 * 10**9,
               save_intermediate: bool = False) -> MergePlan:
    """Check that the three inputs can be merged and lay out the output. Raises UserError naming the first
    problem: different architectures, a tensor one input lacks, different shapes, a non-float dtype."""
    one_of("method", method, (*METHODS, *MERGEKIT_METHODS))
    for job in jobs:
        check_weight("w", job.w)
        check_weight("v", job.v)
    for other in (reasoning, pretrained):
        for key in ("architectures", "model_type"):
            if other.config.get(key) != instruct.config.get(key):
                raise UserError(f"different architectures in config.json: {other.role} has {key} "
                                f"{other.config.get(key)} ({other.model_dir}), instruct has "
                                f"{instruct.config.get(key)} ({instruct.model_dir})",
                                path=other.model_dir / "config.json")
    names = sorted(instruct.tensors, key=_natural_key)
    for other in (reasoning, pretrained):
        missing = sorted(set(instruct.tensors) - set(other.tensors), key=_natural_key)
        if missing:
            raise UserError(f"{other.role} model lacks tensor {missing[0]!r} that the instruct model has "
                            f"({len(missing)} missing)", path=other.path)
        extra = sorted(set(other.tensors) - set(instruct.tensors), key=_natural_key)
        if extra:
            raise UserError(f"{other.role} model has tensor {extra[0]!r} that the instruct model lacks "
                            f"({len(extra)} extra)", path=other.path)
    for name in names:
        want = instruct.tensors[name]
        for other in (reasoning, pretrained):
            got = other.tensors[name]
            if got.shape != want.shape:
                hint = "different vocabulary sizes: merge models that share one tokenizer" if (
                    "embed" in name or "lm_head" in name) else None
                raise UserError(f"tensor {name!r} has shape {list(got.shape)} in the {other.role} model but "
                                f"{list(want.shape)} in the instruct model", path=got.path, hint=hint)
        for source in (reasoning, instruct, pretrained):
            entry = source.tensors[name]
            if entry.dtype not in FLOAT_DTYPES:
                raise UserError(f"tensor {name!r} has dtype {entry.dtype} in the {source.role} model; only "
                                f"{', '.join(FLOAT_DTYPES)} tensors can be merged", path=entry.path)
    if dtype == "auto":
        out_dtypes = {n: instruct.tensors[n].dtype for n in names}
    else:
        out_dtypes = {n: DTYPE_NAMES[one_of("dtype", dtype, ("auto", *DTYPE_NAMES))] for n in names}
    shards = plan_shards([(n, out_dtypes[n], instruct.tensors[n].shape) for n in names], max_shard_size)
    return MergePlan(method, reasoning, instruct, pretrained, list(jobs), names, out_dtypes, shards,
                     save_intermediate)


def _natural_key(name: str) -> list:
    # layers.2 before layers.10, so shards hold whole neighbouring layers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# 256K elements (1 MB of fp32) per chunk: the working set of both stages stays in cache; larger is slower.
CHUNK_ELEMENTS = 1 << 18
# Read-ahead distance in chunks (about 32 MB per input): enough to keep a disk busy when inputs are not cached.
PREFETCH_CHUNKS = 32


def write_merges(plan: MergePlan, out_root: Path, *, threads: int = 0,
                 chunk_elements: int = CHUNK_ELEMENTS) -> list[Path]:
    """Compute every job of `plan` and write its weight files under `out_root` (an existing, empty dir).

    Returns the job dirs. One pass: each row chunk of each input is read once; per distinct w, stage 1 runs once
    and stage 2 once per job. Threads share nothing but the file descriptors; each writes its chunks in place
    with pwrite. A non-finite result raises UserError naming the tensor, the element and the input values there.
    """
    threads = threads or min(8, os.cpu_count() or 1)
    job_dirs = [out_root / job.subdir if job.subdir else out_root for job in plan.jobs]
    writers: list[ShardWriter] = []
    stage1_writers: dict[float, ShardWriter] = {}
    by_w: dict[float, list[tuple[MergeJob, ShardWriter]]] = {}
    try:
        for job, job_dir in zip(plan.jobs, job_dirs):
            job_dir.mkdir(parents=True, exist_ok=True)
            writers.append(ShardWriter(job_dir, plan.shards))
            by_w.setdefault(job.w, []).append((job, writers[-1]))
            if plan.save_intermediate and job.w not in stage1_writers:
                (job_dir / "stage1").mkdir()
                stage1_writers[job.w] = ShardWriter(job_dir / "stage1", plan.shards)
        # In the instruct model's file order, so reads move forward through each file.
        in_file_order = sorted(plan.names, key=lambda n: (str(plan.instruct.tensors[n].path),
                                                         plan.instruct.tensors[n].offset))
        items = [(name, row0, min(rows_per, entry.rows - row0))
                 for name in in_file_order
                 for entry in [plan.instruct.tensors[name]]
                 for rows_per in [max(1, chunk_elements // entry.row_len)]
                 for row0 in range(0, entry.rows, rows_per)]
        start = time.perf_counter()
        with Reader() as reader:

            def work(k: int, scratch: Scratch) -> None:
                if k + PREFETCH_CHUNKS < len(items):
                    name, row0, nrows = items[k + PREFETCH_CHUNKS]
                    for source in plan.sources:
                        source.prefetch(reader, name, row0, nrows)
                _merge_chunk(plan, reader, items[k], scratch, by_w, stage1_writers)

            _run_parallel(len(items), threads, work)
        computed = time.perf_counter()
        for writer in [*writers, *stage1_writers.values()]:
            writer.close(sync=True)
        logger.debug("%d chunks on %d threads: %.2f s, then fsync %.2f s", len(items), threads,
                     computed - start, time.perf_counter() - computed)
    finally:
        for writer in [*writers, *stage1_writers.values()]:
            writer.close(sync=False)
    return job_dirs


def _merge_chunk(plan: MergePlan, reader: Reader, item: tuple[str, int, int], scratch: Scratch,
                 by_w: dict, stage1_writers: dict) -> None:
    name, row0, nrows = item
    with np.errstate(all="ignore"):  # NaN/Inf are reported by _check_finite, not as numpy warnings
        _merge_rows(plan, reader, name, row0, nrows, scratch, by_w, stage1_writers)
    for source in plan.sources:
        source.release(reader, name, row0, nrows)


def _merge_rows(plan: MergePlan, reader: Reader, name: str, row0: int, nrows: int, scratch: Scratch,
                by_w: dict, stage1_writers: dict) -> None:
    entry = plan.instruct.tensors[name]
    n = nrows * entry.row_len
    inputs = [source.read_rows(reader, name, row0, nrows, scratch.get(f"in.{source.role}", n, np.float32), scratch)
              for source in plan.sources]
    reasoning, instruct, pretrained = inputs
    dtype = plan.out_dtypes[name]
    byte_offset = row0 * entry.row_len * ITEMSIZE[dtype]
    cast = scratch.get("cast", n * 2, np.uint8)
    for w, group in by_w.items():
        mid = bai_stage1(plan.method, reasoning, instruct, pretrained, w, scratch.get("mid", n, np.float32), scratch)
        if w in stage1_writers:
            _check_finite(name, mid, row0 * entry.row_len, inputs, f"stage 1, w={w:g}")
            stage1_writers[w].write(name, byte_offset, fp32_to(dtype, mid, cast))
        for job, writer in group:
            out = bai_stage2(plan.method, mid, pretrained, job.v, scratch.get("out", n, np.float32), scratch)
            _check_finite(name, out, row0 * entry.row_len, inputs, f"w={w:g}, v={job.v:g}")
            data = fp32_to(dtype, out, cast)
            if dtype == "F16":
                _check_finite(name, data.view(np.float16), row0 * entry.row_len, inputs,
                              f"w={w:g}, v={job.v:g}, after conversion to float16")
            writer.write(name, byte_offset, data)


def _check_finite(name: str, x: np.ndarray, first: int, inputs: list[np.ndarray], where: str) -> None:
    # A sum is one fast read; it is finite unless some element is NaN/Inf (or the sum overflows: then look closer).
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(x, dtype=np.float32)):
            return
    bad = np.flatnonzero(~np.isfinite(x))
    if not bad.size:
        return
    k = int(bad[0])
    values = ", ".join(f"{role}={float(t[k]):g}" for role, t in zip(("reasoning", "instruct", "pretrained"), inputs))
    raise UserError(f"merged tensor {name!r} has NaN/Inf ({where}; {bad.size} in this chunk, first at element "
                    f"{first + k}, inputs there: {values})", hint="check the inputs for NaN/Inf")


def _run_parallel(count: int, threads: int, work) -> None:
    """Run work(k, scratch) for k in range(count), in order, on `threads` threads (numpy, page faults and pwrite
    run without the GIL); the first exception stops the others and is raised here."""
    lock = threading.Lock()
    position = [0]
    failures: list[BaseException] = []

    def worker() -> None:
        scratch = Scratch()
        while True:
            with lock:
                if failures or position[0] >= count:
                    return
                k = position[0]
                position[0] += 1
            try:
                work(k, scratch)
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread below
                with lock:
                    failures.append(error)
                return

    if threads <= 1:
        worker()
    else:
        pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for thread in pool:
            thread.start()
        try:
            for thread in pool:
                thread.join()
        except BaseException as error:  # Ctrl-C lands here: stop the workers before files are closed
            with lock:
                failures.append(error)
            for thread in pool:
                thread.join()
            raise
    if failures:
        raise failures[0]


@contextmanager
def staged_output(out: Path, *, force: bool = False, inputs: tuple[Path, ...] = ()):
    """Yield a fresh temporary dir beside `out`; when the block succeeds, rename it to `out` (replacing an
    existing `out` only with force); when it fails or is interrupted, remove it. So `out` appears whole or not
    at all, and a crash leaves at most a hidden `.NAME.*.rtool-tmp` beside it."""
    out = Path(out)
    resolved = out.resolve()
    for path in inputs:
        path = Path(path).resolve()
        if path == resolved or resolved in path.parents:
            raise UserError("the output dir would replace an input", path=out, hint=f"input: {path}")
    if out.exists() or out.is_symlink():
        if not force:
            raise UserError("output dir exists", path=out, hint="pass --force to replace it")
        if not out.is_dir() or out.is_symlink():
            raise UserError("output path exists and is not a directory", path=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".rtool-tmp", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like any mkdir
        yield tmp
        if out.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_CONFIG_FILES = ("config.json", "generation_config.json")
_TOKENIZER_GLOBS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                    "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model",
                    "chat_template.jinja", "chat_template.json")


def copy_model_files(plan: MergePlan, dst: Path, files_from: Path, dtype: str) -> None:
    """Copy config, generation config and tokenizer files into `dst`: from `files_from` where it has them, the
    config from the instruct model otherwise. With --dtype, config.json's dtype says the new one."""
    for name in (*_CONFIG_FILES, *_TOKENIZER_GLOBS):
        src = files_from / name
        if not src.is_file() and name in _CONFIG_FILES:
            src = plan.instruct.model_dir / name
        if src.is_file():
            shutil.copyfile(src, dst / name)
    if not any((dst / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        logger.warning("no tokenizer files in %s: %s has none", files_from, dst)
    if dtype != "auto":
        config = read_json(dst / "config.json")
        for key in ("dtype", "torch_dtype"):
            if key in config or key == "dtype":
                config[key] = dtype
        (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def provenance(plan: MergePlan, job: MergeJob, *, dtype: str, files_from: Path, engine: str = "rtool") -> dict:
    """What rtool_merge.json records: inputs with content hashes of their index/config, weights, version."""
    from rtool import __version__

    return {
        "tool": "rtool merge-bai",
        "rtool_version": __version__,
        "engine": engine,
        "method": plan.method,
        "w": job.w,
        "v": job.v,
        "stages": ["mid = w * reasoning + (1 - w) * instruct", "bai = v * mid + (1 - v) * pretrained"],
        "coefficients": {"reasoning": job.w * job.v, "instruct": (1 - job.w) * job.v, "pretrained": 1 - job.v},
        "dtype": dtype,
        "output_dtypes": sorted(set(plan.out_dtypes.values())),
        "files_from": str(files_from.resolve()),
        "intermediate": "stage1" if plan.save_intermediate else None,
        "inputs": {s.role: _describe_source(s) for s in plan.sources},
    }


def _describe_source(source: Source) -> dict:
    described = {"path": str(source.path.resolve()), "kind": source.kind}
    if source.kind == "lora":
        described["adapter_config_sha256"] = _sha256(source.path / "adapter_config.json")
        described["adapter_header_sha256"] = header_sha256(source.path / "adapter_model.safetensors")
        described["base"] = _describe_model_dir(source.model_dir)
    else:
        described.update(_describe_model_dir(source.model_dir))
    return described


def _describe_model_dir(model_dir: Path) -> dict:
    described = {"path": str(model_dir.resolve()), "config_sha256": _sha256(model_dir / "config.json")}
    if (model_dir / INDEX_NAME).is_file():
        described["index_sha256"] = _sha256(model_dir / INDEX_NAME)
    else:
        # No index for a single file: hash its header (names, dtypes, shapes, offsets), not gigabytes of weights.
        described["header_sha256"] = {p.name: header_sha256(p) for p in weight_files(model_dir)}
    return described


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def merge_bai(plan: MergePlan, out: Path, *, force: bool = False, tokenizer_from: Path | None = None,
              dtype: str = "auto", threads: int = 0) -> list[Path]:
    """Run `plan` into `out` (one job) or `out/<subdir>` (a sweep), atomically; return the final job dirs."""
    files_from = Path(tokenizer_from) if tokenizer_from else plan.instruct.files_dir
    if not files_from.is_dir():
        raise UserError("--tokenizer-from: no such directory", path=files_from)
    start = time.perf_counter()
    logger.debug("merging %d tensors (%.2f GB read, %d output(s) of %.2f GB) with %s", len(plan.names),
                plan.read_bytes / 1e9, len(plan.jobs), plan.output_bytes / 1e9, plan.method)
    inputs = tuple(s.path for s in plan.sources) + tuple(s.model_dir for s in plan.sources)
    with staged_output(out, force=force, inputs=inputs) as tmp:
        job_dirs = write_merges(plan, tmp, threads=threads)
        for job, job_dir in zip(plan.jobs, job_dirs):
            write_model_files(plan, job, job_dir, files_from, dtype)
    seconds = time.perf_counter() - start
    logger.info("done in %.1f s (%.0f MB/s read)", seconds, plan.read_bytes / 1e6 / max(seconds, 1e-9))
    return [out / job.subdir if job.subdir else out for job in plan.jobs]


def write_model_files(plan: MergePlan, job: MergeJob, job_dir: Path, files_from: Path, dtype: str,
                      engine: str = "rtool") -> None:
    """Index, config, tokenizer and rtool_merge.json of one job dir (and of its stage1/ when there is one)."""
    dirs = [job_dir] + ([job_dir / "stage1"] if (job_dir / "stage1").is_dir() else [])
    for target in dirs:
        if engine == "rtool":
            write_index(target, plan.shards)
        copy_model_files(plan, target, files_from, dtype)
    record = provenance(plan, job, dtype=dtype, files_from=files_from, engine=engine)
    (job_dir / "rtool_merge.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def merge_with_mergekit(plan: MergePlan, out: Path, *, force: bool = False, tokenizer_from: Path | None = None,
                        dtype: str = "auto", density: float = 0.5, seed: int = 0) -> list[Path]:
    """Run `plan` with mergekit's implementation of plan.method (slerp, ties, dare-ties, dare-linear): two
    mergekit merges per job, the stage-1 model in the staging dir (kept as stage1/ with save_intermediate).

    Stage 1 slerps from instruct toward reasoning by t = w, or (ties, dare) adds the deltas of reasoning and
    instruct from pretrained with weights w, 1 - w (normalized); stage 2 slerps from pretrained toward mid by
    t = v, or adds v times the delta of mid. Unlike rtool's own methods this writes the stage-1 model to disk.
    """
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
    except ImportError:
        raise UserError(f"--method {plan.method} needs mergekit, which is not installed",
                        hint="pip install 'rtool[mergekit]', or use --method linear / task-arithmetic") from None
    files_from = Path(tokenizer_from) if tokenizer_from else plan.instruct.files_dir
    name = MERGEKIT_METHODS[plan.method]
    if dtype == "auto":
        dtype = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[
            plan.instruct.tensors[plan.names[0]].dtype]
    options = MergeOptions(copy_tokenizer=False, write_model_card=False, lazy_unpickle=True, quiet=True,
                           out_shard_size=max(shard.size for shard in plan.shards) + 1, random_seed=seed)

    def ref(source: Source | Path) -> str:
        if isinstance(source, Path):
            return str(source)
        # mergekit's syntax for a LoRA on its base model.
        return f"{source.model_dir}+{source.path}" if source.kind == "lora" else str(source.path)

    def stage(base, pairs, t_or_normalize) -> dict:
        if name == "slerp":
            return {"merge_method": name, "base_model": ref(base), "dtype": dtype,
                    "models": [{"model": ref(base)}, {"model": ref(pairs[0][0])}], "parameters": {"t": t_or_normalize}}
        return {"merge_method": name, "base_model": ref(base), "dtype": dtype,
                "parameters": {"normalize": t_or_normalize},
                "models": [{"model": ref(m), "parameters": {"weight": wt, "density": density}} for m, wt in pairs]}

    inputs = tuple(s.path for s in plan.sources) + tuple(s.model_dir for s in plan.sources)
    offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # local paths only: never reach for a hub
    try:
        with staged_output(out, force=force, inputs=inputs) as tmp:
            for k, job in enumerate(plan.jobs):
                job_dir = tmp / job.subdir if job.subdir else tmp
                mid_dir = job_dir / "stage1" if plan.save_intermediate else tmp / f".stage1-{k}"
                if name == "slerp":
                    first = stage(plan.instruct, [(plan.reasoning, None)], job.w)
                    second = stage(plan.pretrained, [(mid_dir, None)], job.v)
                else:
                    first = stage(plan.pretrained, [(plan.reasoning, job.w), (plan.instruct, 1.0 - job.w)], True)
                    second = stage(plan.pretrained, [(mid_dir, job.v)], False)
                logger.info("mergekit %s: stage 1 (w=%g) -> %s", name, job.w, mid_dir)
                run_merge(MergeConfiguration.model_validate(first), str(mid_dir), options=options)
                logger.info("mergekit %s: stage 2 (v=%g) -> %s", name, job.v, job_dir)
                run_merge(MergeConfiguration.model_validate(second), str(job_dir), options=options)
                if not plan.save_intermediate:
                    shutil.rmtree(mid_dir)
                write_model_files(plan, job, job_dir, files_from, dtype if dtype != "auto" else "auto",
                                  engine=f"mergekit {name}")
    finally:
        if offline is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = offline
    return [out / job.subdir if job.subdir else out for job in plan.jobs]
