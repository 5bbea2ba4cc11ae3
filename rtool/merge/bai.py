"""Balanced Actor Initialization (BAI, arXiv 2509.00309): a two-stage weighted merge that streams tensors.

    stage 1:  θ_mid = w · θ_reasoning + (1 − w) · θ_instruct
    stage 2:  θ_bai = v · θ_mid + (1 − v) · θ_pretrained

    plan = plan_merge(open_source("reasoning", r), open_source("instruct", i), open_source("pretrained", p),
                      jobs=[MergeJob(w=0.5, v=0.5)], method="linear")
    merge_bai(plan, out)                 # out/<job.subdir> for each job, or out itself for one job; atomic
    merge_with_mergekit(plan, out)       # the methods in MERGEKIT_METHODS, through mergekit's Python API

This module plans the merge (jobs, checks, output layout), streams it (`write_merges`), stages the output dir
and writes config, tokenizer and provenance (rtool_merge.json). Both stages run per tensor in one pass, in fp32,
over row chunks of a few MB, with several threads: each chunk of the three inputs is read once (LoRA deltas added
on the fly) and every job's result is written straight into its place in the sharded output. Memory holds a few
chunks per thread, never a model. The arithmetic lives in rtool.merge.arithmetic, the inputs in rtool.merge.sources.
Everything here raises UserError for bad input and never prints.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtool.atomic import atomic_dir, check_outputs_distinct, check_writable
from rtool.errors import UserError, one_of
from rtool.log import logger
from rtool.merge.arithmetic import METHODS, Scratch, bai_stage1, bai_stage2
from rtool.merge.sources import Source
from rtool.io.tensors import (DTYPE_NAMES, FLOAT_DTYPES, INDEX_NAME, ITEMSIZE, Reader, Shard, ShardWriter,
                                  fp32_to, header_sha256, plan_shards, read_json, weight_files, write_index)

# Methods rtool does not reimplement: run through mergekit's Python API (pip install 'rtool[mergekit]').
MERGEKIT_METHODS = {"slerp": "slerp", "ties": "ties", "dare-ties": "dare_ties", "dare-linear": "dare_linear"}


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
    at all, and a crash leaves at most a hidden `.NAME.*.rtool-tmp` beside it (see `rtool.atomic`)."""
    out = Path(out)
    check_outputs_distinct({"--out": out}, {"the input": list(inputs)}, dirs=["--out"])
    # Checked here, before minutes of merging, so the error can name --overwrite; atomic_dir checks again at the end.
    if os.path.lexists(out):
        if not out.is_dir() or out.is_symlink():
            raise UserError("output path exists and is not a directory", path=out)
        if not force:
            raise UserError("output dir exists", path=out, hint="pass --overwrite to replace it")
        cwd, resolved = Path.cwd().resolve(), out.resolve()
        if resolved == cwd or resolved in cwd.parents:
            raise UserError("--overwrite would replace the current directory (or one holding it)", path=out,
                            hint="run from another directory, or choose another --out")
        foreign = not_merge_written(out)
        if foreign is not None:
            raise UserError(f"--overwrite replaces only an earlier merge-bai output, and {foreign} is not one's: "
                            "nothing was deleted", path=out, hint="move it away, or choose another --out")
    check_writable(out, kind="dir")
    try:
        with atomic_dir(out, replace=force) as tmp:
            yield tmp
    except FileExistsError as error:
        if error.filename != str(out):  # from the block, not atomic_dir's final check
            raise
        raise UserError("output dir exists (created while merging)", path=out,
                        hint="pass --overwrite to replace it") from None


_CONFIG_FILES = ("config.json", "generation_config.json")
_TOKENIZER_GLOBS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                    "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model",
                    "chat_template.jinja", "chat_template.json")
# What else a merge writes into a job dir: its weights and index, provenance, the stage-1 model (--save-intermediate)
# and, through mergekit, mergekit's record of its config.
_MERGE_FILES = frozenset({*_CONFIG_FILES, *_TOKENIZER_GLOBS, INDEX_NAME, "rtool_merge.json", "mergekit_config.yml"})


def not_merge_written(out: Path) -> str | None:
    """The first entry of the existing dir `out` (as OUT/NAME) that no merge-bai run would have written, or None:
    `out` is empty, or one merge's output (rtool_merge.json at its top) or a sweep's (one such dir per point)."""
    out = Path(out)
    entries = sorted(out.iterdir())
    job_dirs = [out] if (out / "rtool_merge.json").is_file() else entries
    for job_dir in job_dirs:
        if job_dir.is_symlink() or not job_dir.is_dir() or not (job_dir / "rtool_merge.json").is_file():
            return str(job_dir)
        for entry in sorted(job_dir.iterdir()):
            if entry.is_symlink():
                return str(entry)
            written = (entry.name == "stage1" and entry.is_dir()) or (
                entry.is_file() and (entry.name in _MERGE_FILES or entry.name.endswith(".safetensors")))
            if not written:
                return str(entry)
    return None


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
