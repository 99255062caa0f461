"""The certbot command line of roles/web (tls: acme) against Debian's pebble on 127.0.0.1:
it obtains a certificate through the fleet's ACME CA bundle, and a second run (a second deploy)
re-issues nothing. pebble skips validation here (PEBBLE_VA_ALWAYS_VALID: no web server on the
name); the HTTP-01 path through nginx is the e2e test's. certbot's state goes to the test's
directory (--config-dir, --work-dir, --logs-dir), never /etc/letsencrypt.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from cryptography import x509

from tests.helpers.pebble import PEBBLE, Pebble

ROLES = Path(__file__).resolve().parents[2] / "roles"
DOMAIN = "hersonissos.crete.kallikratis.test"

pytestmark = pytest.mark.skipif(
    shutil.which(PEBBLE) is None or shutil.which("certbot") is None,
    reason="needs the Debian packages pebble and certbot",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def role_task(name: str) -> dict[str, Any]:
    tasks = yaml.safe_load((ROLES / "web" / "tasks" / "tls_acme_issue.yml").read_text())
    return next(t for t in tasks if t["name"] == name)


def certbot_argv(values: dict[str, Any], state: Path) -> list[str]:
    """The role's argv, rendered; certbot from PATH (the host's) and state under *state*."""
    env = jinja2.Environment()  # noqa: S701 - command arguments, not HTML
    argv = [
        env.from_string(a).render(values)
        for a in role_task("Obtain the certificate (certbot, HTTP-01 through nginx)")[
            "ansible.builtin.command"
        ]["argv"]
    ]
    assert argv[0] == "/usr/bin/certbot"
    argv[0] = shutil.which("certbot") or "certbot"
    return argv + [f"--{d}-dir={state / d}" for d in ("config", "work", "logs")]


def test_certbot_obtains_once_from_the_acme_server(tmp_path: Path) -> None:
    acme = Pebble(
        tmp_path / "pebble",
        "127.0.0.1",
        port=_free_port(),
        management_port=_free_port(),
        always_valid=True,
    )
    values = {
        "web_acme_email": "ops@crete.example.org",
        "web_acme_directory": acme.directory_url,
        "web_acme_webroot": str(tmp_path / "webroot"),
        "web_domain": DOMAIN,
    }
    (tmp_path / "webroot").mkdir()
    state = tmp_path / "letsencrypt"
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(acme.tls_ca_file)}
    with acme.running():
        argv = certbot_argv(values, state)
        first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr
        live = state / "config" / "live" / DOMAIN
        cert = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [DOMAIN]
        assert "Pebble" in cert.issuer.rfc4514_string()
        assert (live / "fullchain.pem").is_file() and (live / "privkey.pem").is_file()
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "not yet due for renewal" in second.stdout + second.stderr
        assert sorted(p.name for p in (state / "config" / "archive" / DOMAIN).iterdir()) == [
            "cert1.pem",
            "chain1.pem",
            "fullchain1.pem",
            "privkey1.pem",
        ]
        renewal = (state / "config" / "renewal" / f"{DOMAIN}.conf").read_text()
        assert f"server = {acme.directory_url}" in renewal
        assert "authenticator = webroot" in renewal


def test_without_the_ca_bundle_certbot_refuses_the_server(tmp_path: Path) -> None:
    acme = Pebble(
        tmp_path / "pebble",
        "127.0.0.1",
        port=_free_port(),
        management_port=_free_port(),
        always_valid=True,
    )
    values = {
        "web_acme_email": "ops@crete.example.org",
        "web_acme_directory": acme.directory_url,
        "web_acme_webroot": str(tmp_path),
        "web_domain": DOMAIN,
    }
    env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
    with acme.running():
        res = subprocess.run(
            certbot_argv(values, tmp_path / "le"),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert res.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in res.stdout + res.stderr + "".join(
        p.read_text() for p in (tmp_path / "le" / "logs").glob("*.log")
    )
