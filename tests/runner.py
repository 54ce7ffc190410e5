"""A warm process for the tests that run ``gradtrace ...`` or ``python SCRIPT`` as a user would.

Each such run used to be a fresh interpreter that spent 2-9 s importing torch, matplotlib and
gradtrace before doing anything. Here one server process imports them once (no torch op and
no ``matplotlib.pyplot``, so a child starts in the state a fresh interpreter reaches after its
imports: no thread pool, no backend chosen) and forks a child per run. The child gets its own
argv, cwd, environment, stdin/stdout/stderr and exit status (a death by signal is ``-N``, as
with :mod:`subprocess`), and ends the way an interpreter ends (atexit handlers, flushed
streams), so a test asserts on it exactly what it asserted on a real subprocess.

What stays a real subprocess: runs whose point is a fresh interpreter (import-time checks,
the README's commands) and runs a test signals while they run.

    >>> r = runner.gradtrace("summary", "t.gtrace", cwd=tmp_path)   # a CompletedProcess
    >>> r = runner.python("demos/linreg.py", cwd=tmp_path)

The server is started on first use and stopped at exit. Run as ``python tests/runner.py
serve SOCKET`` it is the server itself.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

__all__ = ["gradtrace", "python", "run", "stop"]


# -- the client (in the pytest process) ----------------------------------------------------------
_lock = threading.Lock()
_server: dict = {}


def _start() -> str:
    """The server's socket path (starting it on first use)."""
    with _lock:
        if _server and _server["proc"].poll() is None:
            return _server["sock"]
        folder = tempfile.mkdtemp(prefix="gradtrace-warm-")
        sock = os.path.join(folder, "s")
        env = dict(os.environ, MPLBACKEND="Agg")
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve", sock],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
                                cwd=folder)
        line = proc.stdout.readline()  # after its imports
        if line.strip() != b"ready":
            proc.kill()
            raise RuntimeError(f"the warm test runner did not start: {line!r}")
        _server.update(proc=proc, sock=sock, folder=folder)
        return sock


