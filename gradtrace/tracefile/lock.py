"""One run per trace file: an exclusive lock on ``<trace>.lock`` for as long as the run lasts.

The lock is an ``flock`` on the lock file, so it dies with the process: a lock file left by
a killed run does not block the next one. It is re-entrant within a process (`gradtrace run`
holds it around the whole run, the trace writer takes it again), and the lock file is
removed when the outermost holder lets go. Where ``fcntl`` is missing (Windows) runs are
not locked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import ModuleType

from ..errors import TraceFileError, TraceWriteError

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None

__all__ = ["TraceLock", "lock_path", "database_error"]

_MARK = b"gradtrace "  # the lock file's content starts with this


def lock_path(trace_path) -> Path:
    return Path(f"{trace_path}.lock")


class _Held:
    def __init__(self, fd: int | None, path: Path):
        self.fd = fd
        self.path = path
        self.count = 1
        self.pid = os.getpid()
        self.writing = False  # a TraceWriter of this process has the trace open
        self.made: list[Path] = []  # folders made for the lock file, deepest first


#: Locks this process holds, by the absolute path of their lock file.
_HELD: dict[str, _Held] = {}


class TraceLock:
    """``with TraceLock(path):`` -- raises :class:`TraceFileError` (one line, before anything
    is written) if another process holds the lock on ``path`` or the folder is unwritable.
    ``writer=True`` (the trace writer's) also refuses a second writer in this process."""

    def __init__(self, trace_path, *, writer: bool = False):
        self.trace = Path(trace_path)
        self.path = lock_path(trace_path)
        self.writer = writer
        self._key = os.path.abspath(self.path)
        self._mine = False

    def acquire(self) -> "TraceLock":
        if self._mine:
            return self
        held = _HELD.get(self._key)
        if held is not None and held.pid == os.getpid():
            if self.writer and held.writing:
                raise TraceFileError(self.trace, "is being written by another gradtrace.trace() "
                                                 "of this program; end that one first or choose "
                                                 "another path")
            held.count += 1
            held.writing = held.writing or self.writer
            self._mine = True
            return self
        made = []
        folder = self.trace.parent
        while not folder.exists() and folder != folder.parent:
            made.append(folder)
            folder = folder.parent
        try:
            self.trace.parent.mkdir(parents=True, exist_ok=True)
            fd = self._lock() if fcntl is not None else None
        except OSError as e:
            _remove_empty(made)
            raise TraceWriteError(self.trace, f"cannot write the trace file ({e.strerror or e}); "
                                             "choose another path with -o") from None
        except BaseException:
            _remove_empty(made)
            raise
        held = _HELD[self._key] = _Held(fd, Path(self._key))  # absolute: the run may chdir
        held.writing = self.writer
        held.made = made
        self._mine = True
        return self

    def _lock(self) -> int:
        assert fcntl is not None  # only called where fcntl exists
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read(fd)
                os.close(fd)
                pid = owner.split()[-1] if owner.startswith(_MARK) and owner.split() else b""
                who = f" (pid {pid.decode(errors='replace')})" if pid.isdigit() else ""
                raise TraceFileError(self.trace, f"another gradtrace run{who} is writing this "
                                                 "trace; wait for it to end or choose another "
                                                 "path with -o") from None
            except BaseException:
                os.close(fd)
                raise
            # The run that held it may have ended (and removed the file) between our open
            # and our flock: then we hold a lock on a name nobody sees. Lock the one there.
            try:
                st, now = os.fstat(fd), os.stat(self.path)
                same = (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = _read(fd)
        if owner and not owner.startswith(_MARK):
            os.close(fd)
            raise TraceFileError(self.path, "exists and is not a gradtrace lock file; move it "
                                            "away or choose another path with -o")
        with contextlib.suppress(OSError):  # the pid is a courtesy; the flock is the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, _MARK + f"run pid {os.getpid()}\n".encode(), 0)
        return fd

    def release(self) -> None:
        if not self._mine:
            return
        self._mine = False
        held = _HELD.get(self._key)
        if held is None:
            return
        held.count -= 1
        if self.writer:
            held.writing = False
        if held.count > 0:
            return
        del _HELD[self._key]
        if held.pid != os.getpid():
            return  # a forked child: the lock is its parent's
        if held.fd is not None:
            with contextlib.suppress(OSError):
                st, now = os.fstat(held.fd), os.stat(held.path)
                if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                    held.path.unlink()  # while still holding the lock: nobody else has it yet
            os.close(held.fd)
        _remove_empty(held.made)  # a run that stopped before writing leaves no empty folder

    @staticmethod
    def release_all() -> None:
        """Let go of every lock this process holds, whoever holds it (the process is about
        to end without unwinding: ``os._exit``); their lock files go too."""
        for key, held in list(_HELD.items()):
            held.count = 1
            lock = TraceLock.__new__(TraceLock)
            lock._key, lock._mine, lock.writer = key, True, held.writing
            lock.release()

    def __enter__(self) -> "TraceLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            return


def _read(fd: int) -> bytes:
    try:
        return os.pread(fd, 200, 0)
    except OSError:
        return b""


def database_error(path, e: Exception) -> TraceFileError:
    """The one line for an SQLite error met reading ``path``: a run that is still writing it
    (SQLite says "database is locked"), or a damaged file."""
    if "locked" in str(e):
        return TraceFileError(path, f"is being written by a gradtrace run that has not ended"
                                    f"{_writer(path)}; read it once that run ends")
    return TraceFileError(path, f"truncated or corrupt ({e}); record the run again")


def _writer(trace_path) -> str:
    """`` (pid N)`` of the run holding ``trace_path``'s lock, or nothing."""
    try:
        fd = os.open(lock_path(trace_path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return ""
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return ""  # nobody holds it: a lock file left behind
            except BlockingIOError:
                pass
        owner = _read(fd)
    finally:
        os.close(fd)
    pid = owner.split()[-1] if owner.startswith(_MARK) and owner.split() else b""
    return f" (pid {pid.decode(errors='replace')})" if pid.isdigit() else ""
