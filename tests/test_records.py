"""Reading and writing records: formats, streaming, bad lines, atomic and append-safe output."""

import json
import subprocess
import sys

import pytest

from rtool.errors import UserError
from rtool.records import ReadStats, RecordWriter, read_records, write_json


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
    with pytest.raises(UserError, match="not a saved HF dataset"):
        list(read_records(tmp_path))


def test_writer_appends_whole_lines_and_repairs_a_torn_tail(tmp_path):
    path = tmp_path / "out.jsonl"
    with RecordWriter(path) as writer:
        writer.write({"a": 1, "text": "é"})
    path.write_bytes(path.read_bytes() + b'{"a": 2, "tex')  # a kill -9 mid-write
    with RecordWriter(path) as writer:
        writer.write({"a": 3})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1, "text": "é"}, {"a": 3}]


def test_write_json_is_atomic(tmp_path):
    target = tmp_path / "s.json"
    write_json({"x": 1}, target)
    assert json.loads(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_stdin_streams_before_input_ends():
    # A row must come out of read_records before stdin closes: pipelines stream.
    code = ("import sys; from rtool.records import read_records\n"
            "for row in read_records('-'):\n    print(row['q'], flush=True)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child.stdin.write(b'{"q": 1}\n')
    child.stdin.flush()
    assert child.stdout.readline() == b"1\n"
    child.stdin.close()
    assert child.wait(timeout=30) == 0
