"""Per-municipality run locks: two runs never touch the same municipality at once.

One lock file per municipality, ``<state_dir>/locks/<fleet>/<slug>.lock``, held with
``fcntl.flock`` (non-blocking). The kernel drops a flock when its holder dies, even by
SIGKILL, so there are never stale locks to clean up. The file's content (pid, command line,
start time) only serves the refusal message; lock files are never deleted, because deleting a
locked file lets a third process lock a new inode of the same name.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from shlex import join as shlex_join
from typing import Any, BinaryIO

from kallikratis.errors import KallikratisError, LockedError
from kallikratis.paths import StateDir

log = logging.getLogger(__name__)
_READ_ATTEMPTS = 5  # a holder that has just locked may not have written its content yet


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as recorded in the lock file."""

    pid: int
    hostname: str
    argv: tuple[str, ...]
    started: str

    def describe(self) -> str:
        cmd = shlex_join(self.argv) if self.argv else "(unknown command)"
        return f"pid {self.pid} on {self.hostname or '?'}, started {self.started or '?'}: {cmd}"


def lock_dir(state_dir: Path, fleet: str) -> Path:
    return StateDir(state_dir).fleet(fleet).locks


def _read_holder(handle: BinaryIO) -> Holder | None:
    for attempt in range(_READ_ATTEMPTS):
        handle.seek(0)
        try:
            data: Any = json.loads(handle.read().decode("utf-8"))
            return Holder(
                int(data["pid"]),
                str(data.get("hostname", "")),
                tuple(str(a) for a in data.get("argv", [])),
                str(data.get("started", "")),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            if attempt + 1 < _READ_ATTEMPTS:
                time.sleep(0.05)
    return None


def _write_holder(handle: BinaryIO, argv: Sequence[str]) -> None:
    data = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "argv": list(argv),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(data, ensure_ascii=False).encode("utf-8"))
    handle.flush()


def _try_lock(path: Path) -> tuple[BinaryIO | None, Holder | None]:
    """(open locked handle, None) or (None, the holder as far as it is known)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    handle = os.fdopen(fd, "r+b", buffering=0)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(handle)
        handle.close()
        return None, holder
    except BaseException:
        handle.close()
        raise
    return handle, None


def _refusal(busy: dict[str, Holder | None]) -> LockedError:
    by_holder: dict[str, list[str]] = {}
    for slug, holder in busy.items():
        key = holder.describe() if holder else "a run whose details could not be read"
        by_holder.setdefault(key, []).append(slug)
    lines = [f"  - {', '.join(slugs)}: held by {who}" for who, slugs in by_holder.items()]
    return LockedError(
        f"{len(busy)} municipality(ies) are in use by another kallikratis run; "
        "nothing was changed:\n" + "\n".join(lines) + "\n"
        "Wait for that run to finish, or select municipalities it does not touch."
    )


def acquire(
    state_dir: Path, fleet: str, slugs: Iterable[str], argv: Sequence[str]
) -> list[BinaryIO]:
    """Lock every municipality in *slugs*, all or nothing, in sorted order.

    Returns the open handles (closing them releases the locks). Raises LockedError, naming
    every municipality that is busy and who holds it, when any is held by another run.
    """
    directory = lock_dir(state_dir, fleet)
    try:
        StateDir(state_dir).secure()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KallikratisError(f"cannot create the lock directory {directory}: {exc}") from exc
    held: list[BinaryIO] = []
    busy: dict[str, Holder | None] = {}
    try:
        for slug in sorted(set(slugs)):
            handle, holder = _try_lock(directory / f"{slug}.lock")
            if handle is None:
                busy[slug] = holder
            else:
                held.append(handle)
        if busy:
            raise _refusal(busy)
        for handle in held:
            _write_holder(handle, argv)
    except BaseException:
        release(held)
        raise
    log.debug("locked %s in fleet %s", sorted(set(slugs)), fleet)
    return held


def release(handles: Iterable[BinaryIO]) -> None:
    for handle in handles:
        try:
            handle.seek(0)
            handle.truncate()
        except OSError:
            pass
        handle.close()  # closing the only descriptor drops the flock


@contextmanager
def hold(state_dir: Path, fleet: str, slugs: Iterable[str], argv: Sequence[str]) -> Iterator[None]:
    """``with hold(...):`` the municipalities are ours until the block ends (or we die)."""
    handles = acquire(state_dir, fleet, slugs, argv)
    try:
        yield
    finally:
        release(handles)
