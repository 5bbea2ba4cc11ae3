"""Reading and writing records: JSONL (stdin or files), JSON arrays, parquet, CSV, and whatever `datasets` reads
(a saved dataset, a hub-layout folder, a hub id, rtool's shipped benchmarks by name: rtool.io.sources).

    for row in read_records("traces.jsonl"):      # rows are dicts that know where they came from
        row.path, row.line                         # for error messages: traces.jsonl:7
    read_records("openai/gsm8k", split="test", subset="main")   # rows say openai/gsm8k[test]:7
    with RecordWriter("-") as out:                 # "-" is stdout; a path is appended to (see RecordWriter)
        out.write({**row, "score": 0.5})           # one JSON line, flushed at once

Reading streams: memory holds one line (JSONL), one row group (parquet) or one row (datasets), never the file,
except `.json` arrays, which are parsed whole. Malformed lines raise `UserError` naming the file and line, or,
with `skip_bad=True`, are counted in `ReadStats` and skipped. As `datasets` does, a compressed file (`.jsonl.gz`,
`.json.bz2`, `.csv.xz`) is read by its inner ending, and a UTF-8 byte order mark (Windows editors and PowerShell
write one) is not part of the first row.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Hashable, Iterable, Iterator

from rtool.atomic import check_writable, open_temporary, output_errors, remove_stale_temporaries
from rtool.errors import UserError
from rtool.io.rows import ReadStats, Row  # noqa: F401 - readers and writers of rows import them from here

# A line longer than this is refused rather than parsed: a runaway or binary "line" would otherwise be held whole.
MAX_LINE_BYTES = 32 * 1024 * 1024
# Compressed files, read through the standard library by their last ending (what `datasets` reads as well).
COMPRESSED = (".gz", ".bz2", ".xz")
BOM = b"\xef\xbb\xbf"


def display_name(path: str | Path) -> str:
    return "<stdin>" if str(path) == "-" else str(path)


def piped_stdin() -> bool:
    """Whether stdin is a pipe or a file (`cat rows.jsonl | rtool ...`, `< rows.jsonl`): rows to read, where a
    terminal or /dev/null (cron, CI) holds none."""
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):  # closed, or replaced by an object without a descriptor
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def read_records(path: str | Path = "-", *, split: str | None = None, subset: str | None = None,
                 skip_bad: bool = False, stats: ReadStats | None = None,
                 max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Row]:
    """Yield rows from a JSONL/JSON/parquet/CSV file, stdin ("-"), a saved HF dataset dir, a hub-layout folder of
    data files, a hub dataset id or a shipped benchmark's name (a local path of that name wins). `split` and
    `subset` (the config) pick a table of a dataset that has several; a plain file refuses them."""
    from rtool.io import sources

    stats = stats if stats is not None else ReadStats()
    path_text = str(path)
    if path_text == "-":
        sources.check_no_splits("<stdin>", split, subset)
        yield from _read_jsonl(sys.stdin.buffer, "<stdin>", skip_bad, stats, max_line_bytes)
        return
    source = Path(path_text)
    if not source.exists():
        shipped = sources.shipped_name(path_text)  # math500, or MATH-500 for it
        if shipped is not None:
            sources.check_shipped_split(shipped, split, subset)
            with open(sources.shipped_benchmark(shipped), "rb") as handle:
                yield from _read_jsonl(handle, shipped, skip_bad, stats, max_line_bytes)
        elif sources.looks_like_hub_id(path_text):
            yield from sources.read_hub_dataset(path_text, split, subset, stats)
        else:
            raise UserError("no such file or directory", path=path_text)
        return
    if source.is_dir():
        if sources.is_saved_dataset(source):
            yield from sources.read_saved_dataset(source, split, subset, stats)
        else:
            yield from sources.read_data_folder(source, split, subset, stats)
        return
    compressed = source.suffix in COMPRESSED
    suffix = Path(source.stem).suffix if compressed else source.suffix  # x.jsonl.gz is JSONL
    if suffix == ".csv":
        yield from sources.read_data_file(source, split, subset, stats)
        return
    sources.check_no_splits(path_text, split, subset)
    if suffix == ".parquet" and not compressed:
        yield from _read_parquet(source, stats)
        return
    with _open_bytes(source) as handle:
        if suffix == ".json":
            yield from _read_json_array(handle, path_text, skip_bad, stats)
        else:
            yield from _read_jsonl(handle, path_text, skip_bad, stats, max_line_bytes)


@contextlib.contextmanager
def _open_bytes(source: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed as its ending says; a file that is not what its ending says (a .gz that is not
    gzip, a truncated download) is a UserError naming it rather than a traceback from the middle of the read."""
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(source.suffix, open)
    try:
        with opener(source, "rb") as handle:
            yield handle
    except (gzip.BadGzipFile, lzma.LZMAError, EOFError) as error:
        raise UserError(f"cannot decompress it ({source.suffix}): {error or type(error).__name__}",
                        path=source) from None
    except OSError as error:
        if opener is open or isinstance(error, FileNotFoundError):
            raise
        raise UserError(f"cannot decompress it ({source.suffix}): {error}", path=source) from None


