"""`--config run.yaml` for training commands: YAML values fill in the flags not given on the command line.

Precedence is defaults < YAML < flags: a flag typed on the command line (or set through its environment variable)
always wins, whatever its value, even when it equals the default. Keys are flag names with dashes or
underscores (`lora-r: 16` or `lora_r: 16`), and a flag's TRL name is a key too (`learning_rate: 1e-5`,
`per_device_train_batch_size: 4`, `output_dir: runs/x`: a TRL or open-r1 recipe's keys); an unknown key is an error
naming the file, line, the nearest valid key and the valid keys.
Relative paths in the YAML are relative to the current directory, as on the command line.

    def sft_cmd(ctx: typer.Context, ..., config: ConfigOpt = None):
        opts = merge_config(ctx, config)    # a namespace: opts.lr, opts.model, ...
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from rtool.errors import UserError

# Sources that count as "given explicitly": the command line, its env var or an interactive prompt.
_EXPLICIT = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def given(ctx, name: str) -> bool:
    """Whether the flag whose parameter is `name` was given explicitly, not left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in _EXPLICIT


def merge_config(ctx, config_path: Path | str | None) -> SimpleNamespace:
    """The command's parameter values (`ctx.params`) with the YAML file's values applied under explicit flags."""
    values = dict(ctx.params)
    if config_path is None:
        return SimpleNamespace(**values)
    # Only parameters that reach the command (not --help, --install-completion and other eager extras).
    params = {param.name: param for param in ctx.command.params if param.name in values and param.name != "config"}
    names = key_names(params.values())
    seen: dict[str, str] = {}
    for key, (value, line) in load_yaml_mapping(config_path).items():
        name = names.get(str(key).replace("-", "_"))
        if name is None:
            raise UserError(f"unknown key {key!r}", path=config_path, line=line, hint=_nearest(str(key), names))
        if name in seen:
            raise UserError(f"{key!r} sets the same flag as {seen[name]!r}", path=config_path, line=line,
                            hint="keep one of them")
        seen[name] = str(key)
        if given(ctx, name):
            continue
        values[name] = _convert(ctx, params[name], value, config_path, line, key)
    return SimpleNamespace(**values)


def key_names(params) -> dict[str, str]:
    """{YAML key: parameter name}: every long flag name of a parameter, underscored, so that a flag's TRL name
    (`--learning-rate`, rtool.options) is its key too (`learning_rate: 1e-5`, as TRL and open-r1 recipes write it)."""
    names = {}
    for param in params:
        names[param.name] = param.name
        for opt in (*param.opts, *param.secondary_opts):
            if opt.startswith("--"):
                names[opt[2:].replace("-", "_")] = param.name
    return names


def _nearest(key: str, names: dict[str, str]) -> str:
    import difflib

    close = difflib.get_close_matches(key.replace("-", "_"), list(names), n=1, cutoff=0.6)
    valid = "valid: " + ", ".join(sorted({name.replace("_", "-") for name in names.values()}))
    return (f"did you mean {close[0]!r}? " if close else "") + valid


def load_yaml_mapping(path: Path | str) -> dict:
    """{key: (value, line)} from a YAML file whose top level is a mapping; an empty file is an empty mapping."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("no such config file", path=path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read config: {error}", path=path) from None
    try:
        # compose() keeps each key's line for error messages; safe_load() gives the plain values.
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise UserError(f"malformed YAML: {getattr(error, 'problem', None) or error}", path=path,
                        line=None if mark is None else mark.line + 1) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping of flag names to values, got {type(data).__name__}", path=path)
    lines = {key_node.value: key_node.start_mark.line + 1 for key_node, _ in node.value}
    return {key: (value, lines.get(str(key))) for key, value in data.items()}


def _convert(ctx, param, value, path, line, key):
    """Check and convert a YAML value with the flag's own type, so YAML and flags accept the same values."""
    import typer

    if value is None:
        return None
    if isinstance(value, list) and not param.multiple and getattr(param, "nargs", 1) == 1:
        # A YAML list for a comma-separated flag (lora-targets: [q_proj, v_proj]).
        value = ",".join(str(item) for item in value)
    try:
        return param.process_value(ctx, value)
    except typer.BadParameter as error:
        raise UserError(f"bad value for {key!r}: {error.message}", path=path, line=line) from None
