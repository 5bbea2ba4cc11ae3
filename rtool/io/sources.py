"""Rows from what `datasets` reads: a saved dataset (save_to_disk), a hub-layout folder of JSONL/parquet/CSV files,
a hub dataset id (`org/name`, from the local hub cache offline), and the benchmarks rtool ships (`gsm8k`, `math500`).
`rtool.io.records.read_records` sends a source here when it is not a plain file or stdin.

    for row in read_dataset_source("openai/gsm8k", split="test", subset="main", stats=stats):
        row.path, row.line                          # "openai/gsm8k[test]", 7: errors say where

A dataset with several splits needs `split` (an error lists them) unless it has exactly one. `datasets` is imported
here, only when such a source is read, so `rtool --help` stays light.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from rtool.errors import UserError
from rtool.io.rows import ReadStats, Row

# rtool/benchmarks/NAME/test.jsonl, installed with the package (pyproject's package-data).
BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
SHIPPED_SPLIT = "test"
# What names a file rather than a hub dataset: a path that does not exist with one of these endings is "no such file".
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".gz", ".arrow")
# A hub dataset id: "name" or "org/name" (letters, digits, - _ .), as huggingface_hub validates repo ids.
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def shipped_benchmarks() -> list[str]:
    """The benchmark names rtool ships (each a folder under rtool/benchmarks with a test.jsonl and its licence)."""
    if not BENCHMARKS_DIR.is_dir():
        return []
    return sorted(path.parent.name for path in BENCHMARKS_DIR.glob(f"*/{SHIPPED_SPLIT}.jsonl"))


def shipped_name(name: str) -> str | None:
    """The shipped benchmark `name` spells, whatever its case, dashes and underscores (MATH-500, MATH500 and
    math_500 are math500; GSM8K is gsm8k), or None when rtool ships none by that name."""
    wanted = _plain(name)
    return next((shipped for shipped in shipped_benchmarks() if _plain(shipped) == wanted), None)


def shipped_benchmark(name: str) -> Path | None:
    """The file of the shipped benchmark `name` spells (`shipped_name`), or None when rtool ships none by it."""
    found = shipped_name(name)
    return None if found is None else BENCHMARKS_DIR / found / f"{SHIPPED_SPLIT}.jsonl"


def _plain(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


def shipped_hint(name: str) -> str:
    """For a name that found nothing: the shipped benchmarks, the one it may have meant first."""
    import difflib

    names = shipped_benchmarks()
    close = difflib.get_close_matches(_plain(name), {_plain(shipped): shipped for shipped in names}, n=1, cutoff=0.6)
    meant = f"did you mean {shipped_name(close[0])}? " if close else ""
    return f"{meant}rtool ships: {', '.join(names)}"


def is_saved_dataset(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json"))


def looks_like_hub_id(text: str) -> bool:
    """`text` (not an existing path) reads as a hub id: org/name without a file ending, whose "org" is not a local
    folder (runs/sft mistyped is a missing path, not a hub dataset to look for)."""
    parent = Path(text).parent
    return (bool(HUB_ID.match(text)) and not text.lower().endswith(FILE_SUFFIXES)
            and (str(parent) == "." or not parent.is_dir()))


def check_no_splits(where: str, split: str | None, subset: str | None) -> None:
    """A plain file or stdin is one table: --split/--subset there would be silently ignored, so they are refused."""
    if split is not None or subset is not None:
        flag = "--split" if split is not None else "--subset"
        raise UserError(f"{flag} given, but this is one file, not a dataset with splits or subsets", path=where,
                        hint=f"drop {flag}, or pass a saved dataset, a hub-layout folder or a hub dataset id")


def check_shipped_split(name: str, split: str | None, subset: str | None) -> None:
    if subset is not None:
        raise UserError("--subset given, but rtool's shipped benchmark has none", path=name, hint="drop --subset")
    if split not in (None, SHIPPED_SPLIT):
        raise UserError(f"no split {split!r}", path=name, hint=f"rtool ships its {SHIPPED_SPLIT} split only")


def read_saved_dataset(folder: Path, split: str | None, subset: str | None, stats: ReadStats) -> Iterator[Row]:
    """Rows of a dir written by datasets' save_to_disk (a Dataset, or a DatasetDict with --split)."""
    if subset is not None:
        raise UserError("--subset given, but a saved dataset has no subsets (configs)", path=folder,
                        hint="drop --subset; --split picks a split")
    with _datasets_errors(str(folder)):
        from datasets import DatasetDict, load_from_disk

        dataset = load_from_disk(str(folder))
    if isinstance(dataset, DatasetDict):
        split = choose_split(str(folder), list(dataset), split)
        dataset = dataset[split]
    elif split is not None:
        raise UserError(f"--split {split} given, but this saved dataset is one table, not a DatasetDict",
                        path=folder, hint="drop --split")
    yield from _rows(dataset, f"{folder}[{split}]" if split else str(folder), stats)


