"""Write docs/cli.md, the command-line reference, from the help texts of gradtrace's click commands.

    python docs/gen_cli.py            # regenerate docs/cli.md
    python docs/gen_cli.py --check    # exit 1 if docs/cli.md is out of date
    python docs/gen_cli.py -          # print to stdout instead

tests/test_docs.py runs the check, so the reference cannot drift from the code: after adding
or changing a command or option, run the first line and commit docs/cli.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

CLI_MD = Path(__file__).resolve().parent / "cli.md"

#: A fixed width, so the text does not depend on the terminal that runs this script.
WIDTH = 88

HEADER = """\
# Command-line reference

<!-- Generated from the click commands by `python docs/gen_cli.py`; do not edit by hand.
     tests/test_docs.py fails when this file is out of date. -->

Each section is what `gradtrace COMMAND --help` prints. gradtrace's own messages go to
stderr, prefixed `gradtrace:`; stdout belongs to the recorded script (for `run`) or to the
command's output (for `summary --json` and the like). Errors that a user can cause are one
line on stderr and exit code 2.
"""


def _help(command: click.Command, name: str, parent: click.Context | None) -> tuple[str, click.Context]:
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(command, info_name=name, parent=parent, **settings)
    return command.get_help(ctx), ctx


def _sections(command: click.Command, path: list[str], parent: click.Context | None) -> list[tuple[str, str, str]]:
    """(full command name, one-line summary, help text) for this command and its subcommands."""
    text, ctx = _help(command, path[-1], parent)
    out = [(" ".join(path), command.get_short_help_str(limit=200), text)]
    if isinstance(command, click.Group):
        for sub_name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                out.extend(_sections(sub, path + [sub_name], ctx))
    return out


def _anchor(title: str) -> str:
    return title.replace(" ", "-")


def generate() -> str:
    """The whole of docs/cli.md, as text."""
    from gradtrace.cli import cli

    sections = _sections(cli, ["gradtrace"], None)
    lines = [HEADER]
    lines.append("| Command | What it does |")
    lines.append("|---|---|")
    for title, short, _ in sections[1:]:
        lines.append(f"| [`{title}`](#{_anchor(title)}) | {short} |")
    lines.append("")
    for title, _, text in sections:
        lines.append(f"## {title}")
        lines.append("")
        lines.append("```text")
        lines.append(text.rstrip())
        lines.append("```")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = generate()
    if argv == ["-"]:
        sys.stdout.write(text)
        return 0
    if argv == ["--check"]:
        current = CLI_MD.read_text(encoding="utf-8") if CLI_MD.exists() else ""
        if current != text:
            print(f"{CLI_MD} is out of date; regenerate it with: python docs/gen_cli.py",
                  file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    CLI_MD.write_text(text, encoding="utf-8")
    print(f"wrote {CLI_MD}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
