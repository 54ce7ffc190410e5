"""The one object that holds every option and its default, and the settings users bring:
``[tool.gradtrace]`` in the nearest pyproject.toml and ``GRADTRACE_*`` variables.

Precedence, lowest first: the defaults, the file, the environment, then what is given on
the command line or as a keyword argument. :class:`Settings` reads the file and the
environment once, checks every key and value against the options it is given (the
command line hands it every click option, :class:`Config` its recording fields), and
remembers where each value came from (``gradtrace debug config`` shows it). This module
is the ground floor: plain Python, no click, no torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shlex
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, UsageError

__all__ = ["Config", "parse_step_range", "parse_size", "DEFAULT_BUDGET", "CHECK_MAX_STEPS", "Option", "Settings", "Setting", "find_config_file",
           "ENV_PREFIX", "CONFIG_VARIABLE", "OTHER_VARIABLES", "config_options"]

#: Bytes of the trace the recording policy may spend on steps recorded in full.
DEFAULT_BUDGET = 32 << 20
#: Steps recorded in full that `gradtrace check` (and the check that `run`, `report`,
#: `serve` and `animate` make) reads at most (``CheckOptions.max_steps``; the Python API's
#: ``trace.check()`` reads every step unless told).
CHECK_MAX_STEPS = 1000

#: Every setting's variable starts with this.
ENV_PREFIX = "GRADTRACE_"
#: Names the file to read instead of the nearest pyproject.toml; empty: read none.
CONFIG_VARIABLE = "GRADTRACE_CONFIG"
#: gradtrace's variables that are not settings of an option (docs/cli.md lists them).
OTHER_VARIABLES = {
    CONFIG_VARIABLE: "the file to read settings from instead of the nearest pyproject.toml "
                     "(empty: none)",
    "GRADTRACE_DEBUG": "set: an internal error shows its traceback",
}
#: A pyproject.toml larger than this is refused rather than read (it is not one).
MAX_FILE_BYTES = 4 << 20


@dataclass(frozen=True)
class Option:
    """One option that the file and the environment can set.

    ``section`` is the command (``("run",)``; ``()`` for the options of every command,
    such as ``quiet``), ``key`` the option's long name (``max-numel``), ``name`` the name
    it is passed by (the click parameter, the Config field), ``read(value, from_text)``
    turns a value from the file (``from_text=False``: a TOML value) or the environment
    (``True``: a string) into the option's value, raising ``ValueError`` or
    :class:`UsageError` with what is wrong."""

    section: tuple[str, ...]
    key: str
    name: str
    read: Callable[[Any, bool], Any]
    help: str = ""
    #: The value when nothing sets it (None: no value, the command decides).
    default: Any = None

    @property
    def dotted(self) -> str:
        """``run.every``: the name in ``gradtrace debug config``."""
        return ".".join((*self.section, self.key))

    @property
    def table(self) -> str:
        """``[tool.gradtrace.run]``: the table of the file that holds it."""
        return "[tool.gradtrace" + "".join(f".{s}" for s in self.section) + "]"

    @property
    def variable(self) -> str:
        """``GRADTRACE_RUN_EVERY``."""
        return ENV_PREFIX + "_".join(_env_word(w) for w in (*self.section, self.key))


def _env_word(word: str) -> str:
    return word.upper().replace("-", "_")


def _norm(key: str) -> str:
    """``max_numel`` and ``max-numel`` are the same key."""
    return key.replace("_", "-")


@dataclass(frozen=True)
class Setting:
    """A value set by the file or the environment: ``source`` is ``"file"`` or ``"env"``,
    ``where`` the file's path or the variable's name."""

    option: Option
    value: Any
    source: str
    where: str

    def describe(self) -> str:
        """Where it came from, as ``gradtrace debug config`` says it."""
        if self.source == "env":
            return self.where
        return f"{self.where} {self.option.table}"


def find_config_file(cwd: str | os.PathLike | None = None,
                     environ: Mapping[str, str] | None = None) -> Path | None:
    """The file the settings come from: ``GRADTRACE_CONFIG`` when set (empty: none),
    else the nearest pyproject.toml, from ``cwd`` upwards, that has a ``[tool.gradtrace]``
    table."""
    env = os.environ if environ is None else environ
    named = env.get(CONFIG_VARIABLE)
    if named is not None:
        if named == "":
            return None
        path = Path(named)
        if not path.is_file():
            raise ConfigError(CONFIG_VARIABLE, named, "no such file; name a pyproject.toml, or set "
                              f"{CONFIG_VARIABLE}= (empty) to read none")
        return path
    here = Path(os.getcwd() if cwd is None else cwd).absolute()
    for folder in (here, *here.parents):
        path = folder / "pyproject.toml"
        try:
            if path.is_file() and _table(path) is not None:
                return path
        except PermissionError:
            continue
    return None


def _shown(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        rel = str(path)
    return rel if not rel.startswith("../../") else str(path)


def _table(path: Path) -> dict | None:
    """The ``[tool.gradtrace]`` table of a TOML file; None when it has none."""
    where = _shown(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(where, "reading it", e.strerror or str(e)) from None
    if b"gradtrace" not in data:
        return None  # cheap, and a broken pyproject.toml that says nothing of us is not ours
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(where, "size", f"over {MAX_FILE_BYTES >> 20} MiB, too large for a "
                          "pyproject.toml; point GRADTRACE_CONFIG at the right file")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(where, "encoding", "not UTF-8 text; TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(where, "TOML", f"{e}; fix the file's syntax") from None
    tool = doc.get("tool")
    if not isinstance(tool, dict) or "gradtrace" not in tool:
        return None
    table = tool["gradtrace"]
    if not isinstance(table, dict):
        raise ConfigError(where, "[tool.gradtrace]", "must be a table of settings "
                          "(e.g. [tool.gradtrace.run] with every = 10)")
    return table


class Settings:
    """The settings of the file and the environment, checked against ``options`` and
    merged (the environment beats the file); see the module's docstring.

    ``strict``: a key of the file, or a ``GRADTRACE_<SECTION>_*`` variable, that is no
    option's is an error (the command line, which knows every option, is strict; the
    Python API, which reads only the recording options, is not)."""

    def __init__(self, file: Path | None, values: dict[str, Setting], unknown_env: list[str],
                 options: list[Option]):
        self.file = file
        self.values = values
        #: ``GRADTRACE_*`` variables that are neither settings nor gradtrace's others.
        self.unknown_env = unknown_env
        self.options = options

    @classmethod
    def gather(cls, options: Iterable[Option], *, environ: Mapping[str, str] | None = None,
               cwd: str | os.PathLike | None = None, strict: bool = True) -> "Settings":
        options = list(options)
        env = os.environ if environ is None else environ
        by_section: dict[tuple[str, ...], dict[str, Option]] = {}
        for opt in options:
            by_section.setdefault(opt.section, {})[_norm(opt.key)] = opt
        sections = {s[:i] for s in by_section for i in range(len(s) + 1)}
        file = find_config_file(cwd, env)
        values: dict[str, Setting] = {}
        if file is not None:
            table = _table(file)
            if table is not None:
                _read_table(table, (), _shown(file), by_section, sections, strict, values)
        unknown: list[str] = []
        variables = {opt.variable: opt for opt in options}
        prefixes = sorted((ENV_PREFIX + "_".join(_env_word(w) for w in s) + "_", s)
                          for s in sections if s)
        for name in sorted(env):
            if not name.startswith(ENV_PREFIX):
                continue
            text = env[name]
            setting = variables.get(name)
            if setting is None:
                if name in OTHER_VARIABLES:
                    continue
                section = [s for p, s in prefixes if name.startswith(p)]
                if strict and section:
                    near = difflib.get_close_matches(name, list(variables), n=1)
                    hint = f" (did you mean {near[0]}?)" if near else ""
                    raise ConfigError(name, "environment variable",
                                      f"not a gradtrace setting{hint}; `gradtrace debug env` "
                                      "lists them")
                unknown.append(name)
                continue
            if text == "":
                continue  # set empty: as if unset, so that CI can clear one
            values[setting.dotted] = Setting(setting, _convert(setting, text, True, name,
                                                               setting.dotted), "env", name)
        return cls(file, values, unknown, options)

    def get(self, dotted: str) -> Setting | None:
        return self.values.get(dotted)

    def default_map(self) -> dict[str, Any]:
        """click's ``default_map``: ``{"run": {"every": 3}, "quiet": True}``."""
        out: dict[str, Any] = {}
        for s in self.values.values():
            table = out
            for word in s.option.section:
                table = table.setdefault(word, {})
            table[s.option.name] = s.value
        return out


