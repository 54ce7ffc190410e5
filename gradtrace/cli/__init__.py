"""The command line: a thin click group; each command parses options and calls the library."""

from __future__ import annotations

import errno
import functools
import os
import sys

import click

from ..config import ConfigError, Settings
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, GradtraceError
from ..version import __version__
from .common import SETTINGS, STDERR, VERBOSITY, detail, level, say, shown_path
from .settings import gather, global_option, options_of

__all__ = ["main", "cli"]

#: ``ctx.meta`` key: a bad setting, kept for `gradtrace debug` to show instead of stopping.
SETTINGS_ERROR = "gradtrace.settings_error"

_QUIET_HELP = "Print only errors: no info lines, no progress bars (stdout is unchanged)."
_VERBOSE_HELP = "Say more: where each setting came from, and what gradtrace chose."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradtrace")
@click.option("-q", "--quiet", is_flag=True, help=_QUIET_HELP)
@click.option("-v", "--verbose", is_flag=True, help=_VERBOSE_HELP)
@click.pass_context
def cli(ctx, quiet, verbose):
    """gradtrace: make PyTorch autograd visible.

    Record a training script with `gradtrace run SCRIPT`, then look at what autograd did
    with `gradtrace summary`, `check`, `graph`, `animate` and `report`; readers left
    without TRACE read the most recent trace under gradtrace-out/.

    Every option can be set in the nearest pyproject.toml, `[tool.gradtrace.COMMAND]`
    (e.g. `[tool.gradtrace.run]` with `every = 10`), or by a variable
    `GRADTRACE_COMMAND_OPTION` (`GRADTRACE_RUN_EVERY=10`); the environment beats the
    file and the command line beats both. `gradtrace debug config` shows the result.
    """
    try:
        settings = gather(cli)
    except ConfigError as e:
        if ctx.invoked_subcommand != "debug":
            raise
        ctx.meta[SETTINGS_ERROR] = e  # `gradtrace debug` shows it and exits with 2
        settings = Settings(None, {}, [], options_of(cli))
    ctx.meta[SETTINGS] = settings
    ctx.meta.setdefault(STDERR, sys.stderr)  # gradtrace's lines go there, whatever a script does
    ctx.default_map = settings.default_map()
    notes = ctx.meta.setdefault(VERBOSITY, [])
    for name in ("quiet", "verbose"):
        setting = settings.get(name)
        if setting is not None and setting.value:
            notes.append((2 if setting.source == "env" else 1, name))
    for name, given in (("quiet", quiet), ("verbose", verbose)):
        if given:
            notes.append((3, name))


def _note_verbosity(ctx: click.Context, param: click.Parameter, value) -> None:
    """A command's own --quiet / --verbose: it beats the settings and the group's flags."""
    if value:  # only the command line sets it: its setting is the group's, at the top level
        ctx.find_root().meta.setdefault(VERBOSITY, []).append((4, param.name))


