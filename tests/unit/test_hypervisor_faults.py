"""Faults under the libvirt backend: a lost connection is reopened and idempotent calls are
retried; a hypervisor that stays away gives up within the bound; no raw libvirtError escapes.

libvirt's test driver cannot restart a daemon, but closing the connection under the backend
(or a connection that raises the errors a restarted libvirtd gives) is the same for the client.
``test:///default`` keeps its state while any connection to it is open, so a reopened
connection finds the same domains and snapshots.
"""

from __future__ import annotations

import ast
import inspect
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from kallikratis.errors import HypervisorError
from kallikratis.hypervisor import LibvirtBackend, connect
from kallikratis.hypervisor.base import DhcpHost
from kallikratis.hypervisor.libvirt_calls import connection_lost

HYPERVISOR = Path(__file__).resolve().parents[2] / "cli" / "kallikratis" / "hypervisor"


def lv_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    err = libvirt.libvirtError(message)
    err.err = (code, domain, message, 2, None, None, None, -1, -1)
    return err


def rpc_eof() -> libvirt.libvirtError:
    """What a call in flight gets when libvirtd goes away."""
    return lv_error(
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_FROM_RPC,
        "End of file while reading data: Input/output error",
    )


class Flaky:
    """A connection whose named method raises *error* the first *times* calls."""

    def __init__(self, real: libvirt.virConnect, method: str, times: int, error: Any) -> None:
        self.real, self.method, self.left, self.error = real, method, times, error

    def __getattr__(self, name: str) -> Any:
        if name == self.method and self.left > 0:
            self.left -= 1
            raise self.error()
        return getattr(self.real, name)


@pytest.fixture
def default() -> Iterator[libvirt.virConnect]:
    """Holds test:///default's shared state for the test (the backend's reconnect finds it)."""
    keep = libvirt.open("test:///default")
    yield keep
    keep.close()


def test_connection_lost_tells_transport_from_operation() -> None:
    assert connection_lost(rpc_eof())
    assert connection_lost(lv_error(libvirt.VIR_ERR_INVALID_CONN, 20, "invalid connection"))
    closed = lv_error(libvirt.VIR_ERR_INTERNAL_ERROR, 0, "internal error: client socket is closed")
    assert connection_lost(closed)
    full = lv_error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_STORAGE, "No space left")
    assert not connection_lost(full)
    assert not connection_lost(lv_error(libvirt.VIR_ERR_NO_DOMAIN, 10, "no domain"))
    assert not connection_lost(ValueError("x"))


def test_closed_connection_is_reopened(default: libvirt.virConnect) -> None:
    be = connect("test:///default", reconnect_seconds=10)
    old = be.conn
    be.conn.close()  # libvirtd restarted, as far as this client can tell
    dom = be.domain("test")
    assert dom is None  # the stock domain carries no Kallikratis metadata: invisible
    assert be.conn is not old and be.reconnects == 1
    assert be.host_info().cpus > 0
    be.close()


def test_revert_is_retried_after_the_daemon_went_away(default: libvirt.virConnect) -> None:
    be = connect("test:///default", reconnect_seconds=10)
    be.create_snapshot("test", "kk-patch-20260101T000000-r1", "before")
    be.conn = Flaky(be.conn, "lookupByName", 1, rpc_eof)  # type: ignore[assignment]
    start = time.monotonic()
    be.revert_snapshot("test", "kk-patch-20260101T000000-r1")
    assert be.reconnects == 1 and time.monotonic() - start < 5
    assert be.delete_snapshot("test", "kk-patch-20260101T000000-r1")
    be.close()


def test_create_is_not_retried_but_the_next_call_works(default: libvirt.virConnect) -> None:
    be = connect("test:///default", reconnect_seconds=10)
    be.conn = Flaky(be.conn, "lookupByName", 1, rpc_eof)  # type: ignore[assignment]
    with pytest.raises(HypervisorError, match="not retried"):
        be.create_snapshot("test", "kk-patch-20260101T000000-r2", "before")
    assert be.list_snapshots("test") == []
    be.close()


def test_unreachable_hypervisor_gives_up_within_the_bound(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    node.write_text("<node/>\n")
    be = connect(f"test://{node}", reconnect_seconds=2)
    be.conn.close()
    node.unlink()  # the hypervisor is gone for good: every reopen fails
    start = time.monotonic()
    with pytest.raises(HypervisorError) as caught:
        be.domains()
    took = time.monotonic() - start
    assert 1.5 <= took < 4, took
    assert f"lost the connection to test://{node}" in caught.value.message
    assert "could not reconnect within 2 s" in caught.value.message
    assert caught.value.exit_code == 3


def test_reconnect_bound_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALLIKRATIS_LIBVIRT_RECONNECT_SECONDS", "7")
    be = connect("test:///default")
    assert be.reconnect_seconds == 7
    be.close()


# -- no raw libvirtError escapes -----------------------------------------------------------------
class Broken:
    """Every libvirt call fails (not a connection error: nothing is retried)."""

    def isAlive(self) -> int:  # noqa: N802 - libvirt's name
        return 1

    def __getattr__(self, name: str) -> Any:
        raise lv_error(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU, "broken")


def _dummy(name: str, annotation: str) -> Any:
    if name == "xml":
        return "<domain><name>x</name></domain>"
    if "DhcpHost" in annotation:
        return DhcpHost("52:54:00:00:00:01", "x", "10.0.0.2")
    for kind, value in (("bytes", b"x"), ("bool", True), ("int", 1), ("float", 0.1)):
        if annotation.startswith(kind):
            return value
    return "kk-patch-x" if annotation == "str" else None


def test_every_public_method_turns_libvirt_errors_into_hypervisor_errors() -> None:
    be = LibvirtBackend("qemu:///system", Broken(), reconnect_seconds=0)  # type: ignore[arg-type]
    called = []
    for name, method in inspect.getmembers(be, inspect.ismethod):
        if name.startswith("_") or name in ("close",):
            continue
        params = inspect.signature(method).parameters.values()
        args = [_dummy(p.name, str(p.annotation)) for p in params if p.default is p.empty]
        try:
            method(*args)
        except HypervisorError:
            pass
        except libvirt.libvirtError as exc:  # pragma: no cover - the failure this test is for
            pytest.fail(f"{name} let a raw libvirtError through: {exc}")
        called.append(name)
    assert {"revert_snapshot", "sync_guest_clock", "list_snapshots", "pool_space"} <= set(called)


def test_no_libvirt_call_outside_the_error_wrapper() -> None:
    """Every `self.conn.<call>` in the hypervisor package sits inside `with errors(...)`
    (or a lambda handed to or_none, which runs inside one)."""
    offenders = []
    for path in sorted(HYPERVISOR.glob("*.py")):
        tree = ast.parse(path.read_text())
        wrapped: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.With) and any(
                isinstance(i.context_expr, ast.Call)
                and getattr(i.context_expr.func, "id", "") in ("errors", "_errors")
                for i in node.items
            ):
                wrapped.update(id(n) for n in ast.walk(node))
            if isinstance(node, ast.Lambda):
                wrapped.update(id(n) for n in ast.walk(node))  # called through or_none
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "conn"
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"
                and node.attr not in ("close", "isAlive")
                and id(node) not in wrapped
            ):
                offenders.append(f"{path.name}:{node.lineno} self.conn.{node.attr}")
    assert offenders == []
