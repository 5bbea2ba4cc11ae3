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
    assert complete_in_bash(["rtool", "di"]) == ["distill", "difficulty"]
    assert "--teacher" in complete_in_bash(["rtool", "distill", "--te"])
    assert complete_in_bash(["rtool", "eval", "--rec"]) == ["--records"]


def test_bash_offers_the_values_of_choice_flags():
    assert complete_in_bash(["rtool", "distill", "--backend", ""]) == ["auto", "hf", "vllm", "openai"]
    assert complete_in_bash(["rtool", "sft", "--report-to", "t"]) == ["tensorboard"]
    assert complete_in_bash(["rtool", "bon", "--method", "w"]) == ["weighted"]
    assert complete_in_bash(["rtool", "select", "--prefer", "s"]) == ["shortest"]
    assert complete_in_bash(["rtool", "merge-bai", "--method", "dare"]) == ["dare-ties", "dare-linear"]
    assert "cosine_with_min_lr" in complete_in_bash(["rtool", "grpo", "--lr-scheduler", "cos"])


def test_bash_completes_global_flags_after_the_subcommand():
    assert complete_in_bash(["rtool", "eval", "--qu"]) == ["--quiet"]
    assert complete_in_bash(["rtool", "bon", "--deb"]) == ["--debug"]
    assert "--instruct" not in complete_in_bash(["rtool", "merge-bai", "--inst"])  # the hidden old name


def test_every_choice_is_named_in_its_flags_help():
    """A choice list here that drifts from what the command accepts (its help names what it accepts) fails."""
    import typer.main

    from rtool.cli import app
    from rtool.completions import _choices

    root = typer.main.get_command(app)
    context = root.make_context("rtool", ["--help"], resilient_parsing=True)
    checked = 0
    for name in root.list_commands(context):
        for param in root.get_command(context, name).params:
            for choice in _choices(name, list(getattr(param, "opts", []))):
                assert choice in (param.help or ""), f"{name} {param.opts[0]}: {choice!r} not in its help"
                checked += 1
    assert checked > 50
