"""The blackbox exporter with the monitoring role's module, probing a real HTTPS server on
127.0.0.1: a certificate from the fleet CA passes, one from another CA fails, and so does a
server error (a portal answering 503). Bounded: the exporter is stopped, at most 30 s."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from role_render import CONTROL_VARS, render

BLACKBOX = shutil.which("prometheus-blackbox-exporter") or "/usr/bin/prometheus-blackbox-exporter"

pytestmark = pytest.mark.skipif(
    not Path(BLACKBOX).is_file(), reason="prometheus-blackbox-exporter is not installed"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], out: Path) -> None:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@contextlib.contextmanager
def _https(certs: Path, status: int) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _probe(port: int, target: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/probe?module=https_fleet&target={target}"
    with urllib.request.urlopen(url, timeout=30) as res:  # noqa: S310 - loopback only
        text = res.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_probes_trust_the_fleet_ca_only(tmp_path: Path) -> None:
    fleet = _ca("Kallikratis fleet CA (test)")
    other = _ca("Someone else's CA")
    (tmp_path / "fleet-ca.crt").write_bytes(fleet[1].public_bytes(serialization.Encoding.PEM))
    _leaf(fleet, tmp_path / "good")
    _leaf(other, tmp_path / "foreign")
    config = tmp_path / "blackbox.yml"
    config.write_text(
        render(
            "monitoring",
            "etc/prometheus/blackbox.yml.j2",
            CONTROL_VARS,
            monitoring_fleet_ca=str(tmp_path / "fleet-ca.crt"),
            monitoring_probe_timeout="5s",
        )
    )
    port = _free_port()
    argv = [BLACKBOX, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]
    with (
        _https(tmp_path / "good", 200) as good,
        _https(tmp_path / "foreign", 200) as foreign,
        _https(tmp_path / "good", 503) as down,
    ):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the blackbox exporter did not listen"
                time.sleep(0.1)
            ok = _probe(port, f"https://localhost:{good}/")
            assert ok["probe_success"] == 1
            assert ok["probe_http_status_code"] == 200
            expiry = ok["probe_ssl_earliest_cert_expiry"] - time.time()
            assert 9 * 86400 < expiry < 10 * 86400  # what CertificateExpiresSoon looks at
            assert _probe(port, f"https://localhost:{foreign}/")["probe_success"] == 0
            failed = _probe(port, f"https://localhost:{down}/")
            assert failed["probe_success"] == 0 and failed["probe_http_status_code"] == 503
            plain = _probe(port, f"http://localhost:{_free_port()}/")
            assert plain["probe_success"] == 0
        finally:
            proc.terminate()
            proc.wait(10)
