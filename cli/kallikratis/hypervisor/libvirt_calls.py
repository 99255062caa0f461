"""How the libvirt backend calls libvirt: errors become HypervisorError, missing objects None."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from kallikratis.errors import HypervisorError

T = TypeVar("T")

#: error domains of the client/daemon transport: the connection, not the operation, failed
_TRANSPORT = (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)
_NO_CONNECTION = (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN)
_CLOSED = ("connection closed", "client socket is closed", "end of file while reading")


@contextmanager
def errors(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"{what}: {exc.get_error_message()}") from exc


def or_none(lookup: Callable[[], T], *missing: int) -> T | None:
    """The object *lookup* finds, or None when libvirt says it is missing (error codes)."""
    try:
        return lookup()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in missing:
            return None
        raise


def connection_lost(exc: BaseException | None) -> bool:
    """Whether a libvirt error says the connection to the daemon is gone (libvirtd restarted,
    the SSH tunnel dropped, the connection was closed), rather than the operation failing.

    VIR_ERR_SYSTEM_ERROR alone is not enough (a full disk is one too): it counts only with
    the RPC/remote domain or a "connection closed" message.
    """
    if not isinstance(exc, libvirt.libvirtError):
        return False
    code, domain = exc.get_error_code(), exc.get_error_domain()
    message = (exc.get_error_message() or "").lower()
    if code in _NO_CONNECTION or domain in _TRANSPORT:
        return True
    if code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR):
        return any(text in message for text in _CLOSED)
    return False