def _read_jsonl(handle: IO[bytes], name: str, skip_bad: bool, stats: ReadStats, max_line_bytes: int) -> Iterator[Row]:
    line_number = 0
    while True:
        raw = handle.readline(max_line_bytes + 1)
        if not raw:
            break
        line_number += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            _drain_line(handle, max_line_bytes)
            problem = UserError(f"line longer than {max_line_bytes // (1024 * 1024)} MiB", path=name, line=line_number,
                                hint="is this a JSONL file?")
            _bad_line(problem, skip_bad, stats)
            continue
        if line_number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            _bad_line(UserError(f"not UTF-8 text (byte {error.start})", path=name, line=line_number,
                                hint="binary input? rtool reads UTF-8 JSONL"), skip_bad, stats)
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            _bad_line(UserError(f"malformed JSON: {_json_problem(error)}", path=name, line=line_number),
                      skip_bad, stats)
            continue
        if not isinstance(value, dict):
            _bad_line(UserError(f"expected a JSON object, got {type(value).__name__}", path=name, line=line_number),
                      skip_bad, stats)
            continue
        stats.rows += 1
        yield Row(value, name, line_number)


def _json_problem(error: json.JSONDecodeError) -> str:
    # Some of json's messages end in "at" ("Unterminated string starting at"): do not write "at at column 18".
    return f"{error.msg.removesuffix(' at')} at column {error.colno}"


def _drain_line(handle: IO[bytes], chunk: int) -> None:
    while True:
        rest = handle.readline(chunk)
        if not rest or rest.endswith(b"\n"):
            return


def _bad_line(problem: UserError, skip_bad: bool, stats: ReadStats) -> None:
    if not skip_bad:
        raise problem
    stats.skipped += 1
    if len(stats.skipped_where) < 5:
        stats.skipped_where.append(problem.render())


