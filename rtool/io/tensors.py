"""Read and write safetensors files without loading a model: headers, byte ranges, sharded output.

    tensors = list_tensors(Path("ckpt/model"))          # name -> TensorEntry, across all shards
    with Reader() as reader:
        rows = reader.rows_fp32(tensors["lm_head.weight"], row0, nrows, buffer)   # fp32, flat
        reader.release(tensors["lm_head.weight"], row0, nrows)
    shards = plan_shards([(name, "BF16", shape), ...], max_shard_size=5 * 10**9)
    with ShardWriter(out_dir, shards) as writer:
        writer.write(name, byte_offset_in_tensor, array)                       # any order, any thread

The format (https://huggingface.co/docs/safetensors): 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}} padded with spaces to a multiple of 8,
then the raw little-endian bytes, packed without holes. Inputs are memory-mapped and read without a copy; pages
are released after use, so they do not pile up in the process's RSS (the file cache keeps them for the next
run). Output is written with pwrite into preallocated files. Only numpy is needed: this never imports torch.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtool.errors import UserError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
            "F8_E4M3": 1, "F8_E5M2": 1}
# dtypes rtool can convert to and from fp32 exactly (fp32 holds every bf16 and fp16 value).
FLOAT_DTYPES = ("F32", "BF16", "F16")
DTYPE_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes live: `path` from byte `offset` (absolute), `nbytes` long."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def row_len(self) -> int:
        """Elements per row (first axis); a 0-d or 1-d tensor has rows of one element."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


def read_header(path: Path) -> tuple[dict, int, bytes]:
    """Return (header dict, absolute offset of the data, raw header bytes) of one safetensors file."""
    try:
        with open(path, "rb") as f:
            size_bytes = f.read(8)
            if len(size_bytes) < 8:
                raise UserError("not a safetensors file (shorter than 8 bytes)", path=path)
            (length,) = struct.unpack("<Q", size_bytes)
            if length > _MAX_HEADER:
                raise UserError(f"not a safetensors file (header length {length})", path=path)
            raw = f.read(length)
    except OSError as error:
        raise UserError(f"cannot read: {error.strerror}", path=path) from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"not a safetensors file (header is not JSON: {error})", path=path) from None
    if not isinstance(header, dict):
        raise UserError("not a safetensors file (header is not a JSON object)", path=path)
    return header, 8 + length, raw


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model dir: those of the index if there is one, else all *.safetensors."""
    index_path = model_dir / INDEX_NAME
    if index_path.is_file():
        index = read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError("no 'weight_map' in the index", path=index_path)
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise UserError(f"shard {missing[0]!r} named in the index is missing", path=index_path)
        return [model_dir / n for n in names]
    files = sorted(p for p in model_dir.glob("*.safetensors") if not p.name.startswith("adapter_"))
    if not files:
        raise UserError("no safetensors weights (expected model.safetensors or model.safetensors.index.json)",
                        path=model_dir, hint="convert .bin checkpoints with transformers' save_pretrained")
    return files


def list_tensors(model_dir: Path) -> dict[str, TensorEntry]:
    """Every tensor of a model dir (one file or many shards), by name, checked against the file sizes."""
    tensors: dict[str, TensorEntry] = {}
    for path in weight_files(model_dir):
        for entry in file_tensors(path):
            if entry.name in tensors:
                raise UserError(f"tensor {entry.name!r} is stored twice (also in {tensors[entry.name].path.name})",
                                path=path)
            tensors[entry.name] = entry
    return tensors


def file_tensors(path: Path) -> list[TensorEntry]:
    """The tensors of one safetensors file."""
    header, data_start, _ = read_header(path)
    file_size = path.stat().st_size
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"bad header entry for tensor {name!r}", path=path) from None
        if dtype not in ITEMSIZE:
            raise UserError(f"tensor {name!r} has unknown dtype {dtype!r}", path=path)
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != numel * ITEMSIZE[dtype] or data_start + end > file_size or begin < 0:
            raise UserError(f"tensor {name!r}: data_offsets {[begin, end]} do not match its shape and dtype "
                            "or lie past the end of the file (truncated download?)", path=path)
        entries.append(TensorEntry(name, dtype, shape, path, data_start + begin, end - begin))
    return entries


def header_sha256(path: Path) -> str:
    """SHA-256 of a safetensors file's header: names, dtypes, shapes and offsets, not the weights."""
    import hashlib

    return hashlib.sha256(read_header(path)[2]).hexdigest()


