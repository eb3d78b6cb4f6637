"""One writer at a time: a lock file held for as long as a run writes.

A run holds the lock of its output folder and of its run history from
before it reads the previous run until it has switched to its own outputs,
so two runs started together can neither mix their files nor compare with a
run that is about to be replaced. The lock is the operating system's
(``flock`` on POSIX, ``msvcrt.locking`` on Windows), so it goes with the
process that holds it, even one killed outright: there is never a stale lock
to delete by hand. A second writer stops at once and says who holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from engine.errors import BusyError

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(descriptor: int) -> bool:
        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(descriptor: int) -> bool:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@contextlib.contextmanager
def held(lock_file: Path, what: str, advice: str) -> Iterator[None]:
    """Hold ``lock_file`` for the block, or raise :class:`BusyError` at once.

    ``what`` names what is locked in the message (``the output folder out``),
    ``advice`` what to do instead (``wait for it, or give another --out``).
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        if not _try_lock(descriptor):
            raise BusyError(f"another run ({_holder(descriptor)}) is using {what}; {advice}")
        os.ftruncate(descriptor, 0)
        holder = {"pid": os.getpid(), "started_at": dt.datetime.now().isoformat("T", "seconds")}
        os.write(descriptor, json.dumps(holder).encode())
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _holder(descriptor: int) -> str:
    """'pid N, started at HH:MM' from the lock file, as its holder wrote it."""
    try:
        os.lseek(descriptor, 0, os.SEEK_SET)
        data = json.loads(os.read(descriptor, 200) or b"{}")
        started = dt.datetime.fromisoformat(data["started_at"])
        return f"pid {int(data['pid'])}, started at {started:%H:%M}"
    except (OSError, ValueError, KeyError, TypeError):
        return "starting now"
