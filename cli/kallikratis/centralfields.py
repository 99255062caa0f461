"""Inventory fields of the center's own services: where the monitoring's alerts go.

Pure parsing like :mod:`kallikratis.endpointfields`: the raw values in, the model value and a
list of (field, message) problems out. The values end up in Alertmanager's configuration on the
`control` VM, so every string is checked as hostile first.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from kallikratis import model
from kallikratis.checker import is_fqdn
from kallikratis.endpointfields import is_email
from kallikratis.fleetfields import has_control

Problems = list[tuple[str, str]]
ALERT_KEYS = ("alert_email", "alert_webhook_url", "alert_smtp_smarthost")
_HOSTPORT_RE = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")


def alerts(values: dict[str, Any]) -> tuple[model.Alerts, Problems]:
    """`alert_email`, `alert_webhook_url`, `alert_smtp_smarthost` (all optional)."""
    problems: Problems = []
    email = values.get("alert_email") or ""
    if email and not is_email(email):
        problems.append(("alert_email", f"must be an e-mail address (user@domain), got {email!r}"))
    url = values.get("alert_webhook_url") or ""
    if url and not _http_url(url):
        problems.append(("alert_webhook_url", f"must be an http(s):// URL, got {url!r}"))
    smarthost = values.get("alert_smtp_smarthost") or ""
    if smarthost and not _hostport(smarthost):
        problems.append(
            (
                "alert_smtp_smarthost",
                f"must be host:port (e.g. mail.example.gr:25), got {smarthost!r}",
            )
        )
    if email and not smarthost:
        problems.append(("alert_email", "needs alert_smtp_smarthost (host:port of the mail relay)"))
    if problems:
        return model.Alerts(), problems
    return model.Alerts(str(email), str(url), str(smarthost)), []


def _http_url(value: Any) -> bool:
    if not isinstance(value, str) or has_control(value) or any(c in value for c in " \"'<>\\"):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _hostport(value: Any) -> bool:
    if not isinstance(value, str) or not (match := _HOSTPORT_RE.fullmatch(value)):
        return False
    host = match["host"]
    return (host.startswith("[") or is_fqdn(host) or host == "localhost" or _ipv4(host)) and (
        0 < int(match["port"]) < 65536
    )


def _ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)
