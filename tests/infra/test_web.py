"""roles/web: nginx, fleet TLS, redirect, security headers, home page, maintenance page."""

from __future__ import annotations

import html
import socket
import ssl
from typing import Any

import pytest

SECURITY_HEADERS = ("strict-transport-security", "x-content-type-options", "referrer-policy")


def test_nginx_running(host: Any) -> None:
    nginx = host.service("nginx")
    assert nginx.is_running and nginx.is_enabled


def test_nginx_config_valid(host: Any) -> None:
    with host.sudo():
        assert host.run("nginx -t -q").rc == 0


def test_tls_chain_verifies_to_fleet_ca(web: Any, spec: dict[str, Any]) -> None:
    res = web.https("/")
    sans = [v for k, v in res.peercert.get("subjectAltName", ()) if k == "DNS"]
    assert spec["domain"] in sans, f"certificate names {sans}, not {spec['domain']}"
    issuer = dict(x[0] for x in res.peercert["issuer"])
    assert "Kallikratis fleet CA" in issuer.get("commonName", "")


def test_tls_rejected_for_another_name(web: Any) -> None:
    # The same certificate must not verify for a name it does not carry.
    ctx = web.tls_context()
    with (
        socket.create_connection((web.ip, 443), 15) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ctx.wrap_socket(raw, server_hostname="not-" + web.domain).close()


def test_http_redirects_to_https(web: Any, spec: dict[str, Any]) -> None:
    res = web.http("/some/path?q=1")
    assert res.status == 301
    assert res.headers["location"] == f"https://{spec['domain']}/some/path?q=1"


def test_security_headers(web: Any) -> None:
    res = web.https("/")
    missing = [h for h in SECURITY_HEADERS if h not in res.headers]
    assert not missing, f"missing headers: {missing}"
    assert "max-age=" in res.headers["strict-transport-security"]
    assert res.headers["x-content-type-options"] == "nosniff"
    framing = res.headers.get("x-frame-options", "").upper() in ("DENY", "SAMEORIGIN") or (
        "frame-ancestors" in res.headers.get("content-security-policy", "")
    )
    assert framing, "no X-Frame-Options / CSP frame-ancestors"
    assert "nginx/" not in res.headers.get("server", ""), "server_tokens should be off"


def test_home_page_shows_display_name(web: Any, spec: dict[str, Any]) -> None:
    res = web.https("/")
    assert res.status == 200, res.status
    assert spec["display_name"] in html.unescape(res.text)


def test_static_home_only_without_portal(host: Any, web: Any, portal_on: bool) -> None:
    vhost = host.file("/etc/nginx/conf.d/kallikratis.conf")
    assert vhost.contains(r"include /etc/nginx/kallikratis.d/\*.conf")
    assert vhost.contains("root /var/www/kallikratis") is (not portal_on)
    res = web.https("/")
    assert '<html lang="' in res.text
    # The static page is ours; WordPress pages carry wp-content/wp-includes links.
    assert ("wp-content" in res.text or "wp-includes" in res.text) is portal_on


def test_maintenance_mode_prepared(host: Any, spec: dict[str, Any]) -> None:
    page = host.file("/usr/share/kallikratis/web/maintenance.html")
    assert page.exists
    text = page.content_string
    assert "συντήρησης" in text and "maintenance" in text
    assert html.escape(spec["display_name"]) in text
    vhost = host.file("/etc/nginx/conf.d/kallikratis.conf")
    assert vhost.contains(r"if (-f /etc/kallikratis/maintenance)")
    assert vhost.contains("error_page 503")
    assert not host.file("/etc/kallikratis/maintenance").exists, "maintenance mode is on"


def test_private_key_protected(host: Any) -> None:
    with host.sudo():
        key = host.file("/etc/nginx/tls/server.key")
        assert key.exists
        assert key.user == "root" and key.mode == 0o600
