"""Debian's `pebble` (ACME test server) for the tests, in the current network namespace.

Debian's package ships the binary only (no test certificates), so this module makes a
throwaway CA and a TLS certificate for the listen address, writes pebble's configuration and
runs it:

    acme = Pebble(tmp_path / "pebble", "10.77.0.1", dns_server="10.77.0.1:53")
    with acme.running():
        acme.directory_url      # https://10.77.0.1:14000/dir  -> inventory acme_directory
        acme.tls_ca_file        # PEM the clients trust for it  -> inventory acme_ca_bundle
        acme.issuing_roots()    # PEM of pebble's issuing root  -> inventory acme_roots (verify)

pebble forgets everything when it stops, its issuing root included (a new one every start).
HTTP-01 validation connects to port `http_port` (80: the VMs' nginx) of the name, resolved
through `dns_server` (libvirt's dnsmasq in the lab). PEBBLE_VA_NOSLEEP=1 skips the random
validation delay and PEBBLE_WFE_NONCEREJECT=0 the random bad-nonce answers; `always_valid`
(PEBBLE_VA_ALWAYS_VALID=1) skips validation entirely (unit tests without a web server).
Loopback or the lab namespace only: the caller picks the address.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEBBLE = "/usr/bin/pebble"
START_TIMEOUT = 20.0


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_tls_files(root: Path, address: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for *address* (IP or name): (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Kallikratis test ACME server CA"))
        .issuer_name(_name("Kallikratis test ACME server CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        san = x509.DNSName(address)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(address))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    root.mkdir(parents=True, exist_ok=True)
    paths = (root / "tls-ca.pem", root / "tls-cert.pem", root / "tls-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    paths[2].chmod(0o600)
    return paths


class Pebble:
    """pebble on *address*: ACME on `port`, management (roots) on `management_port`."""

    def __init__(
        self,
        root: Path,
        address: str = "127.0.0.1",
        *,
        port: int = 14000,
        management_port: int = 15000,
        dns_server: str = "",
        http_port: int = 80,
        always_valid: bool = False,
    ) -> None:
        self.root = root
        self.address = address
        self.port = port
        self.management_port = management_port
        self.dns_server = dns_server
        self.http_port = http_port
        self.always_valid = always_valid
        self._proc: subprocess.Popen[bytes] | None = None
        host = f"[{address}]" if ":" in address else address
        self.directory_url = f"https://{host}:{port}/dir"
        self.management_url = f"https://{host}:{management_port}"
        self.tls_ca_file = root / "tls-ca.pem"
        self.log_file = root / "pebble.log"

    def write_config(self) -> Path:
        ca, cert, key = make_tls_files(self.root, self.address)
        assert ca == self.tls_ca_file
        host = f"[{self.address}]" if ":" in self.address else self.address
        config = {
            "pebble": {
                "listenAddress": f"{host}:{self.port}",
                "managementListenAddress": f"{host}:{self.management_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": self.http_port,
                "tlsPort": 443,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        path = self.root / "pebble-config.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def argv(self, config: Path) -> list[str]:
        argv = [PEBBLE, "-config", str(config)]
        return argv + (["-dnsserver", self.dns_server] if self.dns_server else [])

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        if self.always_valid:
            env["PEBBLE_VA_ALWAYS_VALID"] = "1"
        return env

    def start(self) -> None:
        if not Path(PEBBLE).is_file() or shutil.which(PEBBLE) is None:
            raise FileNotFoundError(f"{PEBBLE}: install the Debian package pebble")
        config = self.write_config()
        log = self.log_file.open("wb")
        self._proc = subprocess.Popen(
            self.argv(config),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pebble exited: {self.log_file.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                socket.create_connection((self.address, self.port), 1).close()
                socket.create_connection((self.address, self.management_port), 1).close()
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"pebble did not listen on {self.address}:{self.port}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    @contextlib.contextmanager
    def running(self) -> Iterator[Pebble]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def _get(self, url: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.tls_ca_file))
        with urllib.request.urlopen(url, context=ctx, timeout=10) as res:  # noqa: S310 - https only
            return bytes(res.read())

    def directory(self) -> dict[str, str]:
        """The ACME directory (newNonce, newAccount, newOrder, ...)."""
        return dict(json.loads(self._get(self.directory_url)))

    def issuing_roots(self) -> bytes:
        """PEM of the root pebble signs with since it started (what verify must trust)."""
        return self._get(f"{self.management_url}/roots/0")