def read_data_folder(folder: Path, split: str | None, subset: str | None, stats: ReadStats) -> Iterator[Row]:
    """Rows of a hub-layout folder (DIR/data/train-*.parquet, DIR/test.jsonl, DIR/train.csv...): what
    datasets.load_dataset(DIR) reads, streamed (no copy into the datasets cache)."""
    return _read_load_dataset(str(folder), split, subset, stats, streaming=True,
                              not_found="a folder, but neither a saved HF dataset (no dataset_info.json) nor one "
                                        "with data files datasets reads (JSONL, JSON, parquet, CSV)")


def read_data_file(path: Path, split: str | None, subset: str | None, stats: ReadStats) -> Iterator[Row]:
    """Rows of a single CSV file, through datasets' csv builder (streamed)."""
    check_no_splits(str(path), split, subset)
    with _datasets_errors(str(path)):
        from datasets import load_dataset

        dataset = load_dataset("csv", data_files=str(path), split="train", streaming=True)
    yield from _rows(dataset, str(path), stats)


def read_hub_dataset(repo_id: str, split: str | None, subset: str | None, stats: ReadStats) -> Iterator[Row]:
    """Rows of a hub dataset id through datasets.load_dataset: downloaded into (or, offline, read from) the local hub
    cache. HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are datasets' own switches; when the Hub cannot be reached
    (`hub_unreachable`: a few seconds at most) the read is offline too, so a cached dataset still reads and another
    fails at once rather than after the Hub client's retries (25 s). A name without an org that finds nothing
    names rtool's shipped benchmarks (`--bench math-50` meant math500)."""
    try:
        yield from _read_load_dataset(repo_id, split, subset, stats, streaming=False, unreachable=hub_unreachable(),
                                      not_found="no such file or folder, and no such hub dataset")
    except UserError as error:
        if "/" in repo_id or stats.rows:
            raise
        raise UserError(error.message, path=error.path, line=error.line,
                        hint=shipped_hint(repo_id) + (f"; {error.hint}" if error.hint else "")) from None


