"""One writer per run: `runs/.NAME.lock`, beside the run, held by the process writing it.

The lock is an operating-system file lock (fcntl.flock; msvcrt on Windows) on a file that
records the writer's PID, host and start time. The system drops the lock when its process
ends, however it ends (kill -9 included), so a lock file left behind by a killed process is
recognised as stale by construction, and the next writer takes it over. Where the file system
has no locks, the recorded PID is checked instead (alive on this host: held). A second live
writer gets RunLockedError naming the first one's PID; the lock file is removed on release.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path

from ..exceptions import RunLockedError

_HELD: dict[str, "RunLock"] = {}  # this process's locks, by lock-file path


def lock_path(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.lock"


class RunLock:
    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.path = lock_path(self.out)
        self.fd: int | None = None
        self._made: list[Path] = []

    def acquire(self) -> dict | None:
        """Take the lock, or raise RunLockedError. Returns what a stale lock file recorded
        (the killed writer), or None."""
        key = str(self.path.absolute())
        if key in _HELD:  # one process is one writer: a newer writer object takes over
            _HELD[key].release()
        self._made = _mkdirs(self.path.parent)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            got = _try_lock(fd)
            if got is None:  # no locks on this file system: trust a live recorded PID
                got = not _alive(_read(fd))
            if not got:
                holder = _read(fd)
                os.close(fd)
                self._remove_made()
                raise RunLockedError(str(self.out), holder.get("pid", "unknown"),
                                     holder.get("host", ""), holder.get("since", ""))
            try:  # the previous holder may have removed the file before letting go of it
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read(fd) or None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        self.fd = fd
        _HELD[key] = self
        return stale

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # before unlocking: a waiting writer re-checks the file
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None
        key = str(self.path.absolute())
        if _HELD.get(key) is self:
            del _HELD[key]
        self._remove_made()

    def _remove_made(self) -> None:
        """Remove the folders acquire() created for the lock, if they stayed empty."""
        for d in self._made:
            try:
                d.rmdir()
            except OSError:
                break
        self._made = []

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def holder_of(out: str | os.PathLike) -> dict | None:
    """What the live writer of `out` recorded (pid, host, since), or None when none holds it."""
    path = lock_path(Path(out))
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        got = _try_lock(fd)
        info = _read(fd)
        if got is None:
            got = not _alive(info)
        return None if got else info
    finally:
        os.close(fd)  # closing drops a lock taken just to look


def _mkdirs(folder: Path) -> list[Path]:
    made, p = [], Path(folder)
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return made


def _try_lock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this file system has no locks."""
    try:  # deferred on purpose: each platform has only one of these modules
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(info: dict) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host") != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
