"""Fixtures for the testinfra suites that `kallikratis verify` runs against the fleet.

`kallikratis verify` passes --hosts=ssh://<slug>,... and names, in KALLIKRATIS_VERIFY_SPEC, a JSON
file {slug: {slug, display_name, domain, ip, modules, all_modules, ca_file, mgmt_sources,
watch_services, maintenance, ...}}. HTTP(S) checks run FROM THE CONTROLLER to the VM's address,
with the fleet CA as the only trust anchor and the municipality's domain as SNI and Host (no
DNS needed).

Maintenance mode (a patch run verifies before leaving it): every HTTPS request carries the
municipality's bypass token in X-Kallikratis-Maintenance-Bypass when verify passed one
(environment variable KALLIKRATIS_VERIFY_BYPASS_TOKENS, JSON {slug: token}, never a file), so
the checks see the site as it will be; test_web checks the maintenance page itself without it.
Plain HTTP only redirects (maintenance mode does not apply there): no token over cleartext.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers_data import BYPASS_HEADER, applies, bypass_token

SPEC_ENV = "KALLIKRATIS_VERIFY_SPEC"
TIMEOUT = 30


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    peercert: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        assert "json" in self.headers.get("content-type", ""), (
            f"expected JSON, got {self.headers.get('content-type')!r}: {self.text[:200]!r}"
        )
        return json.loads(self.body)


@dataclass(frozen=True)
class Web:
    """Requests from the controller to one municipality VM."""

    ip: str
    domain: str
    ca_file: str
    bypass_token: str = field(default="", repr=False)

    def tls_context(self) -> ssl.SSLContext:
        # the only trust anchor; "" (tls: acme without acme_roots): the system's trust store
        return ssl.create_default_context(cafile=self.ca_file or None)

    def _do(
        self, conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None
    ) -> Response:
        try:
            conn.request(
                "GET", path, headers={"Host": self.domain, "Accept": "*/*", **(headers or {})}
            )
            res = conn.getresponse()
            body = res.read()
            cert = conn.sock.getpeercert() if isinstance(conn.sock, ssl.SSLSocket) else {}
            return Response(
                res.status, {k.lower(): v for k, v in res.getheaders()}, body, cert or {}
            )
        finally:
            conn.close()

    def https(
        self, path: str = "/", headers: dict[str, str] | None = None, *, bypass: bool = True
    ) -> Response:
        """GET over TLS; *bypass*: with the maintenance bypass header (when a token is known)."""
        if bypass and self.bypass_token:
            headers = {BYPASS_HEADER: self.bypass_token, **(headers or {})}
        # Connect to the IP; SNI and certificate name check use the domain.
        raw = socket.create_connection((self.ip, 443), timeout=TIMEOUT)
        conn = http.client.HTTPConnection(self.domain, 443, timeout=TIMEOUT)
        conn.sock = self.tls_context().wrap_socket(raw, server_hostname=self.domain)
        return self._do(conn, path, headers)

    def http(self, path: str = "/") -> Response:
        return self._do(http.client.HTTPConnection(self.ip, 80, timeout=TIMEOUT), path, None)

    def tcp_state(self, port: int, timeout: float = 3.0) -> str:
        """'open', 'refused' (RST: not filtered) or 'filtered' (dropped: timeout)."""
        try:
            with socket.create_connection((self.ip, port), timeout):
                return "open"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "filtered"


def _load_spec() -> dict[str, dict[str, Any]]:
    path = os.environ.get(SPEC_ENV)
    if not path:
        raise pytest.UsageError(f"{SPEC_ENV} is not set: run the suites with `kallikratis verify`")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def slug_of(host: Any) -> str:
    return str(host.backend.hostname)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out (deselect, not skip: a skip reads as a failed check) the checks of suites that
    are not about a host: a municipality has no monitoring, a central VM no portal."""
    if not os.environ.get(SPEC_ENV):
        return
    fleet = _load_spec()
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        host = callspec.params.get("_testinfra_host") if callspec else None
        entry = fleet.get(slug_of(host), {}) if host is not None else {}
        (keep if applies(item.path.name, entry) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def fleet_spec() -> dict[str, dict[str, Any]]:
    return _load_spec()


@pytest.fixture
def spec(host: Any, fleet_spec: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The municipality's entry of the verify spec (the ssh:// host name is its slug)."""
    slug = slug_of(host)
    assert slug in fleet_spec, f"{slug} is not in {os.environ.get(SPEC_ENV)}"
    return fleet_spec[slug]


@pytest.fixture
def web(spec: dict[str, Any]) -> Web:
    return Web(spec["ip"], spec["domain"], spec["ca_file"], bypass_token(spec["slug"]))


@pytest.fixture
def portal_on(spec: dict[str, Any]) -> bool:
    return "portal" in spec["modules"]