# The Hub's address is probed this long before a read that would otherwise wait for the Hub client's retries.
HUB_PROBE_SECONDS = 3.0
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_unreachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Why the Hub (huggingface_hub's endpoint, HF_ENDPOINT) cannot be reached, found with one TCP connection of at
    most `timeout` seconds; None when it can, when offline mode is already on (datasets then reads the cache at
    once) or behind a proxy (whose reach a direct connection does not show)."""
    import socket
    from urllib.parse import urlsplit

    if _offline_env() or any(os.environ.get(name) for name in _PROXIES):
        return None
    from huggingface_hub import constants

    address = urlsplit(constants.ENDPOINT)
    host, port = address.hostname, address.port or (443 if address.scheme == "https" else 80)
    if not host:
        return None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"{host}:{port}: {error.strerror or error}"
    return None


@contextmanager
def _offline(reason: str | None):
    """datasets and huggingface_hub in offline mode (their HF_HUB_OFFLINE switch, read at each call) while a read
    runs, when `reason` says the Hub cannot be reached; nothing changes otherwise."""
    if reason is None:
        yield
        return
    import datasets.config
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def choose_split(where: str, splits: list[str], split: str | None) -> str:
    """The split to read: `split` when the dataset has it; with none given, the only one, else an error listing them
    (a silent pick of `train` evaluated the wrong rows)."""
    if split is None:
        if len(splits) == 1:
            return splits[0]
        raise UserError(f"holds several splits: {', '.join(splits)}", path=where,
                        hint="pick one with --split, e.g. --split " + (SHIPPED_SPLIT if SHIPPED_SPLIT in splits
                                                                         else splits[0]))
    if split not in splits:
        raise UserError(f"no split {split!r}", path=where, hint="its splits: " + ", ".join(splits))
    return split


def _read_load_dataset(path: str, split: str | None, subset: str | None, stats: ReadStats, *, streaming: bool,
                       not_found: str, unreachable: str | None = None) -> Iterator[Row]:
    # Offline (`unreachable`: why the Hub cannot be reached) only while the data loads, not while the rows are read.
    with _datasets_errors(path, not_found=not_found, unreachable=unreachable), _offline(unreachable):
        from datasets import load_dataset, load_dataset_builder

        # Only the split asked for is downloaded and prepared (a hub dataset's train split can be 100x its test);
        # the split names come from the builder's metadata, without the data.
        builder = load_dataset_builder(path, name=subset)
        split = choose_split(path, _split_names(builder), split)
        dataset = load_dataset(path, name=subset, split=split, streaming=streaming)
    yield from _rows(dataset, f"{path}[{split}]", stats)


def _split_names(builder) -> list[str]:
    # A hub dataset's card (or a cached one's dataset_info.json) lists its splits; a local folder's data files are
    # grouped by split in the builder's config before anything is read.
    # A local folder's splits are datasets' NamedSplit objects, not names: str() them for messages and choices.
    if builder.info.splits:
        return [str(name) for name in builder.info.splits]
    return [str(name) for name in builder.config.data_files or {}]


def _rows(dataset: Iterable[dict], where: str, stats: ReadStats) -> Iterator[Row]:
    with _datasets_errors(where):
        for index, item in enumerate(dataset):
            stats.rows += 1
            yield Row(item, where, index + 1)


@contextmanager
def _datasets_errors(where: str, *, not_found: str = "no such file, folder or dataset", unreachable: str | None = None):
    """datasets' exceptions as one-line UserErrors naming the source; its logs and progress bars kept off stderr
    (rtool reports rows itself)."""
    import datasets
    from datasets.utils import logging as datasets_logging

    verbosity, bars_were_on = datasets_logging.get_verbosity(), not datasets.are_progress_bars_disabled()
    datasets_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        yield
    except UserError:
        raise
    except ConnectionError as error:
        raise UserError(_unreachable(error, unreachable), path=where,
                        hint="run it once with network to fill the local hub cache, or pass a local file") from None
    except Exception as error:  # datasets raises many types (DatasetNotFoundError, ValueError, pyarrow's...)
        if type(error).__name__ in ("DatasetNotFoundError", "EmptyDatasetError", "DataFilesNotFoundError"):
            raise UserError(not_found, path=where) from None
        configs = re.search(r"available configs: \[([^\]]*)\]", str(error))
        if configs:  # "Config name is missing" with the list on its next line: our words, one line
            names = [name.strip(" '\"") for name in configs.group(1).split(",")]
            raise UserError(f"holds several subsets (configs): {', '.join(names)}", path=where,
                            hint=f"pick one with --subset, e.g. --subset {names[0]}") from None
        raise UserError(f"cannot read it with datasets: {_first_line(error)}", path=where) from None
    finally:
        datasets_logging.set_verbosity(verbosity)
        if bars_were_on:
            datasets.enable_progress_bars()


def _offline_env() -> list[str]:
    return [name for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
            if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")]


def _unreachable(error: Exception, why: str | None) -> str:
    offline = _offline_env()
    if offline:
        return f"no such local file or folder, and not in the local hub cache; offline ({'/'.join(offline)} is set)"
    why = why or _first_line(error)
    return f"no such local file or folder, not in the local hub cache, and the Hub could not be reached ({why})"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
