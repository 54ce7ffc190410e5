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
command's output (for `summary --json` and the like). Every error is one line on stderr,
and the exit code says whose it is (see [Exit codes](#exit-codes)).
"""

EXIT_CODES = """\
## Exit codes

| Code | Meaning |
|---|---|
| 0 | Done: everything went well (for `check`: every check passed). |
| 1 | gradtrace could not do its job: an internal error (a bug, please report it), a full disk, an unwritable folder or output file, out of memory, a missing program (graphviz's `dot`, ffmpeg). |
| 2 | Usage or bad input: an unknown option, a missing script, a step that was not recorded, a file that is not a trace, a corrupt or newer trace. |
| 3 | `gradtrace check`: a gradient check failed; with `--strict`, also a finding (a forgotten `zero_grad()`, a non-finite value...). |
| 130 | Interrupted (Ctrl-C); `gradtrace run` instead dies by the signal, as python does (see below). |

`gradtrace run` is the exception: once the script has started, gradtrace exits with the
script's own exit code, as `python SCRIPT` would, and anything gradtrace could not do
afterwards (write the whole trace, a picture, the report) is one line on stderr. Before
the script starts (a missing script: 2; an unwritable trace folder: 1) the codes above
apply, except for `-m MODULE` naming a module python cannot run: 1, with python's own
message (`No module named MODULE`), as `python -m MODULE` exits.

### `gradtrace run` as `python`

- **Arguments.** gradtrace's options come before the script; everything after `SCRIPT`,
  or after `-m MODULE`, is the script's (`gradtrace run -m pkg.train --every 3` gives
  `--every 3` to `pkg.train`). An unknown option before the script is a usage error that
  names it (exit 2).
- **Signals.** On Ctrl-C (SIGINT) or SIGTERM the trace is saved with every finished step,
  then gradtrace dies by that same signal, as python does: a shell sees 130 or 143, a
  parent process a return code of -2 or -15. For SIGINT the script's traceback is printed
  and its `atexit` handlers run first, as under python; for SIGTERM neither, as under
  python.
- **Tracebacks.** An uncaught exception is shown as python shows it, through
  `sys.excepthook`, with the user's frames only: those of gradtrace (its dispatch mode
  inside a torch call), click and runpy are left out, wherever they sit. A `SyntaxError`
  in the script is file, line, caret and message, as python prints it; the exit code is 1.
  Two differences remain: under `-m`, python also shows its own `<frozen runpy>` frames,
  which gradtrace leaves out; and an exception raised inside an `nn.Module` call shows
  torch's `_call_impl`/`inner` frames, the path torch takes when module hooks (the
  recorder's) are installed.
- **Warnings** raised inside a torch op (torch's C++ warnings, such as copy-constructing
  with `torch.tensor(t)`) point at the user's line, as under python, not at gradtrace's
  dispatch mode; `-W` and `warnings.filterwarnings` filters apply to the user's module, and
  "once per location" means per user line, as under python.

### What a run keeps

- **Every step's scalars.** Whatever the options, each step keeps its loss and, per
  parameter, the gradient's norm, the value's norm, the update's norm and how the backward
  pass met its `.grad` (fresh, onto zeros, added onto an old gradient): curves and the
  zeroing / accumulation timeline are complete for a run of any length
  (`trace.scalars()`, the `scalars` table of [the trace format](trace-format.md)).
- **Steps in full, within `--budget`** (default 32 MB): every op, node, event and value
  for the first steps, while they fit in half the budget (the seed lessons, up to 3,000
  small steps, stay whole); then steps spaced ever wider (16, 32, 64 ... apart, a quarter
  of the budget); and from a step where something happens (a non-finite loss or gradient,
  a loss jump, a zeroing or accumulation pattern not seen before) on, every step while the
  rest lasts. A step is chosen as it begins, so the step where something happened, and the
  one before it, are in full only when they had been chosen already. The steps in between
  run without the recording mode (about as fast as plain python). `--full` records every
  step in full; `--every` and `--steps` limit which steps may be. The run ends with one
  line saying what was kept, when it is not everything:
  `gradtrace: kept 1,034 of 30,000 steps in full (the first 832, 202 spaced) within the 32 MB
  budget; every step has its loss and norms; --budget SIZE (budget= in gradtrace.trace)
  keeps more, --full all`. `gradtrace check` checks the steps in full and says how many of
  the run's it covered.
- **Durability.** Steps are committed in groups, at most 0.2 s after they end (by a small
  thread of gradtrace's when the script goes quiet): `kill -9` loses at most the last
  0.2 s of steps; Ctrl-C, SIGTERM, an exception and `sys.exit` lose nothing.
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
    lines.append(EXIT_CODES)
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
