"""A dequantized copy of each GGUF file loaded, so that only the first load pays for the conversion.

Loading a GGUF makes transformers parse the file three times (config, tokenizer, weights) and dequantize every
tensor: 20-50 s for the 98 MB SmolLM2-135M file on 2 cores, where the same weights as safetensors load in about a
second. A pipeline loads its teacher or student once per command, so the first load converts the file in float32
and keeps a copy, which serves later loads in any dtype (rtool.io.models casts it, so a GPU's bf16 load uses it too):

    $RTOOL_CACHE_DIR/gguf/<file stem>-<key>/     (default ~/.cache/rtool, or $XDG_CACHE_HOME/rtool)

The key hashes the file's absolute path, size and modification time and the transformers version, so a replaced
or edited file, or a new converter, makes a new copy. `RTOOL_GGUF_CACHE=0` turns the cache off. Models whose
dequantized weights exceed `MAX_CACHED_BYTES` are not copied (a 7B GGUF would take 28 GB in float32): those load
straight into the dtype and device asked for, converted again each time.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from rtool.atomic import atomic_dir
from rtool.log import logger

MAX_CACHED_BYTES = 4 * 2**30


def enabled() -> bool:
    return os.environ.get("RTOOL_GGUF_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_root() -> Path:
    if os.environ.get("RTOOL_CACHE_DIR"):
        return Path(os.path.expanduser(os.environ["RTOOL_CACHE_DIR"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rtool"


def copy_dir(gguf_file) -> Path:
    """Where the dequantized copy of `gguf_file` lives (whether or not it exists yet)."""
    import transformers

    path = Path(gguf_file).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|transformers {transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{path.stem}-{digest}"


def find(gguf_file) -> Path | None:
    """The complete copy of `gguf_file`, or None. A copy only ever appears whole (see `store`)."""
    if not enabled():
        return None
    where = copy_dir(gguf_file)
    return where if (where / "config.json").is_file() else None


def worth_keeping(gguf_file) -> bool:
    """Whether a load of `gguf_file` should convert it in float32 and keep the copy: the cache is on and the file,
    dequantized, likely fits MAX_CACHED_BYTES (a quantized file grows at most 8x: 4-bit weights to 32-bit)."""
    return enabled() and Path(gguf_file).stat().st_size * 8 <= MAX_CACHED_BYTES


def store(gguf_file, model, save: Callable[[Path], object]) -> Path | None:
    """Keep a copy of `model` (just dequantized from `gguf_file`) by calling `save(dir)` on an empty staging dir;
    return the copy's dir.

    Only float32 models are kept (the copy must equal what a fresh conversion gives; a cast one would not), and
    none above MAX_CACHED_BYTES. The copy is written beside the cache and renamed into place, so a reader never sees
    half of one, and when two processes convert the same file the first rename wins. A failure to write (a full
    disk, a read-only home) costs the speed-up only: it is logged and the load goes on.
    """
    import torch

    if not enabled():
        return None
    if any(p.dtype != torch.float32 for p in model.parameters()):
        logger.debug("gguf cache: %s loaded in another dtype than float32; not copied", gguf_file)
        return None
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size > MAX_CACHED_BYTES:
        logger.info("gguf cache: %s is %.1f GB dequantized, above the %.0f GB kept; not copied",
                    gguf_file, size / 2**30, MAX_CACHED_BYTES / 2**30)
        return None
    final = copy_dir(gguf_file)
    try:
        with atomic_dir(final, replace=False) as staging:  # replace=False: another process's copy wins
            save(staging)
    except OSError as error:  # FileExistsError included
        if (final / "config.json").is_file():
            return final  # another process's copy, already announced there
        logger.warning("gguf cache: could not keep a converted copy of %s (%s); later loads convert again",
                       gguf_file, error)
        return None
    logger.info("gguf cache: kept a converted copy of %s in %s", Path(gguf_file).name, final)
    return final