def stop() -> None:
    """Stop the server (its running children finish on their own)."""
    with _lock:
        proc = _server.pop("proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        folder = _server.pop("folder", None)
        _server.clear()
        if folder:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


if __name__ != "__main__":
    atexit.register(stop)


def run(mode: str, args, *, cwd=None, env=None, timeout: float = 300, input=None,
        text: bool = True) -> subprocess.CompletedProcess:
    """Run ``gradtrace ARGS`` (mode "gradtrace") or ``python ARGS`` (mode "python", ARGS
    starting with the script) in a child of the warm server; a CompletedProcess, as
    ``subprocess.run(..., capture_output=True)`` gives. Past ``timeout`` seconds the child is
    killed and :class:`subprocess.TimeoutExpired` raised."""
    args = [str(a) for a in args]
    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="gradtrace-run-") as io_dir:
        out, err, inp = (os.path.join(io_dir, n) for n in ("stdout", "stderr", "stdin"))
        if input is not None:
            with open(inp, "wb") as f:
                f.write(input.encode() if isinstance(input, str) else input)
        request = {"mode": mode, "args": args, "cwd": os.path.abspath(cwd or os.getcwd()),
                   "env": env, "stdout": out, "stderr": err,
                   "stdin": inp if input is not None else os.devnull, "timeout": timeout}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(_start())
            s.sendall(json.dumps(request).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the warm test runner went away during a run")
                reply += chunk
        result = json.loads(reply)
        with open(out, "rb") as f:
            stdout = f.read()
        with open(err, "rb") as f:
            stderr = f.read()
    argv = ["gradtrace", *args] if mode == "gradtrace" else ["python", *args]
    if text:
        stdout, stderr = stdout.decode(), stderr.decode()
    if result["timed_out"]:
        raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
    return subprocess.CompletedProcess(argv, result["returncode"], stdout, stderr)


def gradtrace(*args, cwd=None, env=None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """``gradtrace ARGS`` (as ``python -m gradtrace ARGS`` runs it), forked warm."""
    return run("gradtrace", args, cwd=cwd, env=env, timeout=timeout, **kw)


def python(script, *args, cwd=None, env=None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS``, forked warm (for scripts that import torch: the comparisons
    of a script's own behaviour with its behaviour under ``gradtrace run``)."""
    return run("python", (script, *args), cwd=cwd, env=env, timeout=timeout, **kw)


# -- the server --------------------------------------------------------------------------------
def _warm_up() -> None:
    """Import what the commands import, without running a torch op or choosing a backend."""
    import importlib

    names = ["torch", "matplotlib", "gradtrace", "gradtrace.cli", "gradtrace.record.mplbackend",
             "matplotlib.animation", "matplotlib.backends.backend_agg", "matplotlib.figure",
             "matplotlib.patches"]
    for layer in ("analysis", "render"):  # every module of the layers the commands import lazily
        names += [f"gradtrace.{layer}" + ("" if p.stem == "__init__" else f".{p.stem}")
                  for p in sorted((ROOT / "gradtrace" / layer).glob("*.py"))]
    for name in names:
        importlib.import_module(name)
    assert "matplotlib.pyplot" not in sys.modules, "the warm runner must not choose a backend"
    # torch's own finalizers unregister its operator libraries from the dispatcher at exit
    # (0.3-0.5 s, in-process only); each child would pay them again for nothing.
    import weakref

    for f, info in list(weakref.finalize._registry.items()):  # type: ignore[attr-defined]
        if getattr(info.func, "__module__", "").startswith("torch."):
            f.atexit = False


def _serve(sock_path: str) -> None:
    _warm_up()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(64)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while not stop:
        try:
            readable, _, _ = select.select([listener], [], [], 0.5)
        except InterruptedError:
            continue
        _reap_supervisors()
        if not readable:
            continue
        conn, _ = listener.accept()
        if os.fork() == 0:  # the supervisor of one run
            listener.close()
            code = 0
            try:
                _supervise(conn)
            except BaseException:
                code = 1
            os._exit(code)
        conn.close()
    listener.close()


def _reap_supervisors() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _supervise(conn: socket.socket) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    req = json.loads(data)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _child(req)  # never returns
    deadline = time.monotonic() + req["timeout"]
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.005)
    reply = {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}
    conn.sendall(json.dumps(reply).encode() + b"\n")
    conn.close()


def _child(req: dict) -> None:
    """The run itself, in its own process: set up as a fresh interpreter would be, run, exit."""
    import io

    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        fds = [os.open(req["stdin"], os.O_RDONLY),
               os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
               os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)]
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        unbuffered = bool(req["env"].get("PYTHONUNBUFFERED"))
        enc = req["env"].get("PYTHONIOENCODING", "utf-8").split(":")[0] or "utf-8"
        sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=enc)
        sys.stdout = sys.__stdout__ = io.TextIOWrapper(
            io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding=enc,
            write_through=unbuffered)
        sys.stderr = sys.__stderr__ = io.TextIOWrapper(
            io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding=enc,
            errors="backslashreplace", line_buffering=True, write_through=unbuffered)
        code = _main(req["mode"], req["args"])
    except SystemExit as e:
        code = _exit_status(e)
    except KeyboardInterrupt:
        _show(sys.exc_info()[1])
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as python dies of an unhandled Ctrl-C
        code = 130
    except BaseException as e:
        _show(e)
        code = 1
    try:
        _finish()
    finally:
        os._exit(code)


def _main(mode: str, args: list[str]) -> int:
    if mode == "gradtrace":
        sys.argv = [str(ROOT / "gradtrace" / "__main__.py"), *args]
        sys.path[0] = os.getcwd()  # as `python -m` sets it
        from gradtrace.cli import main

        main(args)
        return 0
    import types

    script, *rest = args
    path = os.path.abspath(script)
    sys.argv = [script, *rest]
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    import builtins
    import importlib.machinery

    main = types.ModuleType("__main__")  # as python makes it for `python SCRIPT`
    main.__dict__.update(__builtins__=builtins, __annotations__={}, __file__=path,
                         __cached__=None, __package__=None, __spec__=None,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", path))
    sys.modules["__main__"] = main
    exec(code, main.__dict__)
    return 0


def _exit_status(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    print(e.code, file=sys.stderr)
    return 1


def _show(e: BaseException) -> None:
    """The traceback python prints, without this module's frames."""
    import traceback

    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb)


def _finish() -> None:
    """What an interpreter does on its way out: non-daemon threads, atexit, flushed streams."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except BaseException:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve(sys.argv[2])
    else:
        sys.exit("usage: python tests/runner.py serve SOCKET")
