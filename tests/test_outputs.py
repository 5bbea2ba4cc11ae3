"""What every command does with its output path: a file that holds rows is refused without --overwrite (or
--resume), a failed run leaves it as it was and a new one is not left behind empty, and a path that cannot be
written is one line naming it (exit 2) before any work. The writer itself is tested in test_records.py."""

import json
import subprocess

import pytest

from helpers import RTOOL, jsonl, last_error_line, run_rtool

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


# Every flag that names what a command writes, and a command line where it names an input of the same run ({same}: a
# symlink to that input, so the paths differ as typed and are one file). --overwrite where a command has it: the
# refusal must not hang on the output already existing.
CLASHES = {
    ("bon", "--out"): ["bon", "-i", "{rows}", "-o", "{same}", "--overwrite"],
    ("decontaminate", "--out"): ["decontaminate", "--bench", "gsm8k", "-i", "{rows}", "-o", "{same}", "--overwrite"],
    ("decontaminate", "--report"): ["decontaminate", "--bench", "{rows}", "-i", "{other}", "--report", "{same}",
                                    "--overwrite"],
    ("difficulty", "--out"): ["difficulty", "{other}", "{rows}", "-o", "{same}", "--overwrite"],
    ("distill", "--out"): ["distill", "--teacher", "{model}", "-i", "{rows}", "-o", "{same}", "--overwrite"],
    ("eval", "--records"): ["eval", "-i", "{rows}", "--records", "{same}", "--overwrite"],
    ("eval", "--out"): ["eval", "-i", "{rows}", "-o", "{same}", "--overwrite"],
    ("export", "--out"): ["export", "--to", "trl-sft", "-i", "{rows}", "-o", "{same}", "--overwrite"],
    ("nll", "--out"): ["nll", "--model", "{model}", "-i", "{rows}", "-o", "{same}", "--overwrite"],
    ("plot", "--out"): ["plot", "{metrics}", "-o", "{same_metrics}", "--overwrite"],
    ("prm-label", "--out"): ["prm-label", "--policy", "{model}", "-i", "{rows}", "-o", "{same}", "--overwrite"],
    ("prm-score", "--out"): ["prm-score", "--prm", "{model}", "-i", "{rows}", "-o", "{same}", "--overwrite"],
    ("select", "--out"): ["select", "{rows}", "--prompts", "{other}", "-o", "{same}", "--overwrite"],
    ("merge-bai", "--out"): ["merge-bai", "-r", "{model}", "--instruct-model", "{model}", "-p", "{model}", "--out",
                             "{same_model}", "--overwrite"],
    **{(command, "--out"): [command, "--model", "{model}", "--data", "{rows}", "--out", "{same_model}", "--overwrite"]
       for command in ("sft", "redi", "grpo", "prm-train")},
}
OUTPUT_FLAGS = ("--out", "--report", "--records")


def test_every_output_flag_of_every_command_is_in_the_clash_table():
    from typer.main import get_command

    from rtool.cli import app

    found = {(name, param.opts[0]) for name, command in get_command(app).commands.items()
             for param in command.params if param.opts[0] in OUTPUT_FLAGS}
    assert found == set(CLASHES)


@pytest.fixture
def clash_places(tmp_path, tiny_model_dir):
    import shutil

    rows, other, metrics = tmp_path / "rows.jsonl", tmp_path / "other.jsonl", tmp_path / "metrics.jsonl"
    rows.write_text(lines(CANDIDATES))
    other.write_text(lines(CANDIDATES[:1]))
    metrics.write_text(lines([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]))
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)  # a run that did not refuse would write over this copy, not the fixture
    places = {"rows": rows, "other": other, "metrics": metrics, "model": model}
    for name, target in (("same", rows), ("same_metrics", metrics), ("same_model", model)):
        places[name] = tmp_path / f"link-to-{target.name}"
        places[name].symlink_to(target)
    return places


def snapshot(root):
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file() and not path.is_symlink()}