def _read_table(table: dict, section: tuple[str, ...], where: str,
                by_section: dict[tuple[str, ...], dict[str, Option]], sections: set,
                strict: bool, values: dict[str, Setting]) -> None:
    known = by_section.get(section, {})
    seen: dict[str, str] = {}
    head = "[tool.gradtrace" + "".join(f".{s}" for s in section) + "]"
    for raw_key, value in table.items():
        key = _norm(raw_key)
        if key in seen:
            raise ConfigError(where, f"{head} {raw_key}", f"set twice (also as {seen[key]}); keep one")
        seen[key] = raw_key
        sub = (*section, key)
        if sub in sections and isinstance(value, dict):
            _read_table(value, sub, where, by_section, sections, strict, values)
            continue
        opt = known.get(key)
        if opt is None:
            if not strict:
                continue
            names = sorted({*known, *(s[len(section)] for s in sections if len(s) == len(section) + 1
                                      and s[:len(section)] == section)})
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            what = "a command" if isinstance(value, dict) else "a setting"
            raise ConfigError(where, f"{head} {raw_key}",
                              f"not {what} gradtrace knows{hint}; the keys here are: "
                              f"{', '.join(names)}")
        values[opt.dotted] = Setting(opt, _convert(opt, value, False, where, f"{head} {raw_key}"),
                                     "file", where)


