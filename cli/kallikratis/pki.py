"""The fleet certificate authority and one TLS certificate per municipality domain.

The CA key and every server key are stored ansible-vault-encrypted; roles read them with the
`file` lookup (which decrypts vaulted files). Certificates are renewed when they near expiry or
no longer name the municipality's domain and address.

The CA is name-constrained (RFC 5280 NameConstraints, critical) to the fleet: DNS names under
`fleet_domain` and IP addresses of the fleet network, the only names its leaves carry. A CA made
before the constraint is re-signed in place with the same key and subject plus the constraint
(the leaves it signed keep verifying; no key is regenerated); a client that installed the old
certificate keeps an unconstrained anchor until it installs the new one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kallikratis import model
from kallikratis.keys import KeyStore, atomic_write
from kallikratis.paths import StateDir

log = logging.getLogger(__name__)
CA_DAYS = 3650
CERT_DAYS = 397
RENEW_BEFORE = dt.timedelta(days=30)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class FleetCA:
    def __init__(self, state_dir: Path, fleet: model.Fleet) -> None:
        self.fleet = fleet
        self.keys = KeyStore(state_dir, fleet.name, fleet.inventory)
        self.state_dir = state_dir
        self.paths = StateDir(state_dir).fleet(fleet.name)
        self.ca_cert_path = self.paths.ca_cert
        self.ca_key_path = self.paths.ca_key

    def _write_secret(self, path: Path, data: bytes) -> None:
        atomic_write(path, self.keys.vault().encrypt(data))

    def _read_secret(self, path: Path) -> bytes:
        return self.keys.vault().decrypt(path.read_bytes())

    def name_constraints(self) -> x509.NameConstraints:
        """What the fleet CA may sign: names under fleet_domain, addresses of the fleet network."""
        permitted: list[x509.GeneralName] = [
            x509.DNSName(self.fleet.domain),
            x509.IPAddress(self.fleet.network.cidr),
        ]
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)

    def ensure_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self.ca_cert_path.exists() and self.ca_key_path.exists():
            cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            key = serialization.load_pem_private_key(self._read_secret(self.ca_key_path), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            if constraints_of(cert) != self.name_constraints():
                cert = self._sign_ca(key, cert.subject, cert.not_valid_after_utc)
                log.warning(
                    "fleet CA of %s re-signed with its name constraints (same key and subject)",
                    self.fleet.name,
                )
            return cert, key
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kallikratis"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"Kallikratis fleet CA ({self.fleet.name})"
                ),
            ]
        )
        cert = self._sign_ca(key, name, _now() + dt.timedelta(days=CA_DAYS))
        self._write_secret(self.ca_key_path, _pem_key(key))
        log.info("created fleet CA for %s", self.fleet.name)
        return cert, key

    def _sign_ca(
        self, key: ec.EllipticCurvePrivateKey, name: x509.Name, not_after: dt.datetime
    ) -> x509.Certificate:
        """The self-signed CA certificate (written to ca_cert_path) for *key*."""
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(self.name_constraints(), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        atomic_write(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert

    def ensure_cert(self, m: model.Municipality) -> bool:
        """Issue or renew the municipality's certificate; True when a new one was written."""
        cert_path, key_path = self.paths.tls_cert(m.slug), self.paths.tls_key(m.slug)
        ca_cert, ca_key = self.ensure_ca()
        if cert_path.exists() and key_path.exists() and self._still_good(cert_path, m):
            return False
        key = ec.generate_private_key(ec.SECP256R1())
        san = x509.SubjectAlternativeName([x509.DNSName(m.domain), x509.IPAddress(m.ip)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, m.domain)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=CERT_DAYS))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self._write_secret(key_path, _pem_key(key))
        chain = cert.public_bytes(serialization.Encoding.PEM)
        atomic_write(cert_path, chain)
        log.info("issued TLS certificate for %s", m.domain)
        return True

    @staticmethod
    def _still_good(path: Path, m: model.Municipality) -> bool:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
            return False
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        return san.get_values_for_type(x509.DNSName) == [m.domain] and san.get_values_for_type(
            x509.IPAddress
        ) == [ipaddress.ip_address(m.ip)]


def constraints_of(cert: x509.Certificate) -> x509.NameConstraints | None:
    """The certificate's NameConstraints when present and critical, else None."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return None
    return ext.value if ext.critical else None