@pytest.mark.parametrize("command, flag", sorted(CLASHES))
def test_an_output_that_is_an_input_is_refused_before_any_work(tmp_path, clash_places, command, flag):
    argv = [arg.format(**clash_places) for arg in CLASHES[command, flag]]
    before = snapshot(tmp_path)
    result = run_rtool(*argv, input="")
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    same = next(arg for arg in argv if "link-to-" in arg)
    assert last_error_line(result).startswith(f"rtool: error: {same}: {flag} would replace an input: "), stderr
    assert "Traceback" not in stderr
    assert snapshot(tmp_path) == before  # nothing read was touched, nothing new was made


@pytest.mark.parametrize("argv, message", [
    (["decontaminate", "--bench", "gsm8k", "-o", "{dir}/x.jsonl", "--report", "{dir}/./x.jsonl"],
     "{dir}/x.jsonl: --report and --out name the same file"),
    (["eval", "--records", "{dir}/sub/../x.jsonl", "-o", "{dir}/x.jsonl"],
     "{dir}/sub/../x.jsonl: --records and --out name the same file"),
])
def test_two_outputs_of_one_run_that_are_one_file_are_refused(tmp_path, argv, message):
    result = run_rtool(*[arg.format(dir=tmp_path) for arg in argv], input=lines(CANDIDATES))
    assert result.returncode == 2, result.stderr.decode()
    assert last_error_line(result).startswith(f"rtool: error: {message.format(dir=tmp_path)}")
    assert list(tmp_path.iterdir()) == []


def test_stdin_read_from_a_file_is_an_input_too(tmp_path):
    # The case: `--report in.jsonl < in.jsonl` once exited 0 with in.jsonl holding only the dropped rows.
    source = tmp_path / "in.jsonl"
    source.write_text(lines(CANDIDATES))
    before = source.read_bytes()
    with open(source, "rb") as stdin:
        result = subprocess.run([RTOOL, "decontaminate", "--bench", str(source), "--report", str(source)],
                                stdin=stdin, capture_output=True, timeout=120)
    assert result.returncode == 2
    assert last_error_line(result) == (f"rtool: error: {source}: --report would replace an input: it is --input - "
                                       "(stdin) (write it to another file)")
    assert source.read_bytes() == before


def test_an_existing_report_is_refused_without_overwrite(tmp_path):
    report = tmp_path / "dropped.jsonl"
    report.write_text(lines([{"id": "kept", "note": "an earlier report"}]))
    bench = tmp_path / "bench.jsonl"
    bench.write_text(lines([{"problem": "1+1?"}]))
    argv = ["decontaminate", "--bench", bench, "--rule", "loose", "--report", report]  # loose: "1+1?" matched whole
    refused = run_rtool(*argv, input=lines(CANDIDATES))
    assert refused.returncode == 2
    assert last_error_line(refused) == (f"rtool: error: {report}: already holds rows (pass --overwrite to replace it, "
                                        "or write to another file)")
    assert jsonl(report.read_text()) == [{"id": "kept", "note": "an earlier report"}]
    replaced = run_rtool(*argv, "--overwrite", input=lines(CANDIDATES))
    assert replaced.returncode == 0, replaced.stderr.decode()
    assert [row["id"] for row in jsonl(report.read_text())] == ["q"] * 3


def test_a_killed_bon_leaves_nothing_that_the_next_run_trips_on(tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "best.jsonl"
    child = subprocess.Popen([RTOOL, "bon", "--sorted", "-o", str(out)], stdin=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env={**os.environ, "RTOOL_DEBUG": "0"})
    # Prompt q is decided when r's first candidate comes: its row goes to the temporary file; stdin stays open.
    child.stdin.write((lines(CANDIDATES) + lines([{**CANDIDATES[0], "id": "r"}])).encode())
    child.stdin.flush()
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in tmp_path.glob(".best.jsonl.*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert not out.exists() and len(list(tmp_path.glob(".best.jsonl.*.rtool-tmp"))) == 1
    again = run_rtool("bon", "-o", out, input=lines(CANDIDATES))
    assert again.returncode == 0, again.stderr.decode()
    assert [p.name for p in tmp_path.iterdir()] == ["best.jsonl"]  # the dead run's temporary file is gone
    assert [row["id"] for row in jsonl(out.read_text())] == ["q"]