def _convert(opt: Option, value: Any, from_text: bool, where: str, key: str) -> Any:
    try:
        return opt.read(value, from_text)
    except (ValueError, TypeError, UsageError) as e:
        shown = repr(value) if from_text else _toml(value)
        raise ConfigError(where, key, f"{shown}: {' '.join(str(e).split())}") from None


def _toml(value: Any) -> str:
    """A value as TOML writes it (``true``, ``3``, ``"stats"``, ``["a", "b"]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- readers: a TOML value or a variable's text -> an option's value -----------------------
_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n"}


def read_bool(value: Any, from_text: bool) -> bool:
    if from_text:
        t = str(value).strip().lower()
        if t in _TRUE or t in _FALSE:
            return t in _TRUE
        raise ValueError("not a boolean; use 1 or 0 (true, false, yes, no, on, off)")
    if not isinstance(value, bool):
        raise ValueError("not a boolean; write true or false")
    return value


def read_int(value: Any, from_text: bool) -> int:
    if from_text:
        try:
            return int(str(value).strip(), 10)
        except ValueError:
            raise ValueError("not a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not a whole number; write it without quotes (e.g. 10)")
    return value


def read_float(value: Any, from_text: bool) -> float:
    if from_text:
        try:
            return float(str(value).strip())
        except ValueError:
            raise ValueError("not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a number; write it without quotes (e.g. 2.5)")
    return float(value)


def read_str(value: Any, from_text: bool) -> str:
    if not from_text and not isinstance(value, str):
        raise ValueError("not a string; write it in quotes")
    return str(value)


def read_strings(value: Any, from_text: bool) -> tuple[str, ...]:
    """Several values: a TOML list of strings, or a variable's words (quoted as in a shell)."""
    if from_text:
        return tuple(shlex.split(str(value)))
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('not a list of strings; write e.g. ["a.gif", "a.html"]')
    return tuple(value)


def _read_path(value: Any, from_text: bool) -> Path:
    return Path(read_str(value, from_text))


def _read_steps(value: Any, from_text: bool) -> tuple[int, int | None] | None:
    return parse_step_range(read_str(value, from_text))


