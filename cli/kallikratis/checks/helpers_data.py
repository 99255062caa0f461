"""Helpers of the opendata and education suites (until checks/conftest.py provides them).

What a municipality should look like comes from the JSON file named by KALLIKRATIS_VERIFY_SPEC
(written by `kallikratis verify`): {slug: {slug, display_name, domain, ip, modules, ca_file, ...}}.
HTTPS requests go to the VM's IP with SNI and Host = the municipality's domain, and the
certificate is verified against the fleet CA: exactly what a browser resolving the name does.
When `kallikratis verify` knows a municipality's maintenance bypass token (environment variable
KALLIKRATIS_VERIFY_BYPASS_TOKENS, JSON {slug: token}; never in a file), every HTTPS request
carries it in the X-Kallikratis-Maintenance-Bypass header, so the checks also pass while a patch
run holds the municipality in maintenance mode.
"""

from __future__ import annotations

import csv
import html
import http.client
import io
import json
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any

#: the typographic quotes WordPress's wptexturize() puts in a title, back to the typed ones
_TEXTURIZED = str.maketrans({"“": '"', "”": '"', "„": '"', "″": '"', "‘": "'", "’": "'", "′": "'"})


def shows_name(page: str, name: str) -> bool:
    """Does the HTML *page* show *name* literally (as a person reads it: entities decoded,
    WordPress's curly quotes taken as the quotes they replace)?"""
    return name.translate(_TEXTURIZED) in html.unescape(page).translate(_TEXTURIZED)


BYPASS_ENV = "KALLIKRATIS_VERIFY_BYPASS_TOKENS"
BYPASS_HEADER = "X-Kallikratis-Maintenance-Bypass"


def bypass_token(slug: str) -> str:
    """The municipality's maintenance bypass token, "" when verify passed none."""
    raw = os.environ.get(BYPASS_ENV, "")
    try:
        tokens = json.loads(raw) if raw else {}
    except ValueError:
        raise AssertionError(f"{BYPASS_ENV} is not a JSON object") from None  # never quote it
    if not isinstance(tokens, dict):
        raise AssertionError(f"{BYPASS_ENV} is not a JSON object")
    return str(tokens.get(slug) or "")


def bypass_headers(slug: str) -> dict[str, str]:
    token = bypass_token(slug)
    return {BYPASS_HEADER: token} if token else {}


def load_spec(host: Any) -> dict[str, Any]:
    path = os.environ.get("KALLIKRATIS_VERIFY_SPEC")
    assert path, "KALLIKRATIS_VERIFY_SPEC is not set (run the suites with `kallikratis verify`)"
    with open(path, encoding="utf-8") as fh:
        fleet = json.load(fh)
    name = host.backend.hostname
    assert name in fleet, f"{name} is not in the verify spec {path} (has {sorted(fleet)})"
    return fleet[name]


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def https_get(spec: dict[str, Any], path: str, timeout: float = 60.0) -> Response:
    """GET https://<domain><path>, connecting to the VM's IP, verified against the fleet CA."""
    ctx = ssl.create_default_context(cafile=spec["ca_file"])
    raw = socket.create_connection((spec["ip"], 443), timeout=timeout)
    tls = ctx.wrap_socket(raw, server_hostname=spec["domain"])
    conn = http.client.HTTPConnection(spec["domain"], 443, timeout=timeout)
    conn.sock = tls
    try:
        headers = {"Host": spec["domain"], "User-Agent": "kallikratis-verify"}
        conn.request("GET", path, headers={**headers, **bypass_headers(spec["slug"])})
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def https_get_following(spec: dict[str, Any], path: str, hops: int = 5) -> tuple[str, Response]:
    """Like https_get, following redirects that stay on the municipality's own site."""
    for _ in range(hops):
        resp = https_get(spec, path)
        if resp.status not in (301, 302, 303, 307, 308):
            return path, resp
        location = resp.headers.get("location", "")
        prefix = f"https://{spec['domain']}"
        if location.startswith(prefix):
            location = location[len(prefix) :]
        assert location.startswith("/"), f"{path} redirects off the site: {location!r}"
        path = location
    raise AssertionError(f"too many redirects from {path}")


def listeners(host: Any, port: int) -> list[str]:
    """The TCP sockets listening on `port` on the VM, e.g. ['tcp://127.0.0.1:8001']."""
    return sorted(
        s
        for s in host.socket.get_listening_sockets()
        if s.startswith("tcp") and s.rsplit(":", 1)[-1] == str(port)
    )


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


#: the suites of a municipality's stack, and of the central `control` VM (file name -> who)
TENANT_SUITES = frozenset(
    {"test_web.py", "test_portal.py", "test_opendata.py", "test_education.py"}
)
CONTROL_SUITES = frozenset({"test_monitoring.py"})
HUB_SUITES = frozenset({"test_hub.py"})


def applies(suite: str, entry: dict[str, Any]) -> bool:
    """Whether the checks of *suite* (a file name) are about the VM of *entry* (its spec)."""
    roles = entry.get("central_roles") or []
    if suite in TENANT_SUITES:
        return not roles
    if suite in CONTROL_SUITES:
        return "control" in roles
    if suite in HUB_SUITES:
        return "hub" in roles
    return True  # test_base: every VM
