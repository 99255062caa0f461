"""roles/web: nginx, fleet TLS, redirect, security headers, home page, maintenance page."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest
from helpers_data import BYPASS_HEADER, shows_name

SECURITY_HEADERS = ("strict-transport-security", "x-content-type-options", "referrer-policy")
BYPASS_CONF = "/etc/nginx/kallikratis-maintenance-bypass.conf"  # roles/web
MAINTENANCE_WORDS = ("Εργασίες συντήρησης", "Scheduled maintenance")


def test_nginx_running(host: Any) -> None:
    nginx = host.service("nginx")
    assert nginx.is_running and nginx.is_enabled


def test_nginx_config_valid(host: Any) -> None:
    with host.sudo():
        assert host.run("nginx -t -q").rc == 0


def test_tls_chain_verifies_to_the_configured_issuer(web: Any, spec: dict[str, Any]) -> None:
    """tls: fleet-ca -> the fleet CA signed it; tls: acme -> anyone but the fleet CA (the chain
    verifies to acme_roots, or to the system's trust store)."""
    res = web.https("/")
    sans = [v for k, v in res.peercert.get("subjectAltName", ()) if k == "DNS"]
    assert spec["domain"] in sans, f"certificate names {sans}, not {spec['domain']}"
    issuer = dict(x[0] for x in res.peercert["issuer"]).get("commonName", "")
    fleet_ca = "Kallikratis fleet CA" in issuer
    assert fleet_ca is (spec.get("tls", "fleet-ca") == "fleet-ca"), (
        f"tls: {spec.get('tls', 'fleet-ca')} but the served certificate is issued by {issuer!r}"
    )


def test_acme_certificate_is_served_and_renewed(host: Any, web: Any, spec: dict[str, Any]) -> None:
    """tls: acme: nginx serves certbot's certificate (not the placeholder) and certbot's
    renewal timer is on; tls: fleet-ca: no certbot timer."""
    timer = host.service("certbot.timer")
    if spec.get("tls", "fleet-ca") != "acme":
        assert not timer.is_enabled, "certbot.timer is enabled on a tls: fleet-ca municipality"
        return
    assert timer.is_enabled and timer.is_running, "certbot.timer is not enabled and active"
    with host.sudo():
        live = host.file(f"/etc/letsencrypt/live/{spec['domain']}/cert.pem").content_string
    ctx = web.tls_context()
    with (
        socket.create_connection((web.ip, 443), 15) as raw,
        ctx.wrap_socket(raw, server_hostname=web.domain) as tls,
    ):
        served = tls.getpeercert(binary_form=True)
    assert served == ssl.PEM_cert_to_DER_cert(live), "nginx does not serve certbot's certificate"


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
    assert shows_name(res.text, spec["display_name"])


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
    assert shows_name(text, spec["display_name"])
    vhost = host.file("/etc/nginx/conf.d/kallikratis.conf")
    assert vhost.contains(r"if (-f /etc/kallikratis/maintenance)")
    assert vhost.contains("error_page 503")
    assert vhost.contains(f"include {BYPASS_CONF};")
    flag = host.file("/etc/kallikratis/maintenance").exists
    expected = bool(spec.get("maintenance", False))
    assert flag is expected, "maintenance mode is " + ("on" if flag else "off")


def test_maintenance_bypass_token_protected(host: Any) -> None:
    # It holds the secret: readable by root (the nginx master) only.
    with host.sudo():
        conf = host.file(BYPASS_CONF)
        assert conf.exists
        assert conf.user == "root" and conf.group == "root" and conf.mode == 0o640
        assert conf.contains("http_x_kallikratis_maintenance_bypass")


def test_maintenance_page_as_expected(web: Any, spec: dict[str, Any]) -> None:
    """Without the bypass header, citizens see the maintenance page exactly while a patch run
    holds the municipality in maintenance mode (a VM left in it fails a plain verify)."""
    res = web.https("/", bypass=False)
    maintenance_page = res.status == 503 and all(word in res.text for word in MAINTENANCE_WORDS)
    if not spec.get("maintenance", False):
        assert not maintenance_page, "the site answers 503 with the maintenance page"
        return
    assert res.status == 503, f"expected 503 with the maintenance page, got HTTP {res.status}"
    assert maintenance_page, f"503 without the maintenance page: {res.text[:200]!r}"
    assert res.headers.get("retry-after"), "no Retry-After on the maintenance page"
    wrong = web.https("/", headers={BYPASS_HEADER: "not-the-token-0123456789"}, bypass=False)
    assert wrong.status == 503, f"a wrong bypass token got HTTP {wrong.status}"


def test_private_key_protected(host: Any) -> None:
    with host.sudo():
        key = host.file("/etc/nginx/tls/server.key")
        assert key.exists
        if key.is_symlink:  # tls: acme: certbot's key (or the placeholder's)
            key = host.file(key.linked_to)
        assert key.user == "root" and key.mode == 0o600
