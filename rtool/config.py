"""`--config run.yaml` for training commands: YAML values fill in the flags not given on the command line; and the
names TRL, transformers and open-r1 give training settings, in the YAML and on the command line.

Precedence is defaults < YAML < flags: a flag typed on the command line (or set through its environment variable)
always wins, whatever its value, even when it equals the default. Keys are flag names with dashes or
underscores (`lora-r: 16` or `lora_r: 16`), and a flag's TRL name is a key too (`learning_rate: 1e-5`,
`per_device_train_batch_size: 4`, `output_dir: runs/x`). The other keys of a TRL or open-r1 recipe, and the other
flags of a `trl sft` command line (which the training commands take: rtool.cli), are mapped to the rtool flag with
their meaning, passed to the TRL config, or ignored with one warning that lists them (rtool.trl_names); a key no
library knows is an error naming the file and line, the nearest name when one is close, and the valid keys.
`max_steps: -1` (TRL's "no limit") leaves --max-steps unset. Relative paths in the YAML are relative to the current
directory, as on the command line.

    def sft_cmd(ctx: typer.Context, ..., config: ConfigOpt = None):
        opts = merge_config(ctx, config)    # a namespace: opts.lr, opts.model, ..., opts.trl_args when passed
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """The command's parameter values (`ctx.params`) with the YAML file's values applied under explicit flags, and
    the command line's TRL flags (`ctx.args`, left over by the command's own parser) over both. Settings passed to
    the TRL config are `trl_args` (present only when there are some)."""
    values = dict(ctx.params)
    # Only parameters that reach the command (not --help, --install-completion and other eager extras).
    params = {param.name: param for param in ctx.command.params if param.name in values and param.name != "config"}
    reader = _Reader(ctx, params, key_names(params.values()), ctx.info_name or ctx.command.name)
    typed = reader.read(_command_line_settings(getattr(ctx, "args", None) or []), source="the command line")
    recipe = reader.read(_yaml_settings(config_path), source=str(config_path)) if config_path is not None \
        else _Settings()
    for name, value in recipe.flags.items():
        if not given(ctx, name) and name not in typed.flags:
            values[name] = value
    if "dtype" in typed.set_by and given(ctx, "dtype"):
        raise UserError(f"{typed.set_by['dtype']} sets the same flag as --dtype", hint="keep one of them")
    for name, value in typed.flags.items():
        if given(ctx, name):
            raise UserError(f"{typed.set_by[name]} sets the same flag as --{name.replace('_', '-')}",
                            hint="keep one of them")
        values[name] = value
    precision = {**recipe.precision, **typed.precision}
    if precision and "dtype" in params and not given(ctx, "dtype"):
        from rtool.trl_names import precision_dtype

        try:
            values["dtype"] = precision_dtype(precision.get("dtype"), precision.get("bf16"), precision.get("fp16")) \
                or values["dtype"]
        except ValueError as error:
            raise UserError(f"bad value: {error}", path=config_path) from None
    if values.get("max_steps") == -1:  # TRL's "no limit": the epochs decide
        values["max_steps"] = None
    trl_args = {**recipe.trl_args, **typed.trl_args}
    if trl_args:
        values["trl_args"] = trl_args
    _warn_ignored(recipe.ignored + typed.ignored, config_path, reader.command)
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


@dataclass
class _Setting:
    key: str  # underscored: learning_rate
    value: object
    spelled: str  # as the user wrote it, for messages: 'torch_dtype' or --torch-dtype
    line: int | None = None

    @property
    def typed(self) -> bool:
        """On the command line, not in the YAML."""
        return self.spelled.startswith("-")


@dataclass
class _Settings:
    """What one source (the YAML, or the command line's TRL flags) sets."""

    flags: dict = field(default_factory=dict)  # rtool parameter -> value
    set_by: dict = field(default_factory=dict)  # rtool parameter -> the setting that set it, as spelled
    precision: dict = field(default_factory=dict)  # dtype, bf16, fp16 -> value (rtool.trl_names.precision_dtype)
    trl_args: dict = field(default_factory=dict)
    ignored: list = field(default_factory=list)


@dataclass
class _Reader:
    ctx: object
    params: dict
    names: dict
    command: str

    def read(self, settings, *, source: str) -> _Settings:
        read = _Settings()
        later = {}  # save_strategy "no": TRL saves nothing whatever save_steps says, so it is applied last
        for setting in settings:
            name = self.names.get(setting.key)
            if name == "dtype":
                self._once(read, "dtype", setting, source)
                read.precision["dtype"] = setting.value
            elif name is not None:
                self._once(read, name, setting, source)
                read.flags[name] = self._convert(name, setting, source)
            else:
                self._trl_setting(read, later, setting, source)
        for name, (value, setting) in later.items():
            read.flags[name], read.set_by[name] = value, setting.spelled
        return read

    def _trl_setting(self, read: _Settings, later: dict, setting: _Setting, source: str) -> None:
        from rtool import trl_names

        found = trl_names.resolve(setting.key, setting.value, command=self.command, params=set(self.params))
        if found is None:
            raise self._error(f"unknown {'option' if setting.typed else 'key'} {setting.spelled}", setting,
                              source, hint=_nearest(setting, self.names))
        if found.group:
            self._once(read, found.key, setting, source)
            read.precision[found.key] = setting.value
        elif found.param is not None and setting.key in trl_names.STRATEGIES:
            later[found.param] = (found.value, setting)
        elif found.param is not None:
            self._once(read, found.param, setting, source)
            read.flags[found.param] = self._convert(found.param, _Setting(setting.key, found.value, setting.spelled,
                                                                          setting.line), source)
        elif found.passed:
            try:
                read.trl_args[found.key] = trl_names.check_passed(found.key, setting.value, setting.spelled)
            except ValueError as error:
                raise self._error(f"bad value for {error}", setting, source) from None
        elif found.ignored:
            read.ignored.append(setting.spelled.strip("'") + (f" ({found.why})" if found.why else ""))

    def _once(self, read: _Settings, name: str, setting: _Setting, source: str) -> None:
        if name in read.set_by:
            raise self._error(f"{setting.spelled} sets the same flag as {read.set_by[name]}", setting, source,
                              hint="keep one of them")
        read.set_by[name] = setting.spelled

    def _convert(self, name: str, setting: _Setting, source: str):
        """Check and convert a value with the flag's own type, so YAML and flags accept the same values."""
        import typer

        param, value = self.params[name], setting.value
        if value is None:
            return None
        if name == "chat_template" and isinstance(value, str) and is_template_text(value):
            return value  # the template itself (open-r1 recipes write it inline), not a file name
        if isinstance(value, list) and not param.multiple and getattr(param, "nargs", 1) == 1:
            # A YAML list for a comma-separated flag (lora-targets: [q_proj, v_proj]).
            value = ",".join(str(item) for item in value)
        try:
            return param.process_value(self.ctx, value)
        except typer.BadParameter as error:
            raise self._error(f"bad value for {setting.spelled}: {error.message}", setting, source) from None

    @staticmethod
    def _error(message: str, setting: _Setting, source: str, hint: str | None = None) -> UserError:
        if setting.typed:  # the command line: no file to name
            return UserError(message, hint=hint)
        return UserError(message, path=source, line=setting.line, hint=hint)


def is_template_text(value: str) -> bool:
    """A chat template given as its text (Jinja: `{{ }}` or `{% %}`), not as a file name."""
    return "{{" in value or "{%" in value


def _yaml_settings(config_path) -> list[_Setting]:
    return [_Setting(str(key).replace("-", "_"), value, repr(str(key)), line)
            for key, (value, line) in load_yaml_mapping(config_path).items()]


def _command_line_settings(words: list[str]) -> list[_Setting]:
    """The TRL flags the command's parser left over (`ctx.args`), with their values as transformers' HfArgumentParser
    reads them: `--name value`, `--name=value`, a boolean bare or followed by true/false (`--no_name` for false), a
    list as the words up to the next flag. Anything else left over is an error."""
    from rtool.trl_names import BOOLEAN_TEXT, flag_kind

    settings, at = [], 0
    while at < len(words):
        word = words[at]
        at += 1
        if word.lower() in BOOLEAN_TEXT:
            raise UserError(f"unexpected argument {word!r}", hint="this rtool switch takes no value: give it for "
                                                                   "true, leave it out for false")
        if not word.startswith("-") or word in ("-", "--"):
            raise UserError(f"unexpected argument {word!r}", hint="each flag takes one value (a list: comma-"
                                                                   "separated, e.g. --lora-targets q_proj,v_proj)")
        name, equals, text = word.lstrip("-").partition("=")
        key = name.replace("-", "_")
        if equals:
            settings.append(_Setting(key, text, word))
            continue
        if key.startswith("no_") and flag_kind(key[3:]) == "bool":
            settings.append(_Setting(key[3:], False, word))
            continue
        kind = flag_kind(key)
        if kind == "bool":
            bare = at >= len(words) or words[at].lower() not in BOOLEAN_TEXT
            settings.append(_Setting(key, True if bare else words[at], word))
            at += 0 if bare else 1
        elif kind == "list":
            end = at
            while end < len(words) and not words[end].startswith("--"):
                end += 1
            settings.append(_Setting(key, words[at:end], word))
            at = end
        else:
            if at >= len(words):
                raise UserError(f"{word} needs a value")
            settings.append(_Setting(key, words[at], word))
            at += 1
    return settings


def _nearest(setting: _Setting, names: dict[str, str]) -> str:
    """`did you mean X?` when a known name is close (an rtool flag's, or one TRL, transformers or open-r1 knows;
    close enough that it is the same word misspelt, not a neighbour: `overwrite_output_dir` is not `output_dir`),
    then the valid keys."""
    import difflib

    from rtool.trl_names import known_names

    close = difflib.get_close_matches(setting.key, sorted(set(names) | known_names()), n=1, cutoff=0.8)
    valid = "valid: " + ", ".join(sorted({name.replace("_", "-") for name in names.values()}))
    if not close:
        return valid
    spelled = f"--{close[0]}" if setting.typed else repr(close[0])
    return f"did you mean {spelled}? {valid}"


def _warn_ignored(ignored: list[str], config_path, command: str) -> None:
    """One warning for every setting rtool has no use for, from the YAML and the command line together."""
    if not ignored:
        return
    from rtool.log import logger

    where = f"{config_path}: " if config_path is not None else ""
    logger.warning("%signoring %d TRL/transformers/open-r1 setting%s rtool %s has no use for: %s (its flags: rtool %s "
                   "--help)", where, len(ignored), "s" if len(ignored) > 1 else "", command, ", ".join(ignored),
                   command)


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

