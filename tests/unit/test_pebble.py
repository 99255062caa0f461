"""The ACME test server of the e2e tests (tests/helpers/pebble.py), started on 127.0.0.1 only:
its directory answers over HTTPS trusted through the helper's CA alone."""

from __future__ import annotations

import shutil
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from tests.helpers.pebble import PEBBLE, Pebble

pytestmark = pytest.mark.skipif(
    shutil.which(PEBBLE) is None, reason="the Debian package pebble is not installed"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pebble_serves_its_directory_on_loopback(tmp_path: Path) -> None:
    acme = Pebble(tmp_path / "pebble", "127.0.0.1", port=_free_port(), management_port=_free_port())
    with acme.running():
        directory = acme.directory()
        assert directory["newAccount"].startswith(f"https://127.0.0.1:{acme.port}/")
        assert {"newNonce", "newOrder", "revokeCert"} <= set(directory)
        root = x509.load_pem_x509_certificate(acme.issuing_roots())
        assert "Pebble" in root.subject.rfc4514_string()
        # without the helper's CA the server is not trusted
        with pytest.raises(urllib.error.URLError) as err:
            urllib.request.urlopen(acme.directory_url, context=ssl.create_default_context())
        assert isinstance(err.value.reason, ssl.SSLCertVerificationError)
    assert acme._proc is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", acme.port), 1).close()


def test_the_command_line_names_the_dns_server(tmp_path: Path) -> None:
    acme = Pebble(tmp_path, "10.77.0.1", dns_server="10.77.0.1:53")
    config = acme.write_config()
    assert acme.argv(config) == [PEBBLE, "-config", str(config), "-dnsserver", "10.77.0.1:53"]
    assert acme.directory_url == "https://10.77.0.1:14000/dir"
    assert acme.env()["PEBBLE_VA_NOSLEEP"] == "1"
    assert "PEBBLE_VA_ALWAYS_VALID" not in acme.env()
    cert = x509.load_pem_x509_certificate((tmp_path / "tls-cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.77.0.1"]
