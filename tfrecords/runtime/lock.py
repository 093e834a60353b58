"""One run per directory at a time: the lock a binary takes on its ``--workdir`` or ``--out_dir``.

A second run that points at a directory in use is refused at once with one line naming the
holder (host, pid, since when), before it writes anything. The lock is ``DIR/.lock``, a small
JSON file naming its holder:

- On a local filesystem the lock is an ``fcntl.flock`` on that file. The operating system drops
  it when the holder's process ends in any way (exit, Ctrl-C, kill -9), so a lock left by a
  killed run is never in the way: the next run takes it over. NFS gives the same where its
  server supports locks (NFSv4 does).
- On ``gs://`` and other ``tf.io.gfile`` filesystems there are no locks, only files: the holder
  rewrites the file every ``HEARTBEAT_S`` seconds, and a file older than ``STALE_S`` seconds
  (its run lost: kill -9, a preempted machine), or written by a process of this host that is
  gone, is taken over. Two runs started within the same few seconds can still both start
  there (the storage has no atomic create through ``tf.io.gfile``); that is not guaranteed.

The holder removes the file when it ends, and the directory too if the run created it and left
it empty (so a refused run leaves nothing behind). A multi-worker run shares one directory by
design: only its chief takes the lock (:func:`is_chief`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from tfrecords.runtime import fileio
from tfrecords.runtime.errors import UsageError

LOCK_NAME = ".lock"
# The config fields that name a directory a run writes into (each binary's --workdir or --out_dir).
LOCKED_FIELDS = ("workdir", "out_dir")
HEARTBEAT_S = 30.0
STALE_S = 120.0
_HELD: set[str] = set()  # the directories this process holds (a pipeline's stage inside its own workdir)


class DirectoryInUse(UsageError):
    """Another run holds the directory's lock."""


def is_chief(strategy: str = "") -> bool:
    """Whether this process is the one that holds a run's locks: always, except in a multi-worker run
    (``strategy == "multi_worker"``), where ``TF_CONFIG`` names the chief (the task of type ``chief``,
    or worker 0)."""
    if strategy != "multi_worker":
        return True
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task") or {}
    kind = task.get("type") or "worker"
    return kind == "chief" or (kind == "worker" and int(task.get("index", 0)) == 0)


def locked_dirs(cfg: Any) -> list[str]:
    """The directories a binary's config writes into (:data:`LOCKED_FIELDS` that are set), or none
    when this process is not its run's chief."""
    if not is_chief(str(getattr(cfg, "strategy", "") or "")):
        return []
    return [d for d in (getattr(cfg, f, "") for f in LOCKED_FIELDS) if isinstance(d, str) and d]


def _holder(prog: str) -> dict:
    now = datetime.datetime.now(datetime.timezone.utc)
    return {"prog": prog, "host": socket.gethostname(), "pid": os.getpid(), "since": now.isoformat(timespec="seconds")}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another run"
    who = f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"
    return f"{holder.get('prog', 'a run')} ({who})"


def _refuse(directory: str, holder: dict | None) -> DirectoryInUse:
    return DirectoryInUse(
        f"{directory} is in use by {_describe(holder)}; wait for it to end, or choose another directory"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _LocalLock:
    """``fcntl.flock`` on ``DIR/.lock``: released by the operating system however the holder ends."""

    def __init__(self, directory: str, prog: str):
        import fcntl

        self.path = os.path.join(directory, LOCK_NAME)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    with open(self.path) as f:
                        holder = json.loads(f.read() or "null")
                except (OSError, ValueError):
                    holder = None
                os.close(fd)
                raise _refuse(directory, holder) from None
            # The previous holder may have removed the file between our open and our lock: then we
            # hold a lock on a file nobody else will open, and try again on the new one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder(prog)).encode())

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still locked, so no other run can hold the old file
        os.close(self.fd)


class _RemoteLock:
    """A holder file rewritten every :data:`HEARTBEAT_S` seconds, for filesystems without locks."""

    def __init__(self, directory: str, prog: str):
        self.path = fileio.join(directory, LOCK_NAME)
        old = fileio.read_json(self.path)
        if old is not None and not self._stale(old):
            raise _refuse(directory, old)
        self.holder = _holder(prog)
        self._write()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="workdir-lock", daemon=True)
        self._thread.start()

    @staticmethod
    def _stale(holder: dict) -> bool:
        if time.time() - float(holder.get("heartbeat", 0)) > STALE_S:
            return True
        return holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", 0)))

    def _write(self) -> None:
        fileio.write_json_atomic(self.path, {**self.holder, "heartbeat": time.time()})

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat only ages the file
                self._write()

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):
            fileio.gfile().remove(self.path)


def _exists(directory: str) -> bool:
    return fileio.exists(directory) if fileio.is_url(directory) else os.path.exists(directory)


def _makedirs(directory: str) -> None:
    fileio.makedirs(directory) if fileio.is_url(directory) else os.makedirs(directory, exist_ok=True)


def _remove_if_empty(directory: str) -> None:
    with contextlib.suppress(Exception):
        if not fileio.is_url(directory):
            os.rmdir(directory)  # only an empty directory
        elif not fileio.gfile().listdir(directory):
            fileio.gfile().rmtree(directory)


@contextlib.contextmanager
def hold(directories: Sequence[str], prog: str) -> Iterator[None]:
    """Holds the lock of each directory (creating it) while inside; raises :class:`DirectoryInUse`
    (one line) at once if another run holds one. On exit, directories this call created and the run
    left empty are removed again."""
    held: list[tuple[_LocalLock | _RemoteLock, str, bool]] = []
    try:
        for d in directories:
            key = fileio.abspath(d).rstrip("/")
            if key in _HELD:
                continue
            created = not _exists(d)
            try:
                _makedirs(d)
                lock = _RemoteLock(d, prog) if fileio.is_url(d) else _LocalLock(d, prog)
            except BaseException as e:
                if created:
                    _remove_if_empty(d)
                if isinstance(e, DirectoryInUse) or not isinstance(e, Exception):
                    raise
                # (the message tfrecords.writer gives for an output directory it cannot write)
                raise UsageError(f"cannot write to {d}: {getattr(e, 'message', None) or e}") from None
            _HELD.add(key)
            held.append((lock, key, created))
        yield
    finally:
        for lock, key, created in reversed(held):
            lock.release()
            _HELD.discard(key)
            if created:
                _remove_if_empty(key)