def _instrument(command: click.Command) -> None:
    """What every command gets, whoever wrote it: --quiet and --verbose (one setting each
    for all commands), and under --verbose a line per setting the file or the environment
    gave it. Commands of a sub-group get it too."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _instrument(sub)
    names = {p.name for p in command.params}
    taken = {o for p in command.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
    for name, help_text in (("quiet", _QUIET_HELP), ("verbose", _VERBOSE_HELP)):
        if name not in names:
            short = [f"-{name[0]}"] if f"-{name[0]}" not in taken else []
            command.params.append(global_option(click.Option(
                [*short, f"--{name}"], is_flag=True, expose_value=False, callback=_note_verbosity,
                help=help_text)))
    callback = command.callback
    if callback is None or getattr(callback, "_gradtrace_instrumented", False):
        return

    @functools.wraps(callback)
    def invoke(*args, **kwargs):
        _announce_settings(click.get_current_context())
        return callback(*args, **kwargs)

    invoke._gradtrace_instrumented = True  # type: ignore[attr-defined]
    command.callback = invoke


def _announce_settings(ctx: click.Context) -> None:
    """Check --quiet against --verbose; under --verbose, where the settings come from."""
    if level() != "verbose":
        return
    settings: Settings | None = ctx.find_root().meta.get(SETTINGS)
    if settings is None:
        return
    file = settings.file
    detail(f"settings file: {shown_path(file)}" if file is not None else
           "settings file: none (no pyproject.toml with [tool.gradtrace] here or above)")
    path = tuple(ctx.command_path.split()[1:])
    for s in settings.values.values():
        if s.option.section == path and ctx.get_parameter_source(s.option.name) is \
                click.core.ParameterSource.DEFAULT_MAP:
            detail(f"{s.option.dotted} = {_shown_value(s.value)} (from {s.describe()})")


def _shown_value(value) -> str:
    from ..config import _toml

    return _toml(str(value) if hasattr(value, "__fspath__") else value)


def _register():
    from .run import run
    from .summary import summary

    cli.add_command(run)
    cli.add_command(summary)
    from .report import report

    cli.add_command(report)
    from .check import check

    cli.add_command(check)
    cli.add_command(__import__("gradtrace.cli.graph", fromlist=["graph"]).graph)
    cli.add_command(__import__("gradtrace.cli.animate", fromlist=["animate"]).animate)
    cli.add_command(__import__("gradtrace.cli.serve", fromlist=["serve"]).serve)
    cli.add_command(__import__("gradtrace.cli.debug", fromlist=["debug"]).debug)
    # Further commands register here, one line each.
    for command in cli.commands.values():
        _instrument(command)


_register()


def main(argv=None) -> None:
    """Entry point: every error is one line on stderr, and the exit code says whose it is.

    0 ok; 1 gradtrace could not do its job (a full disk, an unwritable output, out of
    memory, a missing program, a bug of ours); 2 usage or bad input (an unknown option, a
    missing script, a file that is not a trace or is corrupt); 3 a failed check. Each
    :class:`GradtraceError` carries its code (``exit_code``). A bug still ends in one
    line, with the traceback only when ``GRADTRACE_DEBUG`` is set, so a damaged file
    never shows a user our internals. `gradtrace run` exits with the script's own code."""
    from .run import ScriptKilled, die_by

    # gradtrace's own lines go to the stderr it started with: a script under `gradtrace run`
    # may have replaced sys.stderr (sys.stderr = sys.stdout) or closed it by now.
    stderr = sys.stderr
    try:
        rv = cli.main(args=argv, prog_name="gradtrace", standalone_mode=False)
    except ScriptKilled as e:  # `gradtrace run`: the script died by a signal, and so do we
        die_by(e.signum)
    except GradtraceError as e:
        say(f"gradtrace: error: {e}", stderr)
        sys.exit(e.exit_code)
    except RecursionError:
        say("gradtrace: error: the input nests too deeply to process (RecursionError); "
            "if it is a trace file, it is damaged: record the run again", stderr)
        sys.exit(EXIT_USAGE)
    except MemoryError:
        say("gradtrace: error: out of memory; free some memory, or record fewer values "
            "(--values stats, --every N)", stderr)
        sys.exit(EXIT_FAILURE)
    except click.exceptions.Abort:
        say("gradtrace: aborted", stderr)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        if os.environ.get("GRADTRACE_DEBUG"):
            raise
        if isinstance(e, OSError) and e.errno in _CANNOT_WRITE:
            where = f"{e.filename}: " if e.filename else ""
            say(f"gradtrace: error: {where}{e.strerror or e}; free some space or choose "
                "another path", stderr)
            sys.exit(EXIT_FAILURE)
        where = _innermost(e)
        say(f"gradtrace: error: internal error ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}{where}); this is a gradtrace bug, please "
            "report it (GRADTRACE_DEBUG=1 shows the traceback)", stderr)
        sys.exit(EXIT_FAILURE)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)


#: A full disk or a folder gradtrace may not write to: its failure, not a bug (exit 1).
_CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _innermost(e: BaseException) -> str:
    """`` at file.py:12`` for the innermost gradtrace frame of an exception."""
    tb, found = e.__traceback__, ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if "gradtrace" in code.co_filename:
            found = f" at {os.path.basename(code.co_filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found
