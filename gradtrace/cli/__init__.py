"""The command line: a thin click group; each command parses options and calls the library."""

from __future__ import annotations

import errno
import os
import sys

import click

from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, GradtraceError
from ..version import __version__

__all__ = ["main", "cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradtrace")
def cli():
    """gradtrace: make PyTorch autograd visible.

    Record a training script with `gradtrace run SCRIPT`, then look at what autograd did
    with `gradtrace summary`, `check`, `graph`, `animate` and `report`.
    """


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
    # Further commands register here, one line each.


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

    try:
        rv = cli.main(args=argv, prog_name="gradtrace", standalone_mode=False)
    except ScriptKilled as e:  # `gradtrace run`: the script died by a signal, and so do we
        die_by(e.signum)
    except GradtraceError as e:
        click.echo(f"gradtrace: error: {e}", err=True)
        sys.exit(e.exit_code)
    except RecursionError:
        click.echo("gradtrace: error: the input nests too deeply to process (RecursionError); "
                   "if it is a trace file, it is damaged: record the run again", err=True)
        sys.exit(EXIT_USAGE)
    except MemoryError:
        click.echo("gradtrace: error: out of memory; free some memory, or record fewer values "
                   "(--values stats, --every N)", err=True)
        sys.exit(EXIT_FAILURE)
    except click.exceptions.Abort:
        click.echo("gradtrace: aborted", err=True)
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
            click.echo(f"gradtrace: error: {where}{e.strerror or e}; free some space or choose "
                       "another path", err=True)
            sys.exit(EXIT_FAILURE)
        where = _innermost(e)
        click.echo(f"gradtrace: error: internal error ({type(e).__name__}: "
                   f"{' '.join(str(e).split())[:200]}{where}); this is a gradtrace bug, please "
                   "report it (GRADTRACE_DEBUG=1 shows the traceback)", err=True)
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
