"""The fleet CA is name-constrained to the fleet: a leaf outside fleet_domain fails verification."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from kallikratis import model
from kallikratis.pki import FleetCA, constraints_of


def _now() -> dt.datetime:
    """Now, at the call: a module-level constant would lag a long (loaded) suite by more than
    the 5 minutes the CA's not-before allows, and verification would fail for that alone."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def ca(test_fleet: model.Fleet, state_dir: Path, vault_password: Path) -> FleetCA:
    return FleetCA(state_dir, test_fleet)


def _leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *names: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(n) for n in names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _verifies(ca_pem: bytes, leaf_pem: bytes, name: str) -> bool:
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    verifier = (
        PolicyBuilder()
        .store(Store([ca_cert]))
        .time(_now())
        .build_server_verifier(x509.DNSName(name))
    )
    try:
        verifier.verify(leaf, [])
    except VerificationError:
        return False
    return True


def _openssl_verifies(tmp_path: Path, ca_pem: bytes, leaf_pem: bytes) -> bool:
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf_pem)
    res = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "leaf.pem"],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.returncode == 0


def test_a_new_fleet_ca_is_constrained_to_the_fleet(ca: FleetCA, test_fleet: model.Fleet) -> None:
    cert, _ = ca.ensure_ca()
    ext = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    assert ext.value.permitted_subtrees == [
        x509.DNSName(test_fleet.domain),
        x509.IPAddress(test_fleet.network.cidr),
    ]
    assert not ext.value.excluded_subtrees


def test_a_leaf_outside_the_fleet_domain_fails_verification(ca: FleetCA, tmp_path: Path) -> None:
    ca_cert, ca_key = ca.ensure_ca()
    ca_pem = ca.ca_cert_path.read_bytes()
    inside = _leaf(ca_cert, ca_key, f"x.{ca.fleet.domain}")
    outside = _leaf(ca_cert, ca_key, "www.bank.example")
    assert _verifies(ca_pem, inside, f"x.{ca.fleet.domain}")
    assert not _verifies(ca_pem, outside, "www.bank.example")
    if shutil.which("openssl"):
        assert _openssl_verifies(tmp_path, ca_pem, inside)
        assert not _openssl_verifies(tmp_path, ca_pem, outside)


def test_the_issued_leaves_verify_with_their_name_and_address(
    ca: FleetCA, test_fleet: model.Fleet
) -> None:
    m = test_fleet.municipalities[0]
    assert ca.ensure_cert(m)
    leaf = ca.paths.tls_cert(m.slug).read_bytes()
    ca_pem = ca.ca_cert_path.read_bytes()
    assert _verifies(ca_pem, leaf, m.domain)
    assert not ca.ensure_cert(m), "a good certificate is not re-issued"
    assert ca.ca_cert_path.read_bytes() == ca_pem, "a constrained CA is left as it is"


def test_an_unconstrained_ca_is_re_signed_with_the_same_key(
    ca: FleetCA, test_fleet: model.Fleet
) -> None:
    """A CA from before the constraint: same key and subject, constraint added, leaves kept."""
    ca_cert, ca_key = ca.ensure_ca()
    old = (
        x509.CertificateBuilder()
        .subject_name(ca_cert.subject)
        .issuer_name(ca_cert.subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=3000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca.ca_cert_path.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    m = test_fleet.municipalities[0]
    assert ca.ensure_cert(m)
    leaf = ca.paths.tls_cert(m.slug).read_bytes()
    # the leaf was signed while the old certificate was on disk: re-signed first
    new_cert, new_key = ca.ensure_ca()
    assert constraints_of(new_cert) == ca.name_constraints()
    assert new_cert.subject == old.subject and new_cert.public_key() == old.public_key()
    assert new_cert.not_valid_after_utc == old.not_valid_after_utc.replace(microsecond=0)
    assert _verifies(ca.ca_cert_path.read_bytes(), leaf, m.domain)
    assert new_key.private_numbers() == ca_key.private_numbers()
