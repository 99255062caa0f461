"""Backups as Ansible sees them: the secrets the CLI generates, the variables of a
municipality and of control, and the rendered borgmatic config, authorized_keys, sshd drop-in
and firewall."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from kallikratis import model, stackvars, verify
from kallikratis.checks.test_base import mgmt_sources_accepted
from kallikratis.keys import KeyStore
from kallikratis.secrets import ensure_secrets, read_secret, vault_file
from kallikratis.stack import prepare_stack
from role_render import render
from support import InventoryCopy, systemd_verify_units

CONTROL_KNOWN = (
    "10.42.0.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHuFIxw7FyUlEHhHHr2ZbXEg7ye+pl/qUrUyk3BBLUa0"
)
NFT = shutil.which("nft") or "/usr/sbin/nft"


@pytest.fixture
def fleet(inv: InventoryCopy, vault_password: Path) -> model.Fleet:
    for lab_vault in inv.root.glob("host_vars/*/vault.yml"):
        lab_vault.unlink()
    inv.add_central()
    return inv.load()


@pytest.fixture
def keys(fleet: model.Fleet, state_dir: Path) -> KeyStore:
    return KeyStore(state_dir, fleet.name, fleet.inventory)


# --------------------------------------------------------------------------- secrets


def test_each_municipality_gets_a_passphrase_and_a_key_pair_of_its_own(
    fleet: model.Fleet, keys: KeyStore
) -> None:
    seen = set()
    for m in fleet.tenants:
        assert ensure_secrets(fleet, m, keys) is True
        passphrase = read_secret(fleet, m.slug, keys, "vault_backup_passphrase")
        private = read_secret(fleet, m.slug, keys, "vault_backup_ssh_key")
        public = read_secret(fleet, m.slug, keys, "vault_backup_ssh_public_key")
        assert len(passphrase) >= 30 and passphrase not in seen
        seen.add(passphrase)
        key = serialization.load_ssh_private_key(private.encode(), password=None)
        derived = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        assert public == f"{derived.decode()} kallikratis-backup@{m.slug}"
        # encrypted at rest; the public half published for control's variables
        assert passphrase.encode() not in vault_file(fleet, m.slug).read_bytes()
        assert keys.paths.backup_public_key(m.slug).read_text() == public + "\n"
        assert ensure_secrets(fleet, m, keys) is False  # generated once, never again
        assert read_secret(fleet, m.slug, keys, "vault_backup_passphrase") == passphrase


def test_control_has_no_backup_secrets(fleet: model.Fleet, keys: KeyStore) -> None:
    ensure_secrets(fleet, fleet.get("control"), keys)
    assert not keys.paths.backup_public_key("control").exists()


def test_deploying_control_makes_every_municipalitys_backup_key(
    fleet: model.Fleet, keys: KeyStore, state_dir: Path
) -> None:
    prepare_stack(fleet, keys, state_dir, [fleet.get("control")])
    for m in fleet.tenants:
        assert keys.paths.backup_public_key(m.slug).read_text().startswith("ssh-ed25519 ")


# --------------------------------------------------------------------------- variables


def _vars(fleet: model.Fleet, slug: str, state_dir: Path) -> dict[str, Any]:
    return stackvars.municipality_vars(fleet, fleet.get(slug), state_dir)


def test_a_municipality_learns_its_repository_and_controls_pinned_key(
    fleet: model.Fleet, keys: KeyStore, state_dir: Path
) -> None:
    control = fleet.get("control")
    keys.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    keys.known_hosts.write_text(
        f"{control.ip} {CONTROL_KNOWN.split(' ', 1)[1]} control\n"
        "10.42.0.99 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther hersonissos\n"
    )
    store = _vars(fleet, "hersonissos", state_dir)["kallikratis_backup_store"]
    assert store["repository"] == f"ssh://borg@{control.ip}/./hersonissos"
    assert store["known_hosts"] == [f"{control.ip} {CONTROL_KNOWN.split(' ', 1)[1]}"]
    assert (store["host"], store["user"], store["slug"]) == (str(control.ip), "borg", "control")


def test_no_control_no_store(inv: InventoryCopy, state_dir: Path) -> None:
    fleet = inv.load()  # the fixture inventory without its central group
    assert _vars(fleet, "hersonissos", state_dir)["kallikratis_backup_store"] == {}


def test_control_learns_every_municipalitys_address_and_public_key(
    fleet: model.Fleet, keys: KeyStore, state_dir: Path
) -> None:
    ensure_secrets(fleet, fleet.get("hersonissos"), keys)
    clients = _vars(fleet, "control", state_dir)["kallikratis_backup_clients"]
    assert [c["slug"] for c in clients] == [m.slug for m in fleet.tenants]
    by_slug = {c["slug"]: c for c in clients}
    assert by_slug["hersonissos"]["public_key"] == read_secret(
        fleet, "hersonissos", keys, "vault_backup_ssh_public_key"
    )
    assert by_slug["minoa-pediada"]["public_key"] == ""  # not deployed yet
    assert by_slug["hersonissos"]["ip"] == str(fleet.get("hersonissos").ip)
    # no secret ever reaches the variables
    passphrase = read_secret(fleet, "hersonissos", keys, "vault_backup_passphrase")
    for slug in ("control", "hersonissos"):
        assert passphrase not in repr(_vars(fleet, slug, state_dir))


# --------------------------------------------------------------------------- templates

STORE = {
    "slug": "control",
    "host": "10.42.0.5",
    "user": "borg",
    "repository": "ssh://borg@10.42.0.5/./hersonissos",
    "known_hosts": [CONTROL_KNOWN],
}
TENANT = {
    "ansible_managed": "Ansible managed (unit test)",
    "kallikratis_slug": "hersonissos",
    "kallikratis_backup_store": STORE,
    "kallikratis_maintenance_flag": "/etc/kallikratis/maintenance",
    "vault_backup_passphrase": "unit-test-passphrase-never-in-config",
}


def _config(modules: list[str]) -> dict[str, Any]:
    target = {"file": "/etc/borgmatic/config.yaml", "repository": STORE["repository"]}
    text = render(
        "backup",
        "etc/borgmatic/config.yaml.j2",
        TENANT | {"kallikratis_modules": modules},
        backup_target=target | {"label": "control"},
    )
    assert "unit-test-passphrase-never-in-config" not in text
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def test_borgmatic_config_of_a_full_municipality() -> None:
    config = _config(["portal", "opendata", "education"])
    assert config["source_directories"] == [
        "/etc/kallikratis",
        "/var/lib/wordpress/wp-content/uploads",
        "/var/lib/kolibri",
    ]
    assert "/etc/kallikratis/maintenance" in config["exclude_patterns"]
    assert config["repositories"] == [{"path": STORE["repository"], "label": "control"}]
    assert config["mariadb_databases"] == [{"name": "wordpress", "options": "--single-transaction"}]
    assert config["sqlite_databases"] == [
        {"name": "kolibri", "path": "/var/lib/kolibri/db.sqlite3"}
    ]
    assert config["encryption_passcommand"] == "cat /etc/borgmatic/passphrase"
    assert config["archive_name_format"] == "hersonissos-{now:%Y-%m-%dT%H:%M:%S}"
    ssh = config["ssh_command"].split()
    assert (
        "StrictHostKeyChecking=yes" in ssh
        and "UserKnownHostsFile=/etc/borgmatic/known_hosts" in ssh
    )
    assert "StrictHostKeyChecking=no" not in config["ssh_command"]
    assert "keep_daily" not in config  # never pruned from the VM (append-only)


def test_borgmatic_config_without_portal_or_education_backs_up_no_database() -> None:
    config = _config(["opendata"])
    assert config["source_directories"] == ["/etc/kallikratis"]
    assert "mariadb_databases" not in config and "sqlite_databases" not in config


CLIENTS = [
    {
        "slug": "minoa-pediada",
        "ip": "10.42.0.11",
        "public_key": "ssh-ed25519 AAAAC3Nminoa kallikratis-backup@minoa-pediada",
    },
    {
        "slug": "hersonissos",
        "ip": "10.42.0.10",
        "public_key": "ssh-ed25519 AAAAC3Nherso kallikratis-backup@hersonissos",
    },
    {"slug": "archanes-asterousia", "ip": "10.42.0.12", "public_key": ""},
]


def test_authorized_keys_force_each_key_to_its_own_repository_append_only() -> None:
    text = render(
        "backupstore",
        "etc/ssh/kallikratis-backup.authorized_keys.j2",
        {"ansible_managed": "x", "kallikratis_backup_clients": CLIENTS},
    )
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        'command="borg serve --append-only --restrict-to-repository /srv/backups/hersonissos",'
        'restrict,from="10.42.0.10" ssh-ed25519 AAAAC3Nherso kallikratis-backup@hersonissos',
        'command="borg serve --append-only --restrict-to-repository /srv/backups/minoa-pediada",'
        'restrict,from="10.42.0.11" ssh-ed25519 AAAAC3Nminoa kallikratis-backup@minoa-pediada',
    ]


def test_sshd_drop_in_lets_municipalities_in_as_borg_only() -> None:
    text = render(
        "backupstore",
        "etc/ssh/sshd_config.d/90-kallikratis-backupstore.conf.j2",
        {"ansible_managed": "x", "kallikratis_backup_clients": CLIENTS},
    )
    assert (
        "Match User borg\n    AuthorizedKeysFile /etc/ssh/kallikratis-backup.authorized_keys\n"
        in text
    )
    assert "Match Address 10.42.0.11/32,10.42.0.10/32,10.42.0.12/32\n    AllowUsers borg\n" in text
    assert "PermitTTY no" in text


def _nft(**extra: Any) -> str:
    base = {
        "ansible_managed": "x",
        "kallikratis_mgmt_networks": ["10.42.0.1/32", "10.42.0.5/32"],
        "kallikratis_apt_sources": [],
    }
    return render("base", "etc/nftables.conf.j2", base, **extra)


def test_controls_firewall_opens_ssh_to_the_municipalities_only_on_control(tmp_path: Path) -> None:
    control = _nft(base_tenant_ports=[22], base_tenant_sources=["10.42.0.10", "10.42.0.11"])
    rule = (
        "ip saddr { 10.42.0.10, 10.42.0.11 } tcp dport { 22 } accept "
        'comment "municipalities: backup store"'
    )
    assert rule in control
    assert "backup store" not in _nft()  # a municipality's own firewall: nothing new
    if Path(NFT).exists():
        path = tmp_path / "nftables.conf"
        path.write_text(control)
        done = subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True, text=True)
        if "Operation not permitted" not in done.stderr:
            assert done.returncode == 0, done.stderr


def test_verify_expects_the_municipalities_on_controls_ssh_only(
    fleet: model.Fleet, state_dir: Path
) -> None:
    spec = json.loads(verify.write_spec(fleet, list(fleet.municipalities), state_dir).read_text())
    assert spec["control"]["backup_clients"] == [f"{m.ip}/32" for m in fleet.tenants]
    assert spec["hersonissos"]["backup_clients"] == []
    # control's rule as nft -j lists it: an anonymous set of the municipalities' addresses
    tenants = {"set": [str(m.ip) for m in fleet.tenants]}
    rules = [_nft_rule("@mgmt4"), _nft_rule(tenants, ports=[22])]
    sets = {"mgmt4": {"name": "mgmt4", "elem": ["10.42.0.1"]}}
    accepted = mgmt_sources_accepted(rules, sets, 22)
    assert accepted == sorted(
        ipaddress.collapse_addresses(
            [
                ipaddress.ip_network("10.42.0.1/32"),
                *(ipaddress.ip_network(m.ip) for m in fleet.tenants),
            ]
        )
    )
    assert mgmt_sources_accepted(rules, sets, 9100) == [ipaddress.ip_network("10.42.0.1/32")]


def _nft_rule(saddr: Any, ports: list[int] | None = None) -> dict[str, Any]:
    return {
        "expr": [
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": saddr,
                }
            },
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                    "right": {"set": ports or [22, 9100]},
                }
            },
            {"accept": None},
        ]
    }


STORE_UNITS = (
    "kallikratis-backup-check.service",
    "kallikratis-backup-check.timer",
    "kallikratis-backup-expire.service",
    "kallikratis-backup-expire.timer",
)


def test_controls_weekly_check_and_daily_expiry_units_pass_systemd_analyze_verify(
    tmp_path: Path,
) -> None:
    assert shutil.which("systemd-analyze"), "install the Debian package systemd"
    variables = {
        "ansible_managed": "Ansible managed",
        "kallikratis_backup_retention_after_destroy": 30,
    }
    files = {u: render("backupstore", f"etc/systemd/system/{u}.j2", variables) for u in STORE_UNITS}
    check, expire = (
        files["kallikratis-backup-check.service"],
        files["kallikratis-backup-expire.service"],
    )
    tool = (
        "/usr/bin/python3 /usr/local/sbin/kallikratis-backupstore --store /srv/backups --user borg"
    )
    assert f"ExecStart={tool} --state /var/lib/kallikratis-backupstore" in check
    assert " check --all\n" in check
    assert "--with-key" not in check  # control never holds a passphrase
    assert " expire --days 30\n" in expire
    assert "OnCalendar=Sun *-*-* 04:30:00" in files["kallikratis-backup-check.timer"]
    assert "OnCalendar=daily" in files["kallikratis-backup-expire.timer"]
    for service in (check, expire):  # sandboxed: only the store, its records, the textfiles
        assert "ProtectSystem=strict\n" in service and "PrivateNetwork=true\n" in service
        assert "ReadWritePaths=/srv/backups /var/lib/kallikratis-backupstore " in service
    proc = systemd_verify_units(tmp_path / "units", files)
    assert proc.returncode == 0, proc.stderr
    assert "kallikratis-backup" not in proc.stderr, proc.stderr
