"""Recording sessions: the ``trace()`` context manager and running a script like ``python``."""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import sys
import traceback
import types
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Config
from ..errors import UsageError
from ..trace.store import Trace, TraceWriter
from .recorder import Recorder

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
        self.meta: dict[str, Any] = {}

    def __enter__(self) -> "trace":
        if self._writer is not None:
            raise UsageError("this trace() is already recording; make a new one for another run")
        meta = {"gradtrace_version": __version__, "script": None, "argv": [],
                "config": _config_json(self.config)}
        meta.update(self.meta)
        self._writer = TraceWriter(self.config.output, meta)
        self._recorder = Recorder(self.config, self._writer)
        self._recorder.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "completed"
        exit_code = None
        if exc_type is not None:
            if issubclass(exc_type, SystemExit):
                status, exit_code = "exited", _exit_code(exc)
            elif issubclass(exc_type, (KeyboardInterrupt, _Terminated)):
                status = "interrupted"
            else:
                status = "raised"
        self.finish(status, exit_code, None if exc is None else f"{exc_type.__name__}: {exc}")

    def finish(self, status: str, exit_code: int | None = None, error: str | None = None) -> None:
        if self._recorder is None or self._writer is None or self._trace is not None:
            return
        try:
            # An interrupt can land in the middle of recording a step: keep finished steps only.
            self._recorder.stop(keep_current_step=status != "interrupted")
        finally:
            rec = self._recorder
            self._writer.finish(status, exit_code, error, steps_seen=rec.step + 1,
                                ops_dropped=rec.ops_dropped_total, modules=rec.module_classes)
        self._trace = self._writer.reader()

    @property
    def recorder(self) -> Recorder | None:
        return self._recorder

    @property
    def totals(self) -> dict[str, int]:
        return dict(self._recorder.totals) if self._recorder else {}

    @property
    def result(self) -> Trace:
        if self._trace is None:
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


def _config_json(config: Config) -> dict[str, Any]:
    return {
        "output": str(config.output) if config.output else None,
        "values": config.values,
        "max_value_numel": config.max_value_numel,
        "every": config.every,
        "step_range": list(config.step_range) if config.step_range else None,
        "max_ops_per_step": config.max_ops_per_step,
    }


def _exit_code(exc: BaseException | None) -> int:
    code = getattr(exc, "code", None)
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


class _Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so the trace is saved."""


class RunResult:
    def __init__(self, exit_code: int, status: str, session: trace):
        self.exit_code = exit_code
        self.status = status
        self.session = session


def _print_user_traceback(exc: BaseException, keep) -> None:
    """Print the traceback from the first frame ``keep`` accepts (the user's script)."""
    tb = exc.__traceback__
    while tb is not None and not keep(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb if tb is not None else exc.__traceback__)


def run_script(config: Config, script: str | None, module: str | None, args: list[str],
               figure_dir: Path | None = None) -> RunResult:
    """Run a script (or ``-m module``) as ``python`` would, recording it.

    Returns the exit code python would have given: ``sys.exit(n)`` -> n, an exception -> 1
    (with the user's traceback, without gradtrace's frames), Ctrl-C -> 130, SIGTERM -> 143.
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
            code = compile(source, str(path.resolve()), "exec", dont_inherit=True)
        except SyntaxError:
            raise  # shown to the user as python would show it
        except OSError as e:
            raise UsageError(f"cannot read {script}: {e.strerror}") from None
        run_name = str(path.resolve())
    else:
        assert module is not None
        import importlib.util

        sys.path.insert(0, os.getcwd())
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        finally:
            sys.path.pop(0)
        if spec is None:
            raise UsageError(f"no module named {module!r}")
        run_name = spec.origin or module

    session = trace(config=config)
    session.meta = {"script": script if script is not None else f"-m {module}",
                    "argv": [script or module, *args]}

    old_argv, old_path0 = sys.argv, sys.path[0] if sys.path else None
    old_main = sys.modules.get("__main__")
    old_env = os.environ.get("MPLBACKEND")
    old_term = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    mpl = None

    exit_code, status = 0, "completed"
    session.__enter__()  # a trace file that cannot be written stops here, before the script runs
    recorder = session.recorder

    def on_signal(exc_type):
        def handler(signum, frame):
            if recorder.busy:
                recorder.pending_signal = exc_type  # raised as soon as the recorder is done
            else:
                raise exc_type()
        return handler

    old_int = signal.getsignal(signal.SIGINT) if _main_thread() else None
    try:
        if _main_thread():
            signal.signal(signal.SIGTERM, on_signal(_Terminated))
            if old_int is signal.default_int_handler:
                signal.signal(signal.SIGINT, on_signal(KeyboardInterrupt))
        if figure_dir is not None and "matplotlib.pyplot" not in sys.modules:
            from . import mplbackend as mpl

            mpl.FIGURE_DIR = figure_dir
            mpl.SAVED.clear()
            os.environ["MPLBACKEND"] = "module://gradtrace.record.mplbackend"
            if "matplotlib" in sys.modules:
                sys.modules["matplotlib"].rcParams["backend"] = "module://gradtrace.record.mplbackend"
        if script is not None:
            sys.argv = [script, *args]
            if sys.path:
                sys.path[0] = str(Path(script).resolve().parent)
            main = types.ModuleType("__main__")
            main.__file__ = run_name
            main.__builtins__ = __builtins__
            main.__loader__ = None
            main.__spec__ = None
            sys.modules["__main__"] = main
            try:
                exec(code, main.__dict__)
            except BaseException as e:
                session.__exit__(type(e), e, e.__traceback__)
                raise
            session.__exit__(None, None, None)
        else:
            sys.argv = [module, *args]
            if sys.path:
                sys.path[0] = os.getcwd()
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except BaseException as e:
                session.__exit__(type(e), e, e.__traceback__)
                raise
            session.__exit__(None, None, None)
    except SystemExit as e:
        exit_code, status = _exit_code(e), "exited"
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        exit_code, status = 130, "interrupted"
        print("KeyboardInterrupt", file=sys.stderr)
    except _Terminated:
        exit_code, status = 143, "interrupted"
    except BaseException as e:  # the user's exception: shown as theirs
        exit_code, status = 1, "raised"
        own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if script is not None:
            _print_user_traceback(e, lambda fn: fn == run_name)
        else:
            _print_user_traceback(e, lambda fn: not fn.startswith(own) and "runpy" not in fn)
    finally:
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
        if old_main is not None:
            sys.modules["__main__"] = old_main
        if old_env is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old_env
        if _main_thread() and old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if _main_thread() and old_int is not None:
            signal.signal(signal.SIGINT, old_int)
        session.finish("interrupted" if status == "interrupted" else status)
        if mpl is not None:
            with contextlib.suppress(Exception):
                mpl.save_open_figures()
    return RunResult(exit_code, status, session)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
