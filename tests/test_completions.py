"""Shell completions: the committed scripts match the app, and bash completes commands and flags."""

import subprocess
from pathlib import Path

import pytest

from rtool.completions import SHELLS, render

COMPLETIONS = Path(__file__).resolve().parent.parent / "completions"


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_committed_completions_are_current(shell):
    committed = COMPLETIONS / SHELLS[shell]
    assert committed.exists(), f"{committed} missing: run `make completions`"
    assert committed.read_text() == render(shell), f"{committed} is stale: run `make completions`"


def complete_in_bash(words):
    script = (f"source {COMPLETIONS / 'rtool.bash'}\n"
              f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}\n"
              "_rtool; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()


def test_bash_completes_commands_and_their_flags():
    assert complete_in_bash(["rtool", "di"]) == ["distill"]
    assert "--teacher" in complete_in_bash(["rtool", "distill", "--te"])
    assert complete_in_bash(["rtool", "eval", "--rec"]) == ["--records"]