def _setting(default: Any, *, key: str | None = None,
             read: Callable[[Any, bool], Any] | None = None) -> Any:
    """A Config field that ``[tool.gradtrace.run]`` and ``GRADTRACE_RUN_*`` can set:
    ``key`` when its name there differs from the field's, ``read`` when the field's
    default does not say how to read it."""
    return field(default=default, metadata={"key": key, "read": read})


@dataclass(frozen=True)
class Config:
    """Every option of a recording; the CLI and the Python API both build one of these.

    A field not given as a keyword argument is read from ``[tool.gradtrace.run]`` and
    the ``GRADTRACE_RUN_*`` variables (the keys of `gradtrace run`'s options), else it has
    its default: ``Config(every=2)`` beats ``every = 5`` in the file and
    ``GRADTRACE_RUN_EVERY=3``. ``sources`` says where each field's value came from.

    - ``output``: the trace file; ``None`` keeps the trace in memory only.
    - ``values``: ``"full"`` keeps full tensor values up to ``max_value_numel`` elements
      (summary statistics always); ``"stats"`` keeps statistics only.
    - ``max_value_numel``: the largest tensor (in elements) whose full value is kept.
      The default keeps every tensor of the seed lessons whole.
    - ``every``: record every N-th step (1 = all). Steps in between run without any
      recording mode installed, so they cost next to nothing.
    - ``step_range``: ``(first, stop)`` step indices to record, ``stop`` exclusive or None.
    - ``max_ops_per_step``: ops beyond this in one step are counted, not recorded, so that
      a forward loop that never calls ``backward()`` cannot grow memory without bound.
    - ``full``: record every step in full, whatever the budget (``--full``).
    - ``budget``: bytes of the trace for the steps recorded in full (``--budget``). Every
      step keeps its scalars (loss, per-parameter norms, how each ``.grad`` was met);
      the recording policy records in full the first steps (half the budget; a sixteenth
      once a parameter is over ``max_value_numel``), then steps spaced ever wider (a
      quarter), and the steps after something happens (a non-finite value, a loss jump, a
      new zeroing / accumulation pattern) from there on (the rest).
      See docs/cli.md, "What a run keeps".
    - ``max_nodes_per_backward``: the grad_fn nodes of one backward pass that are recorded;
      the rest run unrecorded and are counted. It bounds how many nodes gradtrace holds
      from Python at once: deleting a chain of tens of thousands of nodes that have
      Python objects recurses in torch's C++ and overflows the stack.
    """

    output: Path | None = _setting(None, read=_read_path)
    values: str = _setting("full")
    max_value_numel: int = _setting(10_000, key="max-numel")
    every: int = _setting(1)
    step_range: tuple[int, int | None] | None = _setting(None, key="steps", read=_read_steps)
    max_ops_per_step: int = _setting(20_000)
    max_nodes_per_backward: int = _setting(20_000)
    full: bool = _setting(False)
    budget: int = _setting(DEFAULT_BUDGET, read=lambda v, from_text: parse_size(v) if isinstance(v, str) else v)

    def __init__(self, **options: Any):
        names = [f.name for f in fields(Config)]
        for name in options:
            if name not in names:
                raise TypeError(f"Config() got an unexpected keyword argument {name!r}")
        sources = {name: "keyword" for name in options}
        missing = [f for f in fields(Config) if f.name not in options]
        if missing:
            settings = Settings.gather(config_options(), strict=False)
            for f in missing:
                setting = settings.get(".".join(("run", _config_key(f))))
                if setting is None:
                    options[f.name] = f.default
                    sources[f.name] = "default"
                    continue
                try:  # each value on its own, so that an error names where it was set
                    Config(**{**{g.name: g.default for g in fields(Config)}, f.name: setting.value})
                except TypeError:  # text where the field's check compares numbers
                    raise ConfigError(setting.where, setting.option.dotted if setting.source == "env"
                                      else f"{setting.option.table} {setting.option.key}",
                                      f"{setting.value!r}: not a number") from None
                except UsageError as e:
                    raise ConfigError(setting.where, setting.option.dotted if setting.source == "env"
                                      else f"{setting.option.table} {setting.option.key}", str(e)) from None
                options[f.name] = setting.value
                sources[f.name] = setting.describe()
        for name in names:
            object.__setattr__(self, name, options[name])
        object.__setattr__(self, "_sources", sources)
        self.__post_init__()

    @property
    def sources(self) -> dict[str, str]:
        """Field -> where its value came from: ``keyword``, ``default``, a variable's name or
        ``pyproject.toml [tool.gradtrace.run]``."""
        return dict(getattr(self, "_sources", {}))

    def __post_init__(self):
        if isinstance(self.budget, str):
            object.__setattr__(self, "budget", parse_size(self.budget))
        if type(self.budget) is not int or self.budget < 0:
            raise UsageError(f"budget must be a number of bytes, 0 or more (e.g. 64MB), not "
                             f"{self.budget!r}")
        if self.values not in ("full", "stats"):
            raise UsageError(f"values must be 'full' or 'stats', not {self.values!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, int):
            raise UsageError(f"--every must be a whole number, not {self.every!r}")
        if self.every < 1:
            raise UsageError(f"--every must be 1 or more, not {self.every}")
        if self.max_nodes_per_backward < 1:
            raise UsageError("max_nodes_per_backward must be 1 or more")
        if self.max_value_numel < 0:
            raise UsageError("max_value_numel must be 0 or more")
        if self.output is not None and not isinstance(self.output, Path):
            object.__setattr__(self, "output", Path(self.output))

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    @property
    def keep_values(self) -> bool:
        return self.values == "full"

    @property
    def samples(self) -> bool:
        """True when some steps are skipped (every-N or a step range)."""
        return self.every != 1 or self.step_range is not None

    def records(self, step: int) -> bool:
        """Whether step ``step`` (0-based) is recorded."""
        if self.step_range is not None:
            first, stop = self.step_range
            if step < first or (stop is not None and step >= stop):
                return False
            return (step - first) % self.every == 0
        return step % self.every == 0


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """``"64MB"``, ``"1.5G"``, ``"500k"``, ``"1000000"`` -> bytes (units of 1024)."""
    t = str(text).strip().lower().replace(" ", "")
    num = t.rstrip("kmgib")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not value >= 0 or value == float("inf"):
        raise UsageError(f"budget {text!r} is not a size; use e.g. 64MB, 1GB or 500KB")
    return int(value * _UNITS[unit])


def parse_step_range(text: str | None) -> tuple[int, int | None] | None:
    """``"A:B"`` (B exclusive), ``"A:"`` or ``":B"`` -> a step range; ``None`` -> None."""
    if text is None or text == "":
        return None
    first, sep, stop = text.partition(":")
    try:
        if not sep:
            a = int(first)
            return (a, a + 1)
        a = int(first) if first else 0
        b = int(stop) if stop else None
    except ValueError:
        raise UsageError(f"step range {text!r} is not A:B with whole numbers (e.g. 0:10)") from None
    if a < 0 or (b is not None and b <= a):
        raise UsageError(f"step range {text!r} is empty or negative; use A:B with 0 <= A < B")
    return (a, b)


def _config_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or _norm(f.name)


def _config_reader(f: dataclasses.Field) -> Callable[[Any, bool], Any]:
    read = f.metadata.get("read")
    if read is not None:
        return read
    default = f.default
    if isinstance(default, bool):
        return read_bool
    if isinstance(default, (int, float)):
        return _read_number_or_text
    return read_str


def _read_number_or_text(value: Any, from_text: bool) -> Any:
    """A number field: a number, or text that the field's own check reads (``"64MB"``)."""
    if isinstance(value, bool):
        raise ValueError("not a number; write it without quotes (e.g. 10)")
    if isinstance(value, (int, float)):
        return value
    text = read_str(value, True).strip()
    try:
        return int(text, 10)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text  # Config's own check says whether the field takes it


def config_options() -> list[Option]:
    """The options of :class:`Config` as settings of ``[tool.gradtrace.run]``."""
    return [Option(("run",), _config_key(f), f.name, _config_reader(f), default=f.default)
            for f in fields(Config)]
