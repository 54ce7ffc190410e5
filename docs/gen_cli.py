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
  small steps, stay whole), or in a sixteenth of it once a parameter is too large for its
  values to be kept (over `--max-numel` elements: an MLP's 784x256 weight; such a step holds
  mostly statistics and costs about as much again as the step itself); then steps spaced ever wider (16, 32, 64 ... apart, a quarter
  of the budget); and from a step where something happens (a non-finite loss or gradient,
  a loss jump, a zeroing or accumulation pattern not seen before) on, every step while the
  rest lasts. A step is chosen as it begins, so the step where something happened, and the
  one before it, are in full only when they had been chosen already. The steps in between
  run without the recording mode (about as fast as plain python). `--full` records every
  step in full; `--every` and `--steps` limit which steps may be. The run ends with one
  line saying what was kept, when it is not everything:
  `gradtrace: kept 1,034 of 30,000 steps in full (the first 832, 202 spaced) within the 32 MB
  budget; every step has its loss and norms; --budget SIZE (budget= in gradtrace.trace)
  keeps more, --full all`. `gradtrace check` decides what the scalars can tell (a
  forgotten `zero_grad()`, the first non-finite value) from every step, and runs the
  per-step checks on at most `--max-steps` (1000) of the steps in full: the first, the
  last, those the scalars point at (a non-finite value, a forgotten `zero_grad()`, a loss
  jump, a new zeroing / accumulation pattern) with the step before each, then evenly
  spaced ones; its verdict ends `(checked N of M steps: ...)`. `run`, `report`, `serve`
  and `animate` check the same way.
- **Durability.** Steps are committed in groups, at most 0.2 s after they end (by a small
  thread of gradtrace's when the script goes quiet): `kill -9` loses at most the last
  0.2 s of steps; Ctrl-C, SIGTERM, an exception, `sys.exit` and `os._exit` lose nothing
  (`os._exit(n)` ends the process at once: the trace is finished first, then nothing else
  is made). A step whose work is done (after `optimizer.step()`, or a `.grad` zeroed after
  the updates) is kept from then on even if the script stops there for long (an
  evaluation, a sleep).
"""


SETTINGS = """\
## Settings: pyproject.toml and GRADTRACE_* variables

Every option of every command can be set in the nearest `pyproject.toml` (from the current
folder upwards, the first that has a `[tool.gradtrace]` table) and by an environment
variable, as coverage.py reads `[tool.coverage]` and `COVERAGE_*`. Each command's section
below names the key and the variable of each of its options: the key is the option's long
name in the command's table, the variable `GRADTRACE_<COMMAND>_<KEY>` (dashes as
underscores).

```toml
[tool.gradtrace]
quiet = true                 # every command: only errors (GRADTRACE_QUIET=1)

[tool.gradtrace.run]
every = 10                   # gradtrace run --every 10   (GRADTRACE_RUN_EVERY=10)
values = "stats"             # --values stats             (GRADTRACE_RUN_VALUES=stats)
steps = "0:100"              # --steps 0:100              (GRADTRACE_RUN_STEPS=0:100)
animate = false              # --no-animate               (GRADTRACE_RUN_ANIMATE=0)

[tool.gradtrace.graph]
theme = "dark"               # gradtrace graph --theme dark (GRADTRACE_GRAPH_THEME=dark)
```

- **Precedence**, lowest first: the default, the file, the environment, the command line.
  `GRADTRACE_RUN_EVERY=3 gradtrace run --every 2 train.py` records every 2nd step, whatever
  the file says. From Python, `gradtrace.trace(...)` and `gradtrace.Config(...)` keyword
  arguments beat the file and the environment the same way (docs/api.md).
- **Values** are those of the command line, checked the same way: a flag is `true` /
  `false` in the file and `1` / `0` (or `true`, `yes`, `on`...) in a variable; a number is
  written without quotes; a choice or a path is a string; an option given several times
  (`animate -o`) is a list of strings in the file and words in a variable (quoted as in a
  shell). A variable set to the empty string counts as unset. `max_numel` is accepted for
  `max-numel`.
- **Errors**: a key gradtrace does not know, or a bad value, stops every command with one
  line that names the key and the file (or the variable), and exit code 2:
  `gradtrace: error: pyproject.toml: [tool.gradtrace.run] evry: not a setting gradtrace
  knows (did you mean every?); ...`. A `GRADTRACE_<COMMAND>_*` variable that is no
  setting is refused the same way; another `GRADTRACE_*` variable is ignored (`gradtrace
  debug env` says which).
- **`gradtrace debug config`** shows every setting, its value and where it came from;
  `gradtrace -v COMMAND` says, before the command runs, which of its options a setting
  gave.
- **Other variables.** `GRADTRACE_CONFIG=path/to/file.toml` reads that file's
  `[tool.gradtrace]` instead of the nearest pyproject.toml (`GRADTRACE_CONFIG=` empty:
  none); `GRADTRACE_DEBUG=1` shows the traceback of an internal error.
- **Not settings:** `run -m MODULE` (what to run, as SCRIPT), `--help` and `--version`.

The readers (`summary`, `check`, `graph`, `animate`, `report`, `debug trace`) take TRACE,
or without it read the most recent trace under `gradtrace-out/` (and the file that
`[tool.gradtrace.run] output` names), and say which on stderr. `--quiet` (`-q`) leaves
only errors on stderr, and `--verbose` (`-v`) says more; both go before or after the
command's name. Paths gradtrace prints for pasting are quoted for a shell
(`gradtrace summary 'gradtrace-out/my run/trace.gtrace'`).
"""


def _settings_table(path: list[str]) -> list[str]:
    """The key and the variable of each option of the command at ``path``."""
    from gradtrace.cli import cli
    from gradtrace.cli.settings import options_of

    section = tuple(path[1:])
    rows = [o for o in options_of(cli) if o.section == section]
    if not rows:
        return []
    table = "[tool.gradtrace" + "".join(f".{w}" for w in section) + "]"
    command = cli
    for word in section:
        command = command.commands[word]  # type: ignore[attr-defined]
    flags = {p.name: "/".join(p.opts + p.secondary_opts) for p in command.params
             if isinstance(p, click.Option)}
    out = [f"Settings: the key in `{table}`, or the variable." + (
        " `quiet` and `verbose` are the same two settings for every command." if not section else ""),
        "", "| Option | Key | Variable |", "|---|---|---|"]
    for o in rows:
        flag = flags.get(o.name)
        shown = f"`{flag}`" if flag else "(none: file and variable only)"
        out.append(f"| {shown} | `{o.key}` | `{o.variable}` |")
    out.append("")
    return out


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
    lines.append(SETTINGS)
    for title, _, text in sections:
        lines.append(f"## {title}")
        lines.append("")
        lines.append("```text")
        lines.append(text.rstrip())
        lines.append("```")
        lines.append("")
        lines.extend(_settings_table(title.split()))
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
