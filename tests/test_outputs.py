"""What every command does with its output path: a file that holds rows is refused without --overwrite (or
--resume), a failed run leaves it as it was and a new one is not left behind empty, and a path that cannot be
written is one line naming it (exit 2) before any work. The writer itself is tested in test_records.py."""

import json

import pytest

from helpers import jsonl, last_error_line, run_rtool

CANDIDATES = [{"id": "q", "sample": s, "problem": "1+1?", "answer": "2", "completion": f"\\boxed{{{a}}}"}
              for s, a in enumerate(["2", "2", "3"])]


def lines(rows):
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture
def old_rows(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(lines([{"id": f"old{i}", "completion": "kept"} for i in range(8)]))
    return path


@pytest.mark.parametrize("command, flag", [("bon", "-o"), ("eval", "--records")])
def test_a_file_with_rows_is_refused_without_overwrite_and_replaced_with_it(old_rows, command, flag):
    before = old_rows.read_bytes()
    refused = run_rtool(command, flag, old_rows, input=lines(CANDIDATES))
    assert refused.returncode == 2
    assert last_error_line(refused) == (f"rtool: error: {old_rows}: already holds rows (pass --overwrite to replace "
                                        "it, or write to another file)")
    assert old_rows.read_bytes() == before
    replaced = run_rtool(command, flag, old_rows, "--overwrite", input=lines(CANDIDATES))
    assert replaced.returncode == 0, replaced.stderr.decode()
    assert [row["id"] for row in jsonl(old_rows.read_text())] == (["q"] if command == "bon" else ["q"] * 3)


@pytest.mark.parametrize("command, flag", [("bon", "-o"), ("eval", "--records")])
def test_a_failed_run_leaves_the_old_file_whole_and_no_new_one(tmp_path, old_rows, command, flag):
    bad = lines(CANDIDATES) + lines([{"id": "r", "problem": "2+2?", "completion": "\\boxed{4}"}]) + "{oops\n"
    before = old_rows.read_bytes()
    failed = run_rtool(command, flag, old_rows, "--overwrite", input=bad)
    assert failed.returncode == 2 and "<stdin>:5: malformed JSON" in last_error_line(failed)
    assert old_rows.read_bytes() == before  # not truncated when the run began, nor replaced by a part
    new = tmp_path / "new.jsonl"
    failed = run_rtool(command, flag, new, input=bad)
    assert failed.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no empty file, no temporary one


def test_bon_stdout_still_streams_the_prompts_decided_before_an_error():
    bad = lines(CANDIDATES) + lines([{"id": "r", "problem": "2+2?", "completion": "\\boxed{4}"}]) + "{oops\n"
    result = run_rtool("bon", "--sorted", input=bad)
    assert result.returncode == 2 and [row["id"] for row in jsonl(result.stdout)] == ["q"]


def _commands(model):
    """(argv, the output path it names) of every command that writes a file or dir the user names."""
    return [
        (["bon", "-o", "{out}"], "file"),
        (["eval", "--records", "{out}"], "file"),
        (["distill", "--teacher", model, "-o", "{out}"], "file"),
        (["prm-label", "--policy", model, "-o", "{out}"], "file"),
        (["prm-score", "--prm", model, "-o", "{out}"], "file"),
        (["sft", "--model", model, "--data", "{data}", "--out", "{out}"], "dir"),
        (["redi", "--model", model, "--data", "{data}", "--out", "{out}"], "dir"),
        (["grpo", "--model", model, "--data", "{data}", "--out", "{out}"], "dir"),
        (["prm-train", "--model", model, "--data", "{data}", "--out", "{out}"], "dir"),
        (["merge-bai", "-r", model, "--instruct-model", model, "-p", model, "--out", "{out}"], "dir"),
    ]


@pytest.mark.parametrize("index", range(10))
def test_an_unwritable_output_is_one_line_naming_it_before_any_work(tmp_path, tiny_model_dir, index):
    argv, kind = _commands(str(tiny_model_dir))[index]
    data = tmp_path / "rows.jsonl"
    data.write_text(lines(CANDIDATES))
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    cases = [(tmp_path / "a_file" / "sub" / "out", "cannot be created: {} is not a directory".format(
        tmp_path / "a_file"))]
    cases.append((tmp_path / "a_dir", "is a directory") if kind == "file" else
                 (tmp_path / "a_file", "exists and is not a directory"))
    for out, message in cases:
        args = [arg.format(out=out, data=data) for arg in argv]
        result = run_rtool(*args, input=lines(CANDIDATES))
        stderr = result.stderr.decode()
        assert result.returncode == 2, stderr
        assert "Traceback" not in stderr and "rtool-tmp" not in stderr
        assert last_error_line(result).startswith(f"rtool: error: {out}"), stderr
        assert message in last_error_line(result) or "exists and is not a directory" in last_error_line(result)
