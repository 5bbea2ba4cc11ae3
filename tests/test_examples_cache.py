"""examples/quickstart/check_reuse.py --key: the examples' cache (EXAMPLES_CACHE) shares a step only when it is the
same command on the same inputs, compared by content, whatever the work dir."""

import shutil
import subprocess
import sys
from pathlib import Path

CHECK_REUSE = Path(__file__).resolve().parent.parent / "examples" / "quickstart" / "check_reuse.py"


def key(out, *command):
    result = subprocess.run([sys.executable, str(CHECK_REUSE), "--key", str(out), *map(str, command)],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_a_step_keys_on_its_inputs_content_and_flags_not_on_its_paths(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    (one / "model").mkdir(parents=True)
    (one / "model" / "weights").write_bytes(b"\x00\x01")
    (one / "traces.jsonl").write_text('{"id": "a"}\n')
    shutil.copytree(one, two)

    def sft(work, *extra):
        return key(work / "student", "rtool", "sft", "--model", work / "model", "--data", work / "traces.jsonl",
                   "--out", work / "student", "--max-steps", 550, *extra)

    assert sft(one) == sft(two)  # another example's work dir, inputs copied from the same step 1
    assert sft(one) != sft(one, "--seed", 1)
    assert sft(one) != key(one / "student", "rtool", "sft", "--model", one / "model", "--data", one / "traces.jsonl",
                           "--out", one / "student", "--max-steps", 500)
    (two / "traces.jsonl").write_text('{"id": "b"}\n')
    assert sft(one) != sft(two)
    (two / "traces.jsonl").write_text('{"id": "a"}\n')
    (two / "model" / "weights").write_bytes(b"\x00\x02")  # a file inside an input directory
    assert sft(one) != sft(two)


def test_a_value_is_not_read_as_a_file_of_that_name(tmp_path, monkeypatch):
    # A stray file named "550" in the directory CI runs from once made --max-steps 550 key on its content.
    monkeypatch.chdir(tmp_path)
    before = key(tmp_path / "out", "rtool", "sft", "--max-steps", 550)
    (tmp_path / "550").write_text("anything")
    assert key(tmp_path / "out", "rtool", "sft", "--max-steps", 550) == before
