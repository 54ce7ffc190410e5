"""`gradtrace debug [sys|config|env|trace [TRACE]]`: what gradtrace sees, for a bug report."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
from importlib import metadata

import click

from ..config import CONFIG_VARIABLE, ENV_PREFIX, OTHER_VARIABLES, Settings, _toml
from ..errors import ConfigError, UsageError
from ..version import __version__
from .common import SETTINGS, load_trace, shown_path

__all__ = ["debug", "TOPICS"]

TOPICS = ("sys", "config", "env", "trace")

#: The distributions whose versions a bug report needs.
_PACKAGES = ("torch", "numpy", "matplotlib", "networkx", "click", "graphviz", "pygraphviz",
             "pillow")


@click.command()
@click.argument("topic", required=False, type=click.Choice(TOPICS))
@click.argument("trace_path", metavar="[TRACE]", required=False, type=click.Path(dir_okay=True))
@click.pass_context
def debug(ctx, topic, trace_path):
    """Show what gradtrace sees: versions, the graphviz engine and fonts found (sys), the
    effective settings and where each came from (config), the GRADTRACE_* variables (env),
    a trace's meta (trace [TRACE]; the most recent one without TRACE).

    Without a topic: sys, config and env. Each line is `name: value`, or `key = value  #
    source` for settings (the value as TOML writes it), under a `-- topic --` heading.
    Nothing is run or imported from a trace. A bad setting is shown here, and the command
    exits with 2, where every other command stops at it.
    """
    if trace_path is not None and topic != "trace":
        raise UsageError("TRACE goes with the trace topic: gradtrace debug trace [TRACE]")
    root = ctx.find_root()
    settings: Settings = root.meta[SETTINGS]
    error: ConfigError | None = root.meta.get("gradtrace.settings_error")
    topics = [topic] if topic else ["sys", "config", "env"]
    for i, name in enumerate(topics):
        if i:
            click.echo("")
        click.echo(f"-- {name} " + "-" * (60 - len(name)))
        for line in _SECTIONS[name](settings, error, trace_path):
            click.echo(line)
    if error is not None and ("config" in topics or "env" in topics):
        ctx.exit(error.exit_code)


def _sys(settings, error, trace_path) -> list[str]:
    lines = [f"gradtrace: {__version__} ({os.path.dirname(os.path.dirname(__file__))})",
             f"python: {platform.python_version()} ({sys.executable})",
             f"platform: {platform.platform()}"]
    for name in _PACKAGES:
        try:
            lines.append(f"{name}: {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name}: not installed")
    lines.extend(_engine_lines())
    lines.extend(_font_lines())
    return lines


def _engine_lines() -> list[str]:
    from ..render.graph import available_engine

    dot = shutil.which("dot")
    lines = [f"dot program: {dot if dot else 'not on PATH'}"]
    try:
        import pygraphviz

        bundled = getattr(pygraphviz, "__graphviz_version__", "?")
        lines.append(f"pygraphviz: {pygraphviz.__version__}, graphviz library {bundled}")
    except Exception as e:  # ImportError, or a wheel whose libraries fail to load
        lines.append(f"pygraphviz: not importable ({type(e).__name__}: {e})")
    lines.append(f"graph engine: {available_engine('auto')} (what --engine auto uses)")
    return lines


def _font_lines() -> list[str]:
    from matplotlib import font_manager, rcParams

    from ..render.text import fallback_fonts

    family = rcParams["font.family"]
    path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=True)
    lines = [f"font: {font_manager.FontProperties(fname=path).get_name()} ({path})"]
    cjk = fallback_fonts([ord("中"), ord("文")])
    lines.append(f"fallback fonts for CJK text: {', '.join(cjk) if cjk else 'none (shown as ?)'}")
    lines.append(f"fonts known to matplotlib: {len(font_manager.fontManager.ttflist)}")
    return lines


def _config(settings: Settings, error, trace_path) -> list[str]:
    lines = []
    if error is not None:
        lines.append(f"error: {error}")
    named = os.environ.get(CONFIG_VARIABLE)
    if settings.file is not None:
        why = f" (named by {CONFIG_VARIABLE})" if named else " (the nearest with [tool.gradtrace])"
        lines.append(f"file: {shown_path(settings.file)}{why}")
    else:
        lines.append("file: none" + (f" ({CONFIG_VARIABLE} is empty)" if named == "" else
                                     " (no pyproject.toml with [tool.gradtrace] here or above)"))
    rows = []
    order = {opt.section: i for i, opt in reversed(list(enumerate(settings.options)))}
    for opt in sorted(settings.options, key=lambda o: order[o.section]):
        s = settings.get(opt.dotted)
        value, source = (s.value, s.describe()) if s is not None else (opt.default, "default")
        shown = "(unset)" if value is None else _shown(value)
        rows.append((f"{opt.dotted} = {shown}", f"# {source}; {opt.variable}"))
    width = max((len(a) for a, _ in rows), default=0)
    lines.extend(f"{a:<{width}}  {b}" for a, b in rows)
    return lines


def _shown(value) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, tuple) and len(value) == 2 and all(v is None or isinstance(v, int) for v in value):
        value = f"{value[0]}:{'' if value[1] is None else value[1]}"  # a step range, as typed
    return _toml(value)


def _env(settings: Settings, error, trace_path) -> list[str]:
    by_variable = {opt.variable: opt for opt in settings.options}
    lines = []
    names = sorted(n for n in os.environ if n.startswith(ENV_PREFIX))
    for name in names:
        value = os.environ[name]
        if name in by_variable:
            what = by_variable[name].dotted + ("; empty, so unset" if value == "" else "")
        elif name in OTHER_VARIABLES:
            what = OTHER_VARIABLES[name]
        else:
            what = "not a gradtrace setting (ignored)"
        lines.append(f"{name}: {json.dumps(value)}  # {what}")
    if not names:
        lines.append(f"(no {ENV_PREFIX}* variable is set)")
    for name in ("RANK", "WORLD_SIZE", "MPLBACKEND", "CUDA_VISIBLE_DEVICES"):
        if name in os.environ:
            lines.append(f"{name}: {json.dumps(os.environ[name])}")
    return lines


def _trace(settings, error, trace_path) -> list[str]:
    from ..tracefile.ranks import RankedRun

    trace = load_trace(trace_path)
    traces = trace.traces.items() if isinstance(trace, RankedRun) else [(None, trace)]
    lines = []
    for rank, t in traces:
        prefix = "" if rank is None else f"rank {rank} "
        lines.append(f"{prefix}path: {shown_path(t.path)}")
        try:
            lines.append(f"{prefix}size: {os.path.getsize(t.path)} bytes")
        except OSError:
            pass
        info = t.info
        for f in dataclasses.fields(info):
            value = getattr(info, f.name)
            if isinstance(value, tuple):
                value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                         for v in value]
            lines.append(f"{prefix}{f.name}: {json.dumps(value, sort_keys=True, default=str)}")
        lines.append(f"{prefix}steps recorded: {len(t.step_rows())}")
    return lines


_SECTIONS = {"sys": _sys, "config": _config, "env": _env, "trace": _trace}
