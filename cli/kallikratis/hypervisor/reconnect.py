"""Surviving a libvirtd restart: reopen the same URI and retry what is safe to retry.

When a call fails because the *connection* is gone (see
:func:`~kallikratis.hypervisor.libvirt_calls.connection_lost`, or ``conn.isAlive()`` is
false), the backend reopens its URI with backoff (0.5 s, 1 s, 2 s, ... at most 5 s apart)
until ``reconnect_seconds`` have passed since the failure (default 60 s;
``KALLIKRATIS_LIBVIRT_RECONNECT_SECONDS``), then:

- an :func:`idempotent` method (lookups, state reads, start/stop, revert, delete) is run
  again, as often as the connection drops within the same bound;
- a :func:`once` method (creating a snapshot or a volume, an upload) is not: it may or may
  not have taken effect, so it fails with a message saying so, and the next call finds the
  connection open again.

Past the bound, a :class:`~kallikratis.errors.HypervisorError` names the URI and the last
error. Calls nested in a retrying call (``prune_snapshots`` -> ``delete_snapshot``) leave the
retry to the outermost one, so one operation never waits longer than the bound.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import libvirt

from kallikratis.errors import HypervisorError
from kallikratis.hypervisor.libvirt_calls import connection_lost

log = logging.getLogger(__name__)
RECONNECT_ENV = "KALLIKRATIS_LIBVIRT_RECONNECT_SECONDS"
DEFAULT_RECONNECT_SECONDS = 60.0
F = TypeVar("F", bound=Callable[..., Any])
_depth = threading.local()


def reconnect_seconds() -> float:
    raw = os.environ.get(RECONNECT_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_RECONNECT_SECONDS
    except ValueError:
        return DEFAULT_RECONNECT_SECONDS


class Reconnecting:
    """The connection half of the backend: ``uri``, ``conn`` and how to get it back."""

    uri: str
    conn: libvirt.virConnect

    def _init_connection(
        self, seconds: float | None, opener: Callable[[str], libvirt.virConnect]
    ) -> None:
        self.reconnect_seconds = reconnect_seconds() if seconds is None else seconds
        self._opener = opener
        self._generation = 0
        self._conn_lock = threading.Lock()
        self.reconnects = 0  # how often the connection was reopened (for reports and tests)

    def _alive(self) -> bool:
        try:
            return bool(self.conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _lost(self, exc: HypervisorError) -> bool:
        return connection_lost(exc.__cause__) or not self._alive()

    def _reopen(self, seen: int, deadline: float, cause: HypervisorError) -> None:
        """Reopen the URI unless another thread already did since generation *seen*."""
        with self._conn_lock:
            if self._generation != seen:
                return
            delay, last = 0.5, cause.message
            while True:
                try:
                    fresh = self._opener(self.uri)
                    break
                except libvirt.libvirtError as exc:
                    last = exc.get_error_message() or str(exc)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HypervisorError(
                        f"lost the connection to {self.uri} ({cause.message}) and could not "
                        f"reconnect within {self.reconnect_seconds:.0f} s: {last}"
                    ) from cause
                time.sleep(min(delay, left))
                delay = min(delay * 2, 5.0)
            old, self.conn = self.conn, fresh
            self._generation += 1
            self.reconnects += 1
            with contextlib.suppress(libvirt.libvirtError):  # it is gone already
                old.close()
            log.warning("reconnected to %s after: %s", self.uri, cause.message)


def _call(retry: bool) -> Callable[[F], F]:
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Reconnecting, *args: Any, **kwargs: Any) -> Any:
            if getattr(_depth, "n", 0):  # inside a retrying call: it decides
                return method(self, *args, **kwargs)
            deadline = 0.0
            while True:
                seen = self._generation
                _depth.n = 1
                try:
                    return method(self, *args, **kwargs)
                except HypervisorError as exc:
                    if not self._lost(exc):
                        raise
                    deadline = deadline or time.monotonic() + self.reconnect_seconds
                    self._reopen(seen, deadline, exc)
                    if not retry:
                        raise HypervisorError(
                            f"{exc.message} (the connection to {self.uri} was lost during "
                            "the call and is open again; not retried, as it may or may not "
                            "have taken effect)"
                        ) from exc
                    log.warning("retrying after reconnecting to %s: %s", self.uri, exc.message)
                finally:
                    _depth.n = 0

        return cast(F, wrapper)

    return decorate


#: safe to run again after a reconnect: the same call leads to the same state
idempotent = _call(retry=True)
#: reconnects, but does not repeat the call
once = _call(retry=False)
