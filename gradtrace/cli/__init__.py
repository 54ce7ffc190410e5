"""The command line: a thin click group; each command parses options and calls the library."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import GradtraceError

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
    # Further commands register here, one line each.


_register()


def main(argv=None) -> None:
    """Entry point: errors gradtrace can foresee are one line on stderr and exit code 2."""
    try:
        rv = cli.main(args=argv, prog_name="gradtrace", standalone_mode=False)
    except GradtraceError as e:
        click.echo(f"gradtrace: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("gradtrace: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
