"""The public-endpoint fields: admin_allow (fleet), tls (per municipality), acme_* (fleet).

Good values reach the model and the Ansible variables; every bad value is reported with file,
entry and field, once (exit code 2), and changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kallikratis import inventory, stackvars, verify
from kallikratis.errors import InventoryError
from support import CRETE, FLEET, HERSO_VARS, HOSTS, Bad, InventoryCopy, assert_one_problem

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
ACME = {"acme_directory": "https://10.77.0.1:14000/dir", "acme_email": "ops@crete.example.org"}


def test_defaults_keep_the_pilot_working(tmp_path: Path) -> None:
    fleet = inventory.load(CRETE)
    assert fleet.admin_allow == ("0.0.0.0/0", "::/0")
    assert fleet.acme is None
    assert {m.tls for m in fleet.municipalities} == {"fleet-ca"}
    got = stackvars.municipality_vars(fleet, fleet.municipalities[0], tmp_path)
    assert got["kallikratis_admin_allow"] == ["0.0.0.0/0", "::/0"]
    assert got["kallikratis_tls"] == "fleet-ca"
    assert got["kallikratis_acme"] == {}


def test_admin_allow_and_acme_reach_the_stack_vars(inv: InventoryCopy, tmp_path: Path) -> None:
    (inv.root / "acme-ca.pem").write_text(PEM)
    inv.set_fleet(admin_allow=["10.0.0.0/8", "2001:db8::/32"], acme_ca_bundle="acme-ca.pem", **ACME)
    inv.set_host("hersonissos", tls="acme")
    fleet = inv.load()
    assert fleet.admin_allow == ("10.0.0.0/8", "2001:db8::/32")
    assert fleet.acme is not None and fleet.acme.ca_bundle == str(inv.root / "acme-ca.pem")
    herso = stackvars.municipality_vars(fleet, fleet.get("hersonissos"), tmp_path)
    assert herso["kallikratis_tls"] == "acme"
    assert herso["kallikratis_acme"] == {
        "directory": ACME["acme_directory"],
        "email": ACME["acme_email"],
        "ca_bundle_file": str(inv.root / "acme-ca.pem"),
    }
    other = stackvars.municipality_vars(fleet, fleet.get("minoa-pediada"), tmp_path)
    assert other["kallikratis_tls"] == "fleet-ca" and other["kallikratis_acme"] == {}
    assert other["kallikratis_admin_allow"] == ["10.0.0.0/8", "2001:db8::/32"]


def test_an_acme_municipality_may_have_a_domain_outside_the_fleet(inv: InventoryCopy) -> None:
    inv.set_fleet(**ACME)
    inv.set_host("hersonissos", tls="acme", domain="www.hersonissos.gr")
    assert inv.load().get("hersonissos").domain == "www.hersonissos.gr"


BAD: dict[str, Bad] = {
    "admin-allow-not-a-list": Bad(
        lambda i: i.set_fleet(admin_allow="10.0.0.0/8"),
        FLEET,
        "all",
        "admin_allow",
        "non-empty list",
    ),
    "admin-allow-empty": Bad(lambda i: i.set_fleet(admin_allow=[]), FLEET, "all", "admin_allow"),
    "admin-allow-host-bits": Bad(
        lambda i: i.set_fleet(admin_allow=["10.0.0.0/8", "10.1.2.3/16"]),
        FLEET,
        "all",
        "admin_allow[1]",
        "CIDR",
    ),
    "admin-allow-nginx-injection": Bad(
        lambda i: i.set_fleet(admin_allow=["10.0.0.0/8; allow all"]),
        FLEET,
        "all",
        "admin_allow[0]",
    ),
    "admin-allow-newline": Bad(
        lambda i: i.set_fleet(admin_allow=["10.0.0.0/8\n"]), FLEET, "all", "admin_allow[0]"
    ),
    "tls-unknown": Bad(
        lambda i: i.set_host("hersonissos", tls="letsencrypt"), HOSTS, "hersonissos", "tls", "acme"
    ),
    "tls-in-host-vars": Bad(
        lambda i: i.set_host_var_file("hersonissos", tls=True), HERSO_VARS, "hersonissos", "tls"
    ),
    "fleet-ca-outside-fleet-domain": Bad(
        lambda i: i.set_host("hersonissos", domain="www.hersonissos.gr"),
        HOSTS,
        "hersonissos",
        "domain",
        "tls: acme",
    ),
    "acme-without-directory": Bad(
        lambda i: (
            i.set_fleet(acme_email="ops@crete.example.org"),
            i.set_host("hersonissos", tls="acme"),
        ),
        HOSTS,  # a missing fleet-wide value is reported against the inventory's hosts.yml
        "all",
        "acme_directory",
        "required: a municipality has tls: acme",
    ),
    "acme-directory-http": Bad(
        lambda i: (
            i.set_fleet(**{**ACME, "acme_directory": "http://10.77.0.1:14000/dir"}),
            i.set_host("hersonissos", tls="acme"),
        ),
        FLEET,
        "all",
        "acme_directory",
    ),
    "acme-directory-shell": Bad(
        lambda i: i.set_fleet(**{**ACME, "acme_directory": "https://acme.example.org/dir;reboot"}),
        FLEET,
        "all",
        "acme_directory",
    ),
    "acme-email-bad": Bad(
        lambda i: (
            i.set_fleet(**{**ACME, "acme_email": "ops at example"}),
            i.set_host("hersonissos", tls="acme"),
        ),
        FLEET,
        "all",
        "acme_email",
        "e-mail",
    ),
    "acme-email-newline": Bad(
        lambda i: i.set_fleet(**{**ACME, "acme_email": "ops@example.org\n--server x"}),
        FLEET,
        "all",
        "acme_email",
    ),
    "acme-ca-bundle-missing": Bad(
        lambda i: i.set_fleet(**ACME, acme_ca_bundle="no-such.pem"),
        FLEET,
        "all",
        "acme_ca_bundle",
        "cannot read",
    ),
    "acme-roots-not-pem": Bad(
        lambda i: (
            (i.root / "roots.pem").write_text("hello\n"),
            i.set_fleet(**ACME, acme_roots="roots.pem"),
        ),
        FLEET,
        "all",
        "acme_roots",
        "no PEM certificate",
    ),
}


@pytest.mark.parametrize("case_id", list(BAD))
def test_bad_value_is_reported_once_with_file_entry_and_field(
    inv: InventoryCopy, case_id: str
) -> None:
    case = BAD[case_id]
    case.mutate(inv)
    before = inv.snapshot()
    with pytest.raises(InventoryError) as err:
        inv.load()
    assert_one_problem(err.value, inv.root, case)
    assert inv.snapshot() == before


def test_validate_exits_2_naming_file_entry_and_field(inv: InventoryCopy) -> None:
    inv.set_fleet(admin_allow=["everyone"])
    res = subprocess.run(
        [sys.executable, "-c", "from kallikratis.cli import main; main()", "validate", "--offline"],
        capture_output=True,
        text=True,
        env={**os.environ, "KALLIKRATIS_INVENTORY": str(inv.root), "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{inv.root / FLEET}: all: admin_allow[0]: " in res.stderr


def test_verify_trusts_the_issuer_of_each_municipality(inv: InventoryCopy, tmp_path: Path) -> None:
    """fleet-ca: the fleet CA file; acme: acme_roots (or "" = the system's trust store)."""
    (inv.root / "roots.pem").write_text(PEM)
    inv.set_fleet(acme_roots="roots.pem", **ACME)
    inv.set_host("hersonissos", tls="acme")
    fleet = inv.load()
    spec = json.loads(verify.write_spec(fleet, list(fleet.municipalities), tmp_path).read_text())
    assert spec["hersonissos"]["tls"] == "acme"
    assert spec["hersonissos"]["ca_file"] == str(inv.root / "roots.pem")
    assert spec["minoa-pediada"]["tls"] == "fleet-ca"
    assert spec["minoa-pediada"]["ca_file"].endswith("/pki/ca.crt")
    assert spec["minoa-pediada"]["admin_allowed"] is True  # the default: open


def test_verify_knows_whether_the_controller_is_on_the_admin_allow_list(
    inv: InventoryCopy, tmp_path: Path
) -> None:
    inv.set_fleet(admin_allow=["192.0.2.0/24"])
    fleet = inv.load()
    spec = json.loads(verify.write_spec(fleet, list(fleet.municipalities), tmp_path).read_text())
    assert {e["admin_allowed"] for e in spec.values()} == {False}
    inv.set_fleet(admin_allow=[str(fleet.network.cidr)])
    fleet = inv.load()
    spec = json.loads(verify.write_spec(fleet, list(fleet.municipalities), tmp_path).read_text())
    assert {e["admin_allowed"] for e in spec.values()} == {True}
