"""Recording sessions: the ``trace()`` context manager and running a script like ``python``."""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import struct
import sys
import types
from pathlib import Path
from typing import Any, cast

from ..version import __version__
from ..config import Config
from ..errors import NoSuchModuleError, TraceFileError, UsageError
from ..tracefile.outputs import Outputs
from ..tracefile.ranks import RankInfo
from ..tracefile.lock import TraceLock
from ..tracefile.store import Trace, TraceWriter, is_trace
from .recorder import Recorder
from . import figures

__all__ = ["trace", "run_script", "RunResult"]


class trace:
    """Record what autograd does inside a ``with`` block.

    >>> with gradtrace.trace("run.gtrace") as t:      # path optional: memory only
    ...     train()
    >>> t.steps[0].ops, t.steps[0].backward, t.events

    After the block, ``t`` reads like a :class:`gradtrace.Trace` (steps, events, tensors,
    check(), animate()). Options are those of :class:`gradtrace.Config`.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, config: Config | None = None,
                 **options: Any):
        if config is None:
            config = Config(output=Path(path) if path is not None else None, **options)
        elif path is not None or options:
            config = config.replace(output=Path(path) if path is not None else config.output, **options)
        self.config = config
        self._writer: TraceWriter | None = None
        self._recorder: Recorder | None = None
        self._trace: Trace | None = None
        self._warnings: _WarningsAtUserLine | None = None
        self._finished = False
        self._ranks: RankInfo | None = None
        self._pid = os.getpid()
        self.meta: dict[str, Any] = {}
        #: Set when the trace file could not be written to the end (a full disk): what it keeps.
        self.fault: TraceFileError | None = None

    def __enter__(self) -> "trace":
        if self._writer is not None:
            raise UsageError("this trace() is already recording; make a new one for another run")
        meta: dict[str, Any] = {"gradtrace_version": __version__, "script": None, "argv": [],
                "config": _config_json(self.config),
                "policy": {"full": self.config.full, "budget": self.config.budget}}
        ranks = RankInfo.from_env()
        if ranks is not None:  # under torchrun: which rank of how many (the backend at the end)
            meta["distributed"] = ranks.as_meta()
        meta.update(self.meta)
        self._ranks = ranks
        self._pid = os.getpid()
        self._writer = TraceWriter(self.config.output, meta)
        self._recorder = Recorder(self.config, self._writer)
        self._recorder.start()
        self._warnings = _WarningsAtUserLine()
        self._warnings.install()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(*_outcome(exc_type, exc))
        if self.fault is not None and exc_type is None:
            raise self.fault  # the user's own exception, if any, matters more

    def finish(self, status: str, exit_code: int | None = None, error: str | None = None) -> None:
        """End the recording. A trace file that could not be written to the end does not
        raise here: :attr:`fault` says what it keeps (``__exit__`` raises it)."""
        if self._recorder is None or self._writer is None or self._finished:
            return
        if os.getpid() != self._pid:
            return  # a child forked inside the block (os.fork): the recording is its parent's
        self._finished = True
        try:
            if self._warnings is not None:
                self._warnings.remove()
            # An interrupt can land in the middle of recording a step: keep finished steps only.
            self._recorder.stop(keep_current_step=status != "interrupted")
        finally:
            rec = self._recorder
            more: dict[str, Any] = {}
            if self._ranks is not None:
                more["distributed"] = self._ranks.as_meta(rec.run.backend)
                if rec.run.ddp_layouts:
                    more["distributed"]["buckets"] = rec.run.ddp_layouts
            try:
                self._writer.finish(status, exit_code, error, steps_seen=rec.steps_seen,
                                    ops_dropped=rec.ops_dropped_total, modules=rec.module_classes,
                                    optimizers=rec.optimizers, kept=rec.run.policy.summary(),
                                    unrecorded=rec.run.unrecorded(), **more)
            except TraceFileError as e:
                self.fault = e
        try:
            self._trace = self._writer.reader()
        except TraceFileError as e:
            self.fault = self.fault or e

    @property
    def recorder(self) -> Recorder | None:
        return self._recorder

    @property
    def totals(self) -> dict[str, int]:
        return dict(self._recorder.totals) if self._recorder else {}

    @property
    def steps_seen(self) -> int:
        """How many steps the run began, recorded in full or not."""
        return self._recorder.steps_seen if self._recorder else 0

    @property
    def steps_kept(self) -> int:
        """How many steps the trace file keeps in full (an interrupted step written as it
        stood when its work was done counts too)."""
        return self._writer.n_kept if self._writer is not None else 0

    @property
    def result(self) -> Trace:
        if self._trace is None:
            if self.fault is not None:
                raise self.fault
            raise UsageError("the trace is still recording; read it after the `with` block ends")
        return self._trace

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.result, name)

    def __repr__(self) -> str:
        if self._trace is None:
            return "<gradtrace.trace (recording)>"
        return repr(self._trace)


class _WarningsAtUserLine:
    """While recording, a warning raised inside a torch op points at the user's line, as
    under python, instead of at the recorder's dispatch mode.

    Why it is needed: the mode calls each op from its own frame, so a warning the op
    raises (torch's C++ TORCH_WARN, a ``warnings.warn`` with stacklevel 1 or 2) is located
    by python in gradtrace. Python also *filters* it there, before anything is shown: by
    the recorder's module name (so ``-W``/``filterwarnings`` filters on the user's module
    miss it, and DeprecationWarning, shown by default in ``__main__``, is hidden) and with
    the recorder's ``__warningregistry__`` (so "once per location" means once per line of
    the recorder: a warning raised by two different lines of the script is shown once).

    What this does, without touching the recorder: an ``always`` filter for gradtrace's
    own modules (so nothing is decided, nor remembered, at the recorder's line) and a
    wrapper around ``warnings._showwarnmsg`` that sends a warning located in gradtrace
    again through ``warnings.warn_explicit`` at the innermost frame outside gradtrace,
    with that frame's module name, registry and globals, exactly where python would have
    located it. The user's filters, registries and ``showwarning`` (or
    ``catch_warnings(record=True)``) then see what they see under python. Both are taken
    out when the recording ends (a filter the script added stays). A warning from
    gradtrace's own code while recording would be re-located too (there is none).
    """

    _MODULES = r"gradtrace\."

    def __init__(self) -> None:
        self._entry: Any = None
        self._show: Any = None
        self._again = False

    def install(self) -> None:
        import warnings

        self._show = getattr(warnings, "_showwarnmsg", None)
        if self._show is None:  # not CPython's warnings module: leave it as it is
            return
        warnings.filterwarnings("always", module=self._MODULES)
        self._entry = warnings.filters[0]
        warnings._showwarnmsg = self._showwarnmsg  # type: ignore[attr-defined]

    def remove(self) -> None:
        import warnings

        if self._show is None:
            return
        if getattr(warnings, "_showwarnmsg", None) == self._showwarnmsg:
            warnings._showwarnmsg = self._show  # type: ignore[attr-defined]
        with contextlib.suppress(ValueError):  # the script may have reset the filters
            cast(list, warnings.filters).remove(self._entry)  # a list, typed a Sequence
        mutated = getattr(warnings, "_filters_mutated", None)
        if mutated is not None:
            mutated()  # registries filled under our filter are stale now
        self._show = None

    def _showwarnmsg(self, msg) -> None:
        import warnings

        frame = None if self._again else _where_python_puts(sys._getframe(1), msg.filename,
                                                            msg.lineno)
        if frame is None:
            self._show(msg)
            return
        g = frame.f_globals
        self._again = True  # (the warning sent again comes back here: shown as it is then)
        try:
            warnings.warn_explicit(msg.message, msg.category, frame.f_code.co_filename,
                                   frame.f_lineno, module=g.get("__name__", "<string>"),
                                   registry=g.setdefault("__warningregistry__", {}),
                                   module_globals=g, source=msg.source)
        finally:
            self._again = False


def _where_python_puts(top, filename: str, lineno: int):
    """The frame python would have located a warning in without gradtrace's frames, when the
    frames between where it was raised (``top``) and where it was located hold some of
    them; else None (the location stands). A warning raised N frames deep (``stacklevel``,
    or 1 for torch's C++ TORCH_WARN) is located N frames up from ``top``, the frames that
    recording inserted not counted."""
    n, f = 1, top
    while f is not None and (f.f_code.co_filename != filename or f.f_lineno != lineno):
        f, n = f.f_back, n + 1
    if f is None:
        return None
    frames = []
    g = top
    while g is not None:
        frames.append(g)
        g = g.f_back
    skip = set()
    for k, g in enumerate(frames):
        if g.f_code.co_filename.startswith(_OURS):
            skip.add(k)
        elif g.f_code.co_name == "handle_torch_function":
            skip.add(k)
            skip.add(k + 1)  # the function that handed itself over: it runs again inside
    if not any(k in skip for k in range(n)):
        return None  # nothing of gradtrace's on the way: as python would have it
    counted = 0
    for k, g in enumerate(frames):
        if k in skip:
            continue
        counted += 1
        if counted == n:
            return g
    return None


def _config_json(config: Config) -> dict[str, Any]:
    return {
        "output": str(config.output) if config.output else None,
        "values": config.values,
        "max_value_numel": config.max_value_numel,
        "every": config.every,
        "step_range": list(config.step_range) if config.step_range else None,
        "max_ops_per_step": config.max_ops_per_step,
        "max_nodes_per_backward": config.max_nodes_per_backward,
        "full": config.full,
        "budget": config.budget,
    }


def _outcome(exc_type, exc) -> tuple[str, int | None, str | None]:
    """(status, exit_code, error) of a block that ended with ``exc`` (or normally)."""
    if exc_type is None:
        return "completed", None, None
    error = f"{exc_type.__name__}: {exc}"
    if issubclass(exc_type, SystemExit):
        return "exited", _exit_code(exc), error
    if issubclass(exc_type, (KeyboardInterrupt, _Terminated)):
        return "interrupted", None, error
    return "raised", None, error


def _exit_code(exc: BaseException | None) -> int:
    """The exit status python ends with on ``SystemExit(code)``: None -> 0, a message -> 1,
    a number (``True`` is 1) as the C ``int`` python makes of it, as the system keeps it."""
    code = getattr(exc, "code", None)
    if code is None:
        return 0
    if not isinstance(code, int):
        return 1
    # python converts the number to a C long (-1 when it does not fit), keeps the C int of
    # that, and the system keeps the low byte (POSIX): sys.exit(2**40) exits 0, -1 exits 255.
    bits = 8 * struct.calcsize("l")
    n = int(code) if -(1 << (bits - 1)) <= code < 1 << (bits - 1) else -1
    n = (n + (1 << 31)) % (1 << 32) - (1 << 31)
    return n & 0xFF if os.name == "posix" else n


class _Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so the trace is saved."""


class RunResult:
    def __init__(self, exit_code: int, status: str, session: trace, signal: int | None = None,
                 forked: bool = False):
        self.exit_code = exit_code
        self.status = status
        self.session = session
        #: True in a child the script forked (``os.fork()``) that ended here (``sys.exit`` in
        #: the child): the trace is its parent's, so nothing of it is finished, said or made.
        self.forked = forked
        #: The signal that stopped the script (SIGINT, SIGTERM), or None. python would have
        #: died by it: `gradtrace run` does too, once the trace is saved (``exit_code`` is
        #: then the shell's 128 + signal).
        self.signal = signal

    @property
    def fault(self) -> TraceFileError | None:
        """Set when the trace file could not be written to the end; says what it keeps."""
        return self.session.fault


#: Where the code of the runner lives: gradtrace itself, click (the command line) and
#: runpy (``-m``). A frame of theirs is never the user's (the script's own file excepted).
_OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _ours(filename: str) -> bool:
    if filename.startswith(_OURS) or filename in ("<frozen runpy>", runpy.__file__):
        return True
    click = getattr(sys.modules.get("click"), "__file__", None)
    return click is not None and filename.startswith(os.path.dirname(click) + os.sep)


def _drop_our_frames(exc: BaseException, script: str | None) -> None:
    """Unlink from ``exc``'s traceback (and those of the exceptions chained to it) every
    frame of the runner (:func:`_ours`), wherever it sits: above the script (the runner
    that called it) or inside a torch call (the recorder's dispatch mode). What is left is
    the traceback python would have shown. A traceback with no frame of the user's is
    left whole (then the error is ours, and its frames say where)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        todo += [e.__cause__, e.__context__]
        tbs = []
        tb = e.__traceback__
        while tb is not None:
            tbs.append(tb)
            tb = tb.tb_next
        codes = [t.tb_frame.f_code for t in tbs]
        drop = {i for i, c in enumerate(codes) if c.co_filename != script and _ours(c.co_filename)}
        for i in sorted(drop):
            # A torch function written in python hands itself to the recorder's mode through
            # torch.overrides.handle_torch_function, and the mode calls it again: the first
            # call and the hand-over are the mode's doing (python shows the second call only).
            if i >= 2 and codes[i - 1].co_name == "handle_torch_function" and \
                    codes[i - 2] in codes[i:]:
                drop |= {i - 1, i - 2}
        kept = [t for i, t in enumerate(tbs) if i not in drop]
        if not kept:
            continue
        for a, b in zip(kept, kept[1:] + [None]):
            a.tb_next = b
        e.__traceback__ = kept[0]


def _print_user_traceback(exc: BaseException, script: str | None) -> None:
    """Show the script's uncaught exception as python would: only the user's frames,
    through ``sys.excepthook`` (which the script may have replaced)."""
    _drop_our_frames(exc, script)
    with contextlib.suppress(Exception):  # the script's own stderr: it may have closed it
        sys.stderr.flush()
    sys.excepthook(type(exc), exc, exc.__traceback__)


#: What a child forked from a running script must put back, one callable per run_script in
#: progress (see :func:`_after_fork_in_child`).
_IN_CHILD: list = []


def _after_fork_in_child() -> None:
    """A process the script forks (multiprocessing's fork workers, ``os.fork()``) is the
    script's, not gradtrace's: it gets back the signal handlers the script had (or else
    SIGTERM from ``Pool.terminate()`` raises gradtrace's own exception in each worker)."""
    for restore in _IN_CHILD:
        with contextlib.suppress(Exception):
            restore()


if hasattr(os, "register_at_fork"):  # once per process: a hook cannot be taken out again
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run_script(config: Config, script: str | None, module: str | None, args: list[str],
               outputs: Outputs | None = None, quiet: bool = False) -> RunResult:
    """Run a script (or ``-m module``) as ``python`` would, recording it.

    Returns the exit code python would have given: ``sys.exit(n)`` -> n as the process
    exits with it (``True`` -> 1, 256 -> 0, -1 -> 255), an exception -> 1 (with the user's traceback, without gradtrace's frames), Ctrl-C -> 130 and SIGTERM ->
    143 with ``RunResult.signal`` set (python dies by those: the caller should too);
    a trace file that could not be written to the end (a full disk) does not change it
    (``RunResult.fault`` says what the file keeps). With ``outputs`` (those of the trace),
    the outputs of an earlier run of the same trace are removed before the script starts
    and ``plt.show()`` saves the script's figures under their names.
    """
    if script is not None:
        path = Path(script)
        if not path.exists():
            raise UsageError(f"no such script: {script}")
        if path.is_dir():
            raise UsageError(f"{script} is a directory; pass a .py file (or -m for a module)")
        try:
            with open(path, "rb") as f:
                source = f.read()
            # python names the script by its absolute path, a symlink's own (sys.path[0] is
            # the folder of the file it points to)
            code = compile(source, os.path.abspath(path), "exec", dont_inherit=True)
        except SyntaxError:
            raise  # shown to the user as python would show it
        except OSError as e:
            raise UsageError(f"cannot read {script}: {e.strerror}") from None
        run_name = os.path.abspath(path)
    else:
        assert module is not None
        sys.path.insert(0, os.getcwd())
        try:
            spec = _module_spec(module)
        finally:
            sys.path.pop(0)
        run_name = spec.origin or module

    session = trace(config=config)
    session.meta = {"script": script if script is not None else f"-m {module}",
                    "argv": [script or module, *args]}

    old_argv, old_path0 = sys.argv, sys.path[0] if sys.path else None
    old_main = sys.modules.get("__main__")
    old_env = os.environ.get("MPLBACKEND")
    old_term = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    mpl: types.ModuleType | None = None

    exit_code, status = 0, "completed"
    killed_by: int | None = None
    replacing = config.output is not None and outputs is not None and is_trace(config.output)
    session.__enter__()  # a trace file that cannot be written stops here, before the script runs
    recorder = session.recorder
    assert recorder is not None  # __enter__ made it
    recorder.run.quiet = quiet  # --quiet: no notes at the end (what was kept, what ran unrecorded)
    if replacing:
        assert outputs is not None  # replacing implies it
        outputs.remove()  # the earlier run's: none of them may pass for this run's

    def on_signal(exc_type):
        def handler(signum, frame):
            if recorder.busy:
                recorder.pending_signal = exc_type  # raised as soon as the recorder is done
            else:
                raise exc_type()
        return handler

    old_int = signal.getsignal(signal.SIGINT) if _main_thread() else None
    ours: dict[int, tuple[Any, Any]] = {}  # signal -> (our handler, the one it replaced)

    def restore_in_child() -> None:
        for signum, (mine, old) in ours.items():
            if signal.getsignal(signum) is mine:  # not one the script set since
                signal.signal(signum, old)

    pid = os.getpid()
    _IN_CHILD.append(restore_in_child)
    real_exit = os._exit

    def os_exit(code):
        """``os._exit(n)`` ends the process at once, without unwinding: the trace is finished
        first (its last steps committed, how the run ended said), nothing else is made."""
        if os.getpid() == pid:
            with contextlib.suppress(BaseException):
                n = code & 0xFF if isinstance(code, int) and not isinstance(code, bool) else 1
                say = recorder.run.say  # (before finish: it lets go of the recorder's state)
                session.finish("exited", n)
                TraceLock.release_all()
                say(f"gradtrace: the script called os._exit({code!r}): the trace is saved; "
                    "nothing else was made (no check, graph or report)")
        real_exit(code)

    os._exit = os_exit
    try:
        if _main_thread():
            ours[signal.SIGTERM] = (on_signal(_Terminated), old_term)
            if old_int is signal.default_int_handler:
                ours[signal.SIGINT] = (on_signal(KeyboardInterrupt), old_int)
            for signum, (mine, _) in ours.items():
                signal.signal(signum, mine)
        if outputs is not None and "matplotlib.pyplot" not in sys.modules:
            # matplotlib loads the backend only if the script imports pyplot
            figures.start(outputs)
            mpl = figures
            os.environ["MPLBACKEND"] = figures.BACKEND
            if "matplotlib" in sys.modules:
                sys.modules["matplotlib"].rcParams["backend"] = figures.BACKEND
        if script is not None:
            sys.argv = [script, *args]
            if sys.path:
                sys.path[0] = str(Path(script).resolve().parent)
            sys.modules["__main__"] = _main_module(run_name)
            try:
                exec(code, sys.modules["__main__"].__dict__)
            except BaseException as e:
                session.finish(*_outcome(type(e), e))
                raise
            session.finish(*_outcome(None, None))
        else:
            assert module is not None  # one of script and module is given
            sys.argv = [module, *args]
            if sys.path:
                sys.path[0] = os.getcwd()
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except BaseException as e:
                session.finish(*_outcome(type(e), e))
                raise
            session.finish(*_outcome(None, None))
    except SystemExit as e:
        exit_code, status = _exit_code(e), "exited"
        if e.code is not None and not isinstance(e.code, int):
            with contextlib.suppress(Exception):  # python writes it to the script's stderr
                print(e.code, file=sys.stderr)
    except KeyboardInterrupt as e:  # python shows its traceback, then dies by SIGINT
        exit_code, status, killed_by = 128 + signal.SIGINT, "interrupted", signal.SIGINT
        _print_user_traceback(e, run_name)
    except _Terminated:  # python dies by SIGTERM at once, without a word
        exit_code, status, killed_by = 128 + signal.SIGTERM, "interrupted", signal.SIGTERM
    except BaseException as e:  # the user's exception: shown as theirs
        exit_code, status = 1, "raised"
        _print_user_traceback(e, run_name)
    finally:
        if os._exit is os_exit:
            os._exit = real_exit
        with contextlib.suppress(ValueError):
            _IN_CHILD.remove(restore_in_child)
        forked = os.getpid() != pid
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
        if old_main is not None:
            sys.modules["__main__"] = old_main
        if old_env is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old_env
        # A child the script forked has the script's handlers already (_after_fork_in_child),
        # and the trace, like the figures, is its parent's to finish.
        if not forked:
            if _main_thread() and old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            if _main_thread() and old_int is not None:
                signal.signal(signal.SIGINT, old_int)
            session.finish("interrupted" if status == "interrupted" else status)
            if mpl is not None:
                with contextlib.suppress(Exception):
                    mpl.save_open_figures()
    return RunResult(exit_code, status, session, killed_by, forked=forked)


def _main_module(filename: str) -> types.ModuleType:
    """A fresh ``__main__`` for the script at ``filename``, as ``python SCRIPT`` makes it:
    ``__builtins__`` the builtins module (not its dict), a ``SourceFileLoader`` (its
    ``get_filename()``, ``get_source()``), ``__cached__`` None and ``__annotations__`` {}."""
    import builtins
    import importlib.machinery

    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __annotations__={}, __file__=filename,
                         __cached__=None, __package__=None, __spec__=None,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", filename))
    return main


class _NoModule(Exception):
    """What runpy says when ``python -m`` cannot run a module."""


def _module_spec(module: str):
    """The spec of ``module`` as ``python -m`` finds it (a package runs its ``__main__``),
    or :class:`NoSuchModuleError` with python's own message (exit 1, as python)."""
    # runpy's lookup is the one python -m itself makes, so the messages are python's
    # (a package without __main__, a parent that does not import, a name ending in .py).
    details = getattr(runpy, "_get_module_details", None)
    if details is not None:
        try:
            return details(module, _NoModule)[1]
        except _NoModule as e:
            raise NoSuchModuleError(str(e)) from None
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as e:
        raise NoSuchModuleError(f"Error while finding module specification for {module!r} "
                                f"({type(e).__name__}: {e})") from None
    if spec is None:
        raise NoSuchModuleError(f"No module named {module}")
    return spec


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
