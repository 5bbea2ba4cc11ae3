"""The `rtool` app itself: help without heavy imports, version, error rendering, --debug, broken pipes."""

import json
import signal
import subprocess
import sys

import pytest

from helpers import RTOOL
from rtool import __version__

COMMANDS = ["distill", "sft", "redi", "eval", "merge-bai", "plot", "prm-label", "prm-score", "prm-train", "bon", "grpo",
            "export", "nll", "decontaminate", "difficulty", "select"]
HEAVY = ("torch", "transformers", "trl", "peft", "vllm", "datasets", "matplotlib", "tensorboard", "wandb")


def rtool(*args, input=None, env=None, **kwargs):
    return subprocess.run([RTOOL, *args], input=input, capture_output=True,
                          text=True, timeout=120, env=env, **kwargs)


@pytest.mark.parametrize("args", [["--help"], *[[name, "--help"] for name in COMMANDS]])
def test_help_exits_0_without_importing_heavy_modules(args):
    code = ("import sys\nfrom rtool.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print('HEAVY', heavy, 'CODE', code, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert "HEAVY [] CODE 0" in result.stderr, result.stderr[-2000:]
    assert "Usage" in result.stdout


def test_the_app_and_the_package_description_name_every_command():
    """pip's summary of rtool (pyproject's description) once listed 12 of the 16 commands."""
    import re
    from importlib.metadata import metadata

    import typer

    from rtool.cli import app

    assert sorted(typer.main.get_command(app).commands) == sorted(COMMANDS)
    listed = re.split(r",\s*", metadata("rtool")["Summary"].split(": ", 1)[1].rstrip("."))
    assert sorted(listed) == sorted(COMMANDS)


def test_version():
    result = rtool("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"rtool {__version__}"


def test_user_error_is_one_line_exit_2_and_debug_shows_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "solution": "\\\\boxed{2}", "completion": "\\\\boxed{2}"}\n{oops\n')
    result = rtool("eval", "--input", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"rtool: error: {bad}:2: malformed JSON: Expecting property name enclosed in double quotes at column 2"
    assert "Traceback" not in result.stderr
    debug = rtool("eval", "--input", str(bad), "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    env_debug = rtool("eval", "--input", str(bad), env={**__import__("os").environ, "RTOOL_DEBUG": "1"})
    assert "Traceback" in env_debug.stderr


def test_unknown_flag_is_a_usage_error():
    result = rtool("eval", "--no-such-flag")
    assert result.returncode == 2 and "No such option" in result.stderr


@pytest.mark.parametrize("command", ["eval --records /dev/stdout", "bon", "bon --sorted", "difficulty",
                                     "select --include-incorrect"])
def test_broken_pipe_ends_quietly(tmp_path, command):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "problem": "x", "answer": "1", "completion": "\\boxed{1}"}) + "\n"
                            for i in range(20000)))
    pipeline = (f"{RTOOL} {command} --input {rows} | head -1; "
                "echo \"rc=${PIPESTATUS[0]}\"")
    result = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True, timeout=120)
    lines = result.stdout.strip().splitlines()
    assert str(json.loads(lines[0])["id"]) == "0"  # eval writes ids as strings, bon passes the row's through
    assert lines[-1] == "rc=0"
    assert result.stderr == "", result.stderr  # no traceback, no "stopped" warning: the reader had what it asked


def test_ctrl_c_exits_130_saying_so():
    # bon --sorted writes prompt "a" once "b" comes: a row on stdout proves the command is running, then Ctrl-C
    # while it waits on a stdin that stays open.
    child = subprocess.Popen([RTOOL, "bon", "--sorted"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    for row_id in ("a", "b"):
        child.stdin.write((json.dumps({"id": row_id, "problem": "x", "completion": "\\boxed{1}"}) + "\n").encode())
    child.stdin.flush()
    assert json.loads(child.stdout.readline())["id"] == "a"
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130
    assert stderr.decode().strip().splitlines()[-1] == "rtool: interrupted"
    assert "Traceback" not in stderr.decode()


GRADED = "".join(json.dumps({"id": f"p{i}", "problem": "2+2?", "answer": "4", "completion": "\\boxed{4}",
                             "sample": s}) + "\n" for i in range(2) for s in range(2))


def test_global_flags_work_after_the_subcommand_and_quiet_silences_the_table():
    loud = rtool("eval", input=GRADED)
    assert loud.returncode == 0 and "pass@1" in loud.stderr  # eval's table is info on stderr
    for args in (["-q", "eval"], ["eval", "-q"], ["eval", "--quiet"]):
        quiet = rtool(*args, input=GRADED)
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stderr == "" and json.loads(quiet.stdout)["prompts"] == 2
    verbose = rtool("bon", "-v", "-n", "1", input=GRADED)
    assert verbose.returncode == 0, verbose.stderr
    assert [row["bon_n"] for row in map(json.loads, verbose.stdout.splitlines())] == [1, 1]
    literal = rtool("eval", "--prompt-field=-q", input=GRADED)  # a value in --flag=VALUE form is not a flag
    assert literal.returncode == 0 and "pass@1" in literal.stderr


def test_eval_writes_its_summary_to_out_and_refuses_to_replace_it(tmp_path):
    summary = tmp_path / "summary.json"
    result = rtool("eval", "-o", str(summary), input=GRADED)
    assert result.returncode == 0 and result.stdout == ""
    assert json.loads(summary.read_text())["pass@1"] == 1.0
    again = rtool("eval", "--output", str(summary), input=GRADED)
    assert again.returncode == 2 and "--overwrite" in again.stderr.strip().splitlines()[-1]
    assert rtool("eval", "-o", str(summary), "--overwrite", input=GRADED).returncode == 0