def _read_json_array(handle: IO[bytes], source: str, skip_bad: bool, stats: ReadStats) -> Iterator[Row]:
    try:
        value = json.loads(handle.read().decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise UserError(f"not UTF-8 text (byte {error.start})", path=source) from None
    except json.JSONDecodeError as error:
        raise UserError(f"malformed JSON: {error.msg}", path=source, line=error.lineno) from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise UserError(f"expected a JSON array of objects, got {type(value).__name__}", path=source)
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            # A JSON array has no useful line numbers; the item index is the next best place.
            _bad_line(UserError(f"item {index} is {type(item).__name__}, expected an object", path=source),
                      skip_bad, stats)
            continue
        stats.rows += 1
        yield Row(item, str(source), index + 1)


def _read_parquet(source: Path, stats: ReadStats) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise UserError(f"not a readable parquet file: {error}", path=source) from None
    row_number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for item in batch.to_pylist():
            row_number += 1
            stats.rows += 1
            yield Row(item, str(source), row_number)


class RecordWriter:
    """Writes rows as JSONL to stdout ("-") or to a file, flushing each row so pipelines stream and a killed process
    leaves only whole lines behind (a row is written with one write call). Use it as a context manager: how the
    block ends decides what the file holds.

        RecordWriter(path)                        # append (resumable outputs: distill, prm-label, prm-score)
        RecordWriter(path, append=False)          # start the file again, at its first row
        RecordWriter(path, atomic=True, overwrite=flag)   # a whole-file output (bon, eval --records, ...)

    Append and start-again writers create or truncate the file only when the first row comes, so a run that
    writes nothing leaves no file (and an old one untouched). An atomic writer refuses a file that already holds
    rows unless `overwrite`, writes into a temporary file beside it (its own name: rtool.atomic.open_temporary) and
    renames that over the file when the block ends without an error (even with no rows: the file then says the run
    found none); a failed or interrupted run leaves the old file as it was and no new one, and the temporary file
    a kill -9 leaves is removed when the next writer of the file is made. A path that cannot be written is refused
    when the writer is made, before any work (UserError naming it), and an OSError later is one naming it too
    (rtool.atomic).
    """

    def __init__(self, path: str | Path = "-", *, append: bool = True, atomic: bool = False,
                 overwrite: bool = False):
        self.path = str(path)
        self.append, self.atomic = append and not atomic, atomic
        self.count = 0
        self._handle: IO[str] | None = sys.stdout if self.path == "-" else None
        self._temporary: Path | None = None
        if self.path == "-":
            return
        check_writable(self.path, kind="file", renamed=atomic)
        self._target = Path(self.path)
        if self._target.is_symlink() and (self._target.is_file() or not self._target.exists()):
            self._target = Path(os.path.realpath(self.path))  # rename over the file it points to, not the link
        remove_stale_temporaries(self._target)  # those a killed run left
        if atomic and not overwrite and self._target.is_file() and self._target.stat().st_size > 0:
            raise UserError("already holds rows", path=self.path,
                            hint="pass --overwrite to replace it, or write to another file")
        if atomic and os.path.exists(self._target) and not self._target.is_file():
            self.atomic = False  # /dev/null, a FIFO: written in place, nothing to rename over

    def write(self, row: dict) -> None:
        if self._handle is None:
            self._open()
        self._handle.write(json_line(row))
        self._handle.flush()
        self.count += 1

    def write_many(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.write(row)

    def _open(self) -> None:
        with output_errors(self.path):
            self._target.parent.mkdir(parents=True, exist_ok=True)
            if self.atomic:
                self._temporary, self._handle = open_temporary(self._target, "w", encoding="utf-8")
                return
            if self.append:
                _repair_partial_last_line(self._target)
            self._handle = open(self._target, "a" if self.append else "w", encoding="utf-8")

    def close(self) -> None:
        """The run ended whole: an atomic writer's rows replace the file; a start-again writer with no rows
        empties it."""
        if self.path == "-":
            return
        if self._handle is None and (self.atomic or (not self.append and self._target.is_file())):
            self._open()  # no rows: the output says so, not an old run's rows
        if self._handle is None:
            return
        with output_errors(self.path):
            self._handle.flush()
            if stat.S_ISREG(os.fstat(self._handle.fileno()).st_mode):  # not a pipe or /dev/stdout
                os.fsync(self._handle.fileno())
            self._handle.close()
            if self._temporary is not None:
                os.replace(self._temporary, self._target)
                self._temporary = None

    def abort(self) -> None:
        """The run failed: an atomic writer's temporary file goes, the old file stays; rows already appended
        stay (whole lines: a resume continues after them)."""
        if self._handle is not None and self._handle is not sys.stdout:
            try:
                self._handle.close()
            except OSError:
                pass
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
            self._temporary = None

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _repair_partial_last_line(path: Path) -> None:
    """A process killed mid-write can leave a last line without its newline: cut it off before appending, so the
    file stays valid JSONL and the resumed run rewrites that record."""
    if not path.is_file() or path.stat().st_size == 0:  # a pipe or /dev/stdout has no tail to repair
        return
    with open(path, "rb+") as handle:
        handle.seek(-1, io.SEEK_END)
        if handle.read(1) == b"\n":
            return
        size = handle.seek(0, io.SEEK_END)
        position = size
        block = 1 << 16
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            chunk = handle.read(position - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                handle.truncate(start + cut + 1)
                return
            position = start
        handle.truncate(0)


def json_line(row: dict) -> str:
    """One JSONL line as rtool writes rows: UTF-8 text kept as is, numpy values as plain JSON, a final newline."""
    return json.dumps(row, ensure_ascii=False, default=_json_default) + "\n"


def _json_default(value):
    # numpy scalars and arrays from parquet / datasets rows
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json(data: dict, path: str | Path = "-") -> None:
    """One JSON document (a summary) to stdout or atomically to a file (temp + rename)."""
    text = json.dumps(data, ensure_ascii=False, indent=None, default=_json_default) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write_text(Path(path), text)


def atomic_write_text(path: Path, text: str) -> None:
    """`path` holds `text` whole, or is as it was (a failure removes the temporary file); an unwritable path is
    a UserError naming it."""
    check_writable(path, kind="file", renamed=True)
    remove_stale_temporaries(path)
    temporary = None
    try:
        with output_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary, handle = open_temporary(path, "w", encoding="utf-8")
            with handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
    except BaseException:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise


def first_rows(rows: Iterator[Row], path: str | Path) -> Iterator[Row]:
    """Read the first row now (so empty or malformed input fails before a model loads), then stream the rest."""
    import itertools

    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        raise UserError("no input rows", path=display_name(path), hint="the input is empty")
    return itertools.chain([first], iterator)


def read_sources(sources: list[str], **options) -> Iterator[Row]:
    """The rows of several sources one after the other (`rtool difficulty a.jsonl b.jsonl`); each must hold rows.
    `options` go to read_records. The first source's first row is read now, as first_rows does."""
    def rest() -> Iterator[Row]:
        for source in sources[1:]:
            yield from first_rows(read_records(source, **options), source)

    import itertools

    return itertools.chain(first_rows(read_records(sources[0], **options), sources[0]), rest())


@dataclass
class Written:
    """What an output file already holds, for --resume: the keys of its finished rows (`counts`: how many rows
    each, for inputs where a key may repeat), and the first settings record (distill's `sampling`, prm-label's
    `prm_labeling`, prm-score's `prm_scoring`) with its line."""

    done: set = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)
    settings: dict | None = None
    settings_line: int | None = None

    def check_same_settings(self, settings: dict, out, *, what: str) -> None:
        """A resume must make the rest as the first run made the start: a file whose settings record differs
        from `settings` is refused, naming each difference."""
        if not self.done or self.settings is None:
            return
        differ = [key for key in sorted(set(settings) | set(self.settings))
                  if settings.get(key) != self.settings.get(key)]
        if differ:
            shown = ", ".join(f"{key} {self.settings.get(key)!r} -> {settings.get(key)!r}" for key in differ)
            raise UserError(f"--resume with other {what} settings than the file's: {shown}", path=out,
                            line=self.settings_line, hint="resume with the same flags, or write to another --out")


def read_written(out_path: Path, *, key: Callable[[dict], Hashable], settings_field: str, command: str,
                 needs: str) -> Written:
    """The rows `out_path` already holds (`key(row)` each; a KeyError, TypeError or ValueError there means the line
    is not `command`'s output) and its first `settings_field` record. A last line without its newline (a kill -9
    mid-write) is not a finished row: RecordWriter cuts it off before appending."""
    written = Written()
    if not out_path.is_file():
        return written
    with open(out_path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n") or not line.strip():
                continue
            try:
                row = json.loads(line)
                row_key = key(row)
                written.done.add(row_key)
                written.counts[row_key] += 1
            except (ValueError, KeyError, TypeError):
                raise UserError(f"not an rtool {command} output line (needs {needs})", path=out_path, line=number,
                                hint=f"--resume appends to a file written by rtool {command}; --overwrite starts "
                                     "it again") from None
            if written.settings is None and isinstance(row.get(settings_field), dict):
                written.settings, written.settings_line = row[settings_field], number
    return written

