"""Reading and writing records: formats, streaming, bad lines, atomic and append-safe output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtool.errors import UserError
from rtool.io.records import ReadStats, RecordWriter, read_records, write_json


def write_lines(path, lines):
    path.write_bytes(b"".join(line if isinstance(line, bytes) else line.encode() for line in lines))
    return path


def test_jsonl_rows_keep_their_place(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", ['{"q": 1}\n', "\n", '{"q": 2}\n'])
    rows = list(read_records(path))
    assert rows == [{"q": 1}, {"q": 2}]
    assert (rows[1].path, rows[1].line) == (str(path), 3)


@pytest.mark.parametrize("content, message", [
    (['{"q": 1}\n', '{"q": \n'], "a.jsonl:2: malformed JSON"),
    (['[1, 2]\n'], "a.jsonl:1: expected a JSON object, got list"),
    (['{"q": "abc'], "a.jsonl:1: malformed JSON: Unterminated string starting at column 7"),  # not "at at"
    (['{"q": "a\tb"}\n'], "a.jsonl:1: malformed JSON: Invalid control character at column 9"),
    ([b'{"q": "\xff\xfe"}\n'], "a.jsonl:1: not UTF-8 text"),
])
def test_bad_lines_name_file_and_line(tmp_path, content, message):
    path = write_lines(tmp_path / "a.jsonl", content)
    with pytest.raises(UserError) as caught:
        list(read_records(path))
    assert message in caught.value.render()


def test_skip_bad_counts_and_continues(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", ['{"q": 1}\n', "oops\n", "3\n", '{"q": 4}\n'])
    stats = ReadStats()
    assert [row["q"] for row in read_records(path, skip_bad=True, stats=stats)] == [1, 4]
    assert stats.skipped == 2 and stats.rows == 2
    assert "a.jsonl:2" in stats.skipped_where[0]


def test_overlong_line_is_refused_without_reading_it_whole(tmp_path):
    path = write_lines(tmp_path / "big.jsonl", ['{"q": "' + "x" * 5000 + '"}\n', '{"q": 2}\n'])
    with pytest.raises(UserError, match="big.jsonl:1: line longer than"):
        list(read_records(path, max_line_bytes=1024))
    stats = ReadStats()
    assert [r["q"] for r in read_records(path, skip_bad=True, stats=stats, max_line_bytes=1024)] == [2]


def test_json_array_parquet_and_datasets_dir(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    data = [{"problem": "1+1", "answer": "2"}, {"problem": "2+2", "answer": "4"}]
    (tmp_path / "a.json").write_text(json.dumps(data))
    pq.write_table(pa.Table.from_pylist(data), tmp_path / "a.parquet")
    Dataset.from_list(data).save_to_disk(str(tmp_path / "ds"))
    for source in ("a.json", "a.parquet", "ds"):
        rows = list(read_records(tmp_path / source))
        assert rows == data, source
        assert rows[1].line == 2


def test_missing_file_and_plain_dir(tmp_path):
    with pytest.raises(UserError, match="nope.jsonl: no such file"):
        list(read_records(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="a folder, but neither a saved HF dataset .* nor one with data files"):
        list(read_records(tmp_path))


def test_writer_appends_whole_lines_and_repairs_a_torn_tail(tmp_path):
    path = tmp_path / "out.jsonl"
    with RecordWriter(path) as writer:
        writer.write({"a": 1, "text": "é"})
    path.write_bytes(path.read_bytes() + b'{"a": 2, "tex')  # a kill -9 mid-write
    with RecordWriter(path) as writer:
        writer.write({"a": 3})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1, "text": "é"}, {"a": 3}]


class Stop(Exception):
    pass


def lines_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_atomic_writer_refuses_a_file_with_rows_and_replaces_it_only_when_the_run_ends_whole(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"old": 1}\n')
    with pytest.raises(UserError, match="out.jsonl: already holds rows .*--overwrite"):
        RecordWriter(path, atomic=True)
    with pytest.raises(Stop):
        with RecordWriter(path, atomic=True, overwrite=True) as writer:
            writer.write({"new": 1})
            raise Stop  # a bad row, a Ctrl-C: the old file stays whole, and no temporary file is left
    assert lines_of(path) == [{"old": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    with RecordWriter(path, atomic=True, overwrite=True) as writer:
        writer.write({"new": 1})
        assert lines_of(path) == [{"old": 1}]  # replaced at the end, not truncated at the start
    assert lines_of(path) == [{"new": 1}]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with RecordWriter(empty, atomic=True) as writer:  # an empty file holds nothing to lose
        writer.write({"a": 1})
    assert lines_of(empty) == [{"a": 1}]


def test_a_run_that_writes_nothing_leaves_no_file(tmp_path):
    for kwargs in ({}, {"append": False}, {"atomic": True}):
        path = tmp_path / "sub" / "out.jsonl"
        with pytest.raises(Stop):
            with RecordWriter(path, **kwargs):
                raise Stop
        assert not path.exists() and not path.parent.exists(), kwargs
    # --overwrite of a resumable output: the old rows go only when the first new row comes.
    path = tmp_path / "kept.jsonl"
    path.write_text('{"old": 1}\n')
    with pytest.raises(Stop):
        with RecordWriter(path, append=False):
            raise Stop
    assert lines_of(path) == [{"old": 1}]
    with RecordWriter(path, append=False) as writer:
        writer.write({"new": 1})
    assert lines_of(path) == [{"new": 1}]


def test_devices_and_symlinks_are_written_through(tmp_path):
    with RecordWriter("/dev/null", atomic=True) as writer:  # never renamed over
        writer.write({"a": 1})
    assert Path("/dev/null").is_char_device()
    real = tmp_path / "real.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    with RecordWriter(link, atomic=True) as writer:
        writer.write({"a": 1})
    assert link.is_symlink() and lines_of(real) == [{"a": 1}]


@pytest.mark.parametrize("make, given, message", [
    (lambda d: (d / "file").write_text("x"), "file/out.jsonl", "cannot be created: {d}/file is not a directory"),
    (lambda d: (d / "file").write_text("x"), "file/a/b/out.jsonl", "cannot be created: {d}/file is not a directory"),
    (lambda d: (d / "dir").mkdir(), "dir", "is a directory"),
])
def test_an_unwritable_output_is_refused_before_any_work_naming_the_path_given(tmp_path, make, given, message):
    make(tmp_path)
    for kwargs in ({}, {"atomic": True}):
        with pytest.raises(UserError) as caught:
            RecordWriter(tmp_path / given, **kwargs)
        assert caught.value.render().startswith(f"{tmp_path / given}: {message.format(d=tmp_path)}")
    with pytest.raises(UserError, match="is a directory|is not a directory"):
        write_json({"x": 1}, tmp_path / given)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: no permission to refuse")
def test_no_permission_is_refused_naming_the_path(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UserError, match=f"{locked / 'out.jsonl'}: cannot be created: no write permission"):
        RecordWriter(locked / "out.jsonl", atomic=True)


def test_write_json_is_atomic(tmp_path):
    target = tmp_path / "s.json"
    write_json({"x": 1}, target)
    assert json.loads(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_stdin_streams_before_input_ends():
    # A row must come out of read_records before stdin closes: pipelines stream.
    code = ("import sys; from rtool.io.records import read_records\n"
            "for row in read_records('-'):\n    print(row['q'], flush=True)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child.stdin.write(b'{"q": 1}\n')
    child.stdin.flush()
    assert child.stdout.readline() == b"1\n"
    child.stdin.close()
    assert child.wait(timeout=30) == 0


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    # Two atomic writers in one process (an -o and a --report given one path once shared .NAME.PID.rtool-tmp and
    # garbled each other): each writes its own rows whole; the last to finish is the file.
    path = tmp_path / "out.jsonl"
    first, second = RecordWriter(path, atomic=True), RecordWriter(path, atomic=True)
    for i in range(3):
        first.write({"writer": 1, "row": i})
        second.write({"writer": 2, "row": i, "pad": "x" * 50})
    first.close()
    assert lines_of(path) == [{"writer": 1, "row": i} for i in range(3)]
    second.close()
    assert lines_of(path) == [{"writer": 2, "row": i, "pad": "x" * 50} for i in range(3)]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