class Reader:
    """Reads tensor rows from memory-mapped safetensors files; each file is mapped once, on first use.

    `rows_fp32` returns F32 rows as a zero-copy view of the mapping (16-bit rows are widened into a caller
    buffer); `release` drops those pages from this process (madvise DONTNEED: the file cache keeps them), so
    the resident set holds the chunks in flight, not the files read so far.
    """

    def __init__(self):
        self._maps: dict[Path, tuple[mmap.mmap, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            maps, self._maps = self._maps, {}
        for path in list(maps):
            mapping, _ = maps.pop(path)  # drops our array over the mapping, so it can close
            try:
                mapping.close()
            except BufferError:
                pass  # a caller still holds a view: the mapping goes when that view does

    def _bytes(self, path: Path) -> np.ndarray:
        with self._lock:
            found = self._maps.get(path)
            if found is None:
                with open(path, "rb") as f:
                    mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                found = self._maps[path] = (mapping, np.frombuffer(mapping, dtype=np.uint8))
            return found[1]

    def rows_fp32(self, entry: TensorEntry, row0: int, nrows: int, buffer: np.ndarray) -> np.ndarray:
        """Rows [row0, row0 + nrows) of `entry` as a flat fp32 array (exact for F32, BF16, F16).

        F32 rows are a read-only view of the file; 16-bit rows are widened into `buffer` (fp32, large enough).
        """
        count = nrows * entry.row_len
        itemsize = ITEMSIZE[entry.dtype]
        begin = entry.offset + row0 * entry.row_len * itemsize
        raw = self._bytes(entry.path)[begin:begin + count * itemsize]
        if entry.dtype == "F32":
            return raw.view(np.float32)
        out = buffer[:count]
        if entry.dtype == "BF16":
            # bf16 is the top half of an fp32: widening is a 16-bit shift, exact.
            np.left_shift(raw.view(np.uint16), 16, out=out.view(np.uint32), dtype=np.uint32)
        elif entry.dtype == "F16":
            np.copyto(out, raw.view(np.float16))
        else:
            raise UserError(f"tensor {entry.name!r} has dtype {entry.dtype}; only F32, BF16 and F16 can be merged",
                            path=entry.path)
        return out

    def prefetch(self, entry: TensorEntry, row0: int, nrows: int) -> None:
        """Ask the kernel to start reading rows [row0, row0 + nrows) into the file cache (MADV_WILLNEED), so
        a merge whose inputs are not cached reads ahead while it computes, instead of stalling on each fault."""
        if _MADV_WILLNEED is None:
            return
        itemsize = ITEMSIZE[entry.dtype]
        begin = entry.offset + row0 * entry.row_len * itemsize
        end = begin + nrows * entry.row_len * itemsize
        begin -= begin % mmap.PAGESIZE
        self._bytes(entry.path)
        with self._lock:
            mapping = self._maps[entry.path][0]
        mapping.madvise(_MADV_WILLNEED, begin, end - begin)

    def release(self, entry: TensorEntry, row0: int, nrows: int) -> None:
        """Unmap the pages of rows [row0, row0 + nrows) from this process (they stay in the file cache)."""
        if _MADV_DONTNEED is None:
            return
        itemsize = ITEMSIZE[entry.dtype]
        begin = entry.offset + row0 * entry.row_len * itemsize
        end = begin + nrows * entry.row_len * itemsize
        # Round out to 1 MB: a page fault maps a whole aligned block around it ("fault-around", 64 KB by
        # default), so neighbours' pages come in too and must go out with this range. Dropping a page that
        # another thread still reads is safe: it faults back in from the file cache.
        begin -= begin % _RELEASE_ALIGN
        end += -end % _RELEASE_ALIGN
        with self._lock:
            mapping = self._maps[entry.path][0]
        mapping.madvise(_MADV_DONTNEED, begin, end - begin)


_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
_MADV_WILLNEED = getattr(mmap, "MADV_WILLNEED", None)
_RELEASE_ALIGN = 1 << 20


def fp32_to(dtype: str, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Convert fp32 `x` to `dtype` ("F32", "BF16", "F16") with round-to-nearest-even, as torch's `.to()` does.

    Returns the bytes to write as an array (`x` itself for F32, else a view of `out`, a byte buffer of at
    least 2 * x.size bytes). NaN is not special-cased for bf16: rtool refuses non-finite results before this.
    """
    if dtype == "F32":
        return x
    half = out[: x.size * 2].view(np.uint16)
    if dtype == "F16":
        np.copyto(half.view(np.float16), x, casting="same_kind")
        return half
    # torch's c10::round_to_nearest_even: add 0x7FFF plus the lowest kept bit, keep the top 16 bits.
    bits = x.view(np.uint32)
    wide = np.right_shift(bits, 16)
    np.bitwise_and(wide, 1, out=wide)
    np.add(wide, 0x7FFF, out=wide)
    np.add(wide, bits, out=wide)
    np.right_shift(wide, 16, out=wide)
    np.copyto(half, wide, casting="unsafe")
    return half


@dataclass
class Shard:
    """One output file: its name, header bytes and where each tensor's bytes go (absolute offsets)."""

    filename: str
    header: bytes
    offsets: dict[str, int]
    size: int


def plan_shards(tensors: list[tuple[str, str, tuple[int, ...]]], max_shard_size: int) -> list[Shard]:
    """Lay out (name, dtype, shape) tensors in files of at most `max_shard_size` bytes of data.

    Tensors keep their given order across shards (a tensor larger than the limit gets a shard of its own);
    inside a file wider dtypes come first so every tensor stays aligned without holes, as safetensors does.
    One shard is named model.safetensors; several are model-0000K-of-0000N.safetensors with an index.
    """
    groups: list[list[tuple[str, str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, dtype, shape in tensors:
        nbytes = _nbytes(dtype, shape)
        if groups[-1] and used + nbytes > max_shard_size:
            groups.append([])
            used = 0
        groups[-1].append((name, dtype, shape))
        used += nbytes
    shards = []
    for k, group in enumerate(groups, start=1):
        filename = SINGLE_NAME if len(groups) == 1 else f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        group = sorted(group, key=lambda t: (-ITEMSIZE[t[1]], t[0]))
        header_obj: dict = {"__metadata__": {"format": "pt"}}
        begin = 0
        relative = {}
        for name, dtype, shape in group:
            end = begin + _nbytes(dtype, shape)
            header_obj[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
            relative[name] = begin
            begin = end
        header = json.dumps(header_obj, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)
        data_start = 8 + len(header)
        shards.append(Shard(filename, header, {n: data_start + b for n, b in relative.items()}, data_start + begin))
    return shards


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    return (int(np.prod(shape, dtype=np.int64)) if shape else 1) * ITEMSIZE[dtype]


def write_index(out_dir: Path, shards: list[Shard]) -> None:
    """Write model.safetensors.index.json for several shards (nothing for one)."""
    if len(shards) < 2:
        return
    weight_map = {name: shard.filename for shard in shards for name in shard.offsets}
    total = sum(shard.size - 8 - len(shard.header) for shard in shards)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


class ShardWriter:
    """Creates the shard files of a plan (header written, data area allocated) and writes tensor bytes with pwrite.

    Writes may come in any order and from several threads. Every `WRITEBACK_STEP` bytes per file the kernel is
    asked to start writing back what came before (posix_fadvise DONTNEED starts writeback without waiting), so
    the disk works while the merge computes and the final fsync has little left. `close(sync=True)` fsyncs.
    """

    WRITEBACK_STEP = 64 << 20

    def __init__(self, out_dir: Path, shards: list[Shard]):
        self._where: dict[str, tuple[int, int]] = {}
        self._fds: list[int] = []
        self._lock = threading.Lock()
        self._written_to: dict[int, int] = {}
        self._flushed_to: dict[int, int] = {}
        for shard in shards:
            fd = os.open(out_dir / shard.filename, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            _pwrite_all(fd, struct.pack("<Q", len(shard.header)) + shard.header, 0)
            os.ftruncate(fd, shard.size)
            self._written_to[fd] = self._flushed_to[fd] = 0
            for name, offset in shard.offsets.items():
                self._where[name] = (fd, offset)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close(sync=False)

    def write(self, name: str, byte_offset: int, data: np.ndarray) -> None:
        fd, offset = self._where[name]
        view = memoryview(data).cast("B")
        _pwrite_all(fd, view, offset + byte_offset)
        if _FADV_DONTNEED is None:
            return
        with self._lock:
            self._written_to[fd] = end = max(self._written_to[fd], offset + byte_offset + len(view))
            begin = self._flushed_to[fd]
            if end - begin < self.WRITEBACK_STEP:
                return
            self._flushed_to[fd] = end
        os.posix_fadvise(fd, begin, end - begin, _FADV_DONTNEED)

    def close(self, sync: bool = True) -> None:
        for fd in self._fds:
            if sync:
                os.fsync(fd)
            os.close(fd)
        self._fds.clear()


_FADV_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", None)


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or a UserError naming the file."""
    try:
        value = json.loads(path.read_text())
    except OSError as error:
        raise UserError(f"cannot read: {error.strerror}", path=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"not valid JSON: {error}", path=path) from None
    if not isinstance(value, dict):
        raise UserError("expected a JSON object", path=path)
    return value
