"""The `rtool` command: a typer app with one subcommand per module in `rtool.commands`.

Start-up stays cheap: this module and the command modules import only typer and the light core;
torch, transformers, trl and peft are imported inside the command functions, when a command runs.

Errors: a `UserError` prints `rtool: error: FILE:LINE: what (hint)` on stderr and exits 2; any other
exception prints one line and exits 1. `--debug` (like `-q` and `-v`: anywhere on the line) or `RTOOL_DEBUG=1` shows the
traceback instead. A closed stdout (`rtool ... | head -1`) ends quietly with exit 0.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated, Optional

import typer

from rtool import __version__
from rtool.errors import UserError

app = typer.Typer(
    name="rtool",
    help="Reasoning distillation toolbox: teacher traces, SFT, RL, merging, reward scoring and evaluation.\n\n"
    "Pipelines compose through JSONL on stdin and stdout:\n\n"
    "  rtool distill --teacher T < prompts.jsonl > traces.jsonl\n\n"
    "  rtool sft --model S --data traces.jsonl --out ckpt/sft\n\n"
    "  rtool eval --model ckpt/sft --bench math500",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"rtool {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_print_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (also RTOOL_DEBUG=1); accepted anywhere on the line.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr (no progress, tables or summaries); accepted anywhere on the line.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs on stderr; accepted anywhere on the line.")] = False,
) -> None:
    from rtool import log

    log.setup(-1 if quiet else (1 if verbose else 0))


class _StdoutClosed(Exception):
    """A BrokenPipeError from a command, renamed so that click does not turn it into exit code 1."""


class _Interrupted(Exception):
    """A KeyboardInterrupt from a command, renamed so that typer does not turn it into a silent Exit(130)."""


def _closed_stdout_ends_quietly(command):
    @functools.wraps(command)  # typer reads the wrapped signature for the flags
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError as error:
            raise _StdoutClosed() from error
        except KeyboardInterrupt as error:
            raise _Interrupted() from error

    return run


TRAINING_COMMANDS = ("sft", "redi", "grpo", "prm-train")


def _register_commands() -> None:
    from rtool.commands import (bon, decontaminate, difficulty, distill, eval as eval_module, export, grpo, merge_bai,
                                nll, plot, prm_label, prm_score, prm_train, redi, select_traces, sft)

    for name, command in [("distill", distill.distill_cmd), ("sft", sft.sft_cmd), ("redi", redi.redi_cmd),
                          ("grpo", grpo.grpo_cmd), ("eval", eval_module.eval_cmd),
                          ("merge-bai", merge_bai.merge_bai_cmd),
                          ("plot", plot.plot_cmd), ("prm-label", prm_label.prm_label_cmd),
                          ("prm-score", prm_score.prm_score_cmd), ("prm-train", prm_train.prm_train_cmd),
                          ("bon", bon.bon_cmd), ("export", export.export_cmd), ("nll", nll.nll_cmd),
                          ("decontaminate", decontaminate.decontaminate_cmd),
                          ("difficulty", difficulty.difficulty_cmd), ("select", select_traces.select_cmd)]:
        # The training commands take a TRL command line as it is: the flags their parser does not know reach
        # rtool.config.merge_config (ctx.args), which maps, passes or ignores TRL's and refuses the rest.
        settings = {"ignore_unknown_options": True, "allow_extra_args": True} if name in TRAINING_COMMANDS else {}
        app.command(name, context_settings=settings)(_closed_stdout_ends_quietly(command))


_register_commands()


GLOBAL_FLAGS = ("--debug", "--quiet", "-q", "--verbose", "-v")


def _global_flags_first(argv: list[str]) -> list[str]:
    """Move the global flags to the front: users type `rtool distill ... -q` as readily as `rtool -q distill`.

    No subcommand uses these names, so a copy after the subcommand can only mean the global flag; a literal
    value that looks like one goes after `--` or as `--flag=-q`.
    """
    end = argv.index("--") if "--" in argv else len(argv)
    found = [arg for arg in argv[:end] if arg in GLOBAL_FLAGS]
    rest = [arg for arg in argv[:end] if arg not in GLOBAL_FLAGS]
    return found + rest + argv[end:]


def _dashed_flag_names(argv: list[str]) -> list[str]:
    """`--learning_rate 1e-5` is `--learning-rate 1e-5`: TRL (transformers' HfArgumentParser) spells its flags with
    underscores, and no rtool flag has one, so a TRL command line's flags keep working (their names: rtool.options)."""
    end = argv.index("--") if "--" in argv else len(argv)
    dashed = []
    for arg in argv[:end]:
        name, eq, value = arg.partition("=")
        if name.startswith("--") and "_" in name and name[2:].replace("_", "").replace("-", "").isalnum():
            arg = name.replace("_", "-") + eq + value
        dashed.append(arg)
    return dashed + argv[end:]


def _switch_values(argv: list[str]) -> list[str]:
    """`--gradient-checkpointing false`, `--use-peft true`: a TRL command line gives a switch a value (transformers'
    HfArgumentParser takes one), an rtool switch takes none. true drops the word; false turns the switch off (its
    --no- form), or leaves the pair for rtool.config to refuse when the switch has no off form. Training commands
    only (the ones that read TRL command lines)."""
    from rtool.trl_names import BOOLEAN_TEXT

    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command not in TRAINING_COMMANDS:
        return argv
    click_command = typer.main.get_command(app).commands[command]
    switches = {opt: param for param in click_command.params if getattr(param, "is_flag", False)
                for opt in param.opts}
    end = argv.index("--") if "--" in argv else len(argv)
    rewritten, at = [], 0
    while at < end:
        arg, value = argv[at], BOOLEAN_TEXT.get(argv[at + 1].lower()) if at + 1 < end else None
        param = switches.get(arg)
        if param is not None and value is True:
            rewritten.append(arg)
            at += 2
        elif param is not None and value is False and param.secondary_opts:
            rewritten.append(param.secondary_opts[0])
            at += 2
        else:
            rewritten.append(arg)
            at += 1
    return rewritten + argv[end:]


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("RTOOL_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> None:
    argv = _switch_values(_global_flags_first(_dashed_flag_names(list(sys.argv[1:] if argv is None else argv))))
    debug = _debug_requested(argv)
    if debug:
        os.environ["RTOOL_DEBUG"] = "1"
    try:
        code = app(args=argv, prog_name="rtool", standalone_mode=False)
    except UserError as error:
        _exit_with(f"rtool: error: {error.render()}", error.exit_code, debug)
    except (BrokenPipeError, _StdoutClosed):
        _exit_quietly_on_closed_stdout()
    except (KeyboardInterrupt, _Interrupted):
        _exit_with("rtool: interrupted", 130, debug)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line unless --debug
        if isinstance(error, typer.TyperException) and hasattr(error, "show"):
            error.show()  # a usage error: typer prints usage and the message, exit 2
            sys.exit(getattr(error, "exit_code", 2))
        if isinstance(error, typer.Abort):
            _exit_with("rtool: interrupted", 130, debug)
        cause = _user_error_in_chain(error)
        if cause is not None:
            _exit_with(f"rtool: error: {cause.render()}", cause.exit_code, debug)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        _exit_with(f"rtool: error: {type(error).__name__}: {message}".rstrip(": "), 1, debug)
    else:
        _flush_stdout()
        sys.exit(code if isinstance(code, int) else 0)


def _user_error_in_chain(error: BaseException) -> UserError | None:
    seen = error.__cause__ or error.__context__
    while seen is not None:
        if isinstance(seen, UserError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _exit_with(line: str, code: int, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)
    _flush_stdout()
    print(line, file=sys.stderr)
    sys.exit(code)


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _exit_quietly_on_closed_stdout()


def _exit_quietly_on_closed_stdout() -> None:
    # The reader went away (`| head -1`): point stdout at /dev/null so the interpreter's final
    # flush does not raise a second time, and end with success as other Unix filters do.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


if __name__ == "__main__":
    main()
