"""Every command's options, settable from ``[tool.gradtrace]`` and ``GRADTRACE_*``: one mechanism.

Nothing here names an option. The options are found by walking the click commands
(click's own introspection), so an option a command gains is a setting at once: its key
is its long name (``--max-numel`` -> ``max-numel``, in the command's table,
``[tool.gradtrace.run]``), its variable ``GRADTRACE_<COMMAND>_<KEY>``, and a value is read
by the option's own click type (so a bad value is refused as on the command line, with
the key and the file or variable named). The values land in click's ``default_map``, so
the command line beats them, and click remembers which parameters they filled.

An option marked ``not_a_setting`` (``-m MODULE``: what to run, not how) and click's own
``--help`` / ``--version`` are left out; ``--quiet`` and ``--verbose`` are the same key
(``quiet``, ``GRADTRACE_QUIET``) on every command.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import click

from ..config import Option, Settings, config_options
from ..errors import UsageError

__all__ = ["options_of", "gather", "key_of", "not_a_setting", "global_option", "is_setting",
           "iter_commands"]

_NOT_A_SETTING = "gradtrace_not_a_setting"
_GLOBAL = "gradtrace_global"


def not_a_setting(option: click.Option, why: str) -> click.Option:
    """Mark an option that the file and the environment do not set, saying why."""
    setattr(option, _NOT_A_SETTING, why)
    return option


def global_option(option: click.Option) -> click.Option:
    """Mark an option that every command has and that is one key at the top of the table."""
    setattr(option, _GLOBAL, True)
    return option


def is_setting(param: click.Parameter) -> bool:
    if not isinstance(param, click.Option) or getattr(param, _NOT_A_SETTING, None):
        return False
    return param.name not in ("help", "version")


def key_of(param: click.Option) -> str:
    """The option's key: its first long name without the dashes, else its parameter name."""
    for opt in param.opts:
        if opt.startswith("--"):
            return opt[2:]
    return (param.name or "").replace("_", "-")


def iter_commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """(command path, command) for every command under ``group``, ``group`` itself first."""
    yield path, group
    if isinstance(group, click.Group):
        ctx = click.Context(group)
        for name in sorted(group.list_commands(ctx)):
            sub = group.get_command(ctx, name)
            if sub is not None:
                yield from iter_commands(sub, (*path, name))


def options_of(group: click.Command) -> list[Option]:
    """Every setting of every command, in command order (the top level's first)."""
    found: dict[str, Option] = {}
    for path, command in iter_commands(group):
        ctx = click.Context(command)  # one per command: a context per option was most of the cost
        for param in command.params:
            if not isinstance(param, click.Option) or not is_setting(param):
                continue
            section = () if getattr(param, _GLOBAL, False) else path
            opt = Option(section, key_of(param), param.name or key_of(param), _reader(param),
                         help=(param.help or "").strip(), default=_default(ctx, param))
            found.setdefault(opt.dotted, opt)
    # A recording option of Config that `run` has no flag for (max-ops-per-step) is set in
    # run's table too: gradtrace.Config reads it there when `run` builds one.
    if "run" in {p[0] for p, _ in iter_commands(group) if p}:
        for opt in config_options():
            found.setdefault(opt.dotted, opt)
    return list(found.values())


def _default(ctx: click.Context, param: click.Option) -> Any:
    value = param.get_default(ctx, call=True)
    if value is getattr(click.core, "UNSET", None) or value == ():
        return None
    return value


def gather(group: click.Command, *, environ: Mapping[str, str] | None = None, cwd=None,
           strict: bool = True) -> Settings:
    """The file's and the environment's settings of every option of ``group``, checked."""
    return Settings.gather(options_of(group), environ=environ, cwd=cwd, strict=strict)


def _reader(param: click.Option):
    """``read(value, from_text)`` for one option: the TOML value must be of the option's
    kind (true/false for a flag, a number for a number, a list for a repeatable option);
    then the option's click type checks it as it checks the command line."""
    kind = param.type
    is_bool = param.is_flag or isinstance(kind, click.types.BoolParamType)
    if param.count:
        kind = click.INT

    def one(value: Any, from_text: bool) -> Any:
        if not from_text:
            if is_bool and not isinstance(value, bool):
                raise ValueError("not a boolean; write true or false")
            if isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)):
                number = (int,) if isinstance(kind, click.types.IntParamType) else (int, float)
                if isinstance(value, bool) or not isinstance(value, number):
                    raise ValueError("not a number; write it without quotes (e.g. 10)")
            elif not is_bool and not isinstance(value, str):
                raise ValueError("not a string; write it in quotes")
        try:
            if is_bool and param.is_flag and not isinstance(value, bool):
                return click.BOOL.convert(value, param, None)
            return kind.convert(value, param, None)
        except click.BadParameter as e:
            raise UsageError(e.message) from None

    def read(value: Any, from_text: bool) -> Any:
        if param.multiple or (param.nargs != 1 and param.nargs != 0):
            from ..config import read_strings

            if not from_text and isinstance(value, list):
                return tuple(one(v, False) for v in value)
            return tuple(one(v, True) for v in read_strings(value, from_text))
        return one(value, from_text)

    return read
