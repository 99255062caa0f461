"""The backup fields of the inventory: backup_keep, backup_remote and (fleet-wide)
backup_retention_after_destroy.

Set for the fleet in group_vars, overridable per municipality; every bad value is reported
with file, entry and field, once (exit 2), and nothing is changed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kallikratis import stackvars
from kallikratis.errors import InventoryError
from kallikratis.paths import StateDir
from support import FLEET, HERSO_VARS, HOSTS, SLUGS, Bad, InventoryCopy, assert_one_problem

# --------------------------------------------------------------------------- good values


def test_defaults_without_any_setting(inv: InventoryCopy) -> None:
    inv.edit(inv.fleet_vars, lambda d: d.pop("backup_keep", None))
    for m in inv.load().municipalities:
        assert m.backup_keep == {"daily": 7, "weekly": 4, "monthly": 6}
        assert m.backup_remote is None


#: real public keys (ssh-keygen), as a remote's operator hands them over
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPbBUa67t5vBpRnBaIsZJ3gDVwGnLUPj6I4j1T2tGiGy"
ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOWqW1HQC/ICHcaP1o7"
    "IjO/nBq1txF8sAkwrOa9aDdpjBfl9MhQwIJZoA5EtTIcGoA1VGQe9TBqDHaOwJlepJao="
)
REMOTE = {"url": "ssh://kk@offsite.example.org:2222/srv/kallikratis", "host_key": ED25519}


def test_fleet_values_and_a_municipality_override(inv: InventoryCopy) -> None:
    inv.set_fleet(backup_keep={"daily": 14, "weekly": 8, "monthly": 12}, backup_remote=REMOTE)
    inv.set_host_var_file("hersonissos", backup_keep={"daily": 30})
    inv.set_host("minoa-pediada", backup_remote={})
    fleet = inv.load()
    herso, minoa, archanes = (fleet.get(s) for s in ("hersonissos", "minoa-pediada", SLUGS[0]))
    assert archanes.backup_keep == {"daily": 14, "weekly": 8, "monthly": 12}
    # a municipality's mapping replaces the fleet's (Ansible's precedence); the rest defaults
    assert herso.backup_keep == {"daily": 30, "weekly": 4, "monthly": 6}
    remote = archanes.backup_remote
    assert remote is not None and minoa.backup_remote is None
    assert (remote.user, remote.host, remote.port, remote.path) == (
        "kk",
        "offsite.example.org",
        2222,
        "/srv/kallikratis",
    )
    assert (
        remote.repository("archanes")
        == "ssh://kk@offsite.example.org:2222/srv/kallikratis/archanes"
    )
    assert remote.repository_path("archanes") == "/srv/kallikratis/archanes"
    assert remote.known_hosts_line() == f"[offsite.example.org]:2222 {ED25519}"


@pytest.mark.parametrize(
    ("url", "key", "known"),
    [
        ("ssh://borg@backup.example.org/srv/borg", ED25519, f"backup.example.org {ED25519}"),
        ("ssh://u_1@10.1.2.3:22/repos", ECDSA, f"10.1.2.3 {ECDSA}"),
        ("ssh://borg@[2001:db8::5]:2222/crete", ED25519, f"[2001:db8::5]:2222 {ED25519}"),
        # a comment after the key is dropped: only "type key" is pinned
        ("ssh://borg@10.1.2.3/b", ED25519 + " root@offsite", f"10.1.2.3 {ED25519}"),
    ],
)
def test_remotes_accepted_and_their_host_key_line(
    inv: InventoryCopy, url: str, key: str, known: str
) -> None:
    inv.set_fleet(backup_remote={"url": url, "host_key": key})
    remote = inv.load().get("hersonissos").backup_remote
    assert remote is not None and remote.url == url
    assert remote.known_hosts_line() == known


def test_retention_after_destroy_is_fleet_wide_and_reaches_control(
    inv: InventoryCopy, state_dir: Path
) -> None:
    inv.edit(inv.fleet_vars, lambda d: d.pop("backup_retention_after_destroy", None))
    inv.add_central()
    assert inv.load().backup_retention_after_destroy == 90
    inv.set_fleet(backup_retention_after_destroy=400)
    fleet = inv.load()
    assert fleet.backup_retention_after_destroy == 400
    control = fleet.get("control")
    got = stackvars.backup_vars(fleet, control, StateDir(state_dir).fleet(fleet.name))
    assert got["kallikratis_backup_retention_after_destroy"] == 400


# --------------------------------------------------------------------------- bad values

BAD: dict[str, Bad] = {
    "keep-not-a-mapping": Bad(
        lambda i: i.set_fleet(backup_keep=7), FLEET, "all", "backup_keep", "must be a mapping"
    ),
    "keep-empty-mapping": Bad(
        lambda i: i.set_host("hersonissos", backup_keep={}), HOSTS, "hersonissos", "backup_keep"
    ),
    "keep-unknown-key": Bad(
        lambda i: i.set_host("hersonissos", backup_keep={"daily": 7, "yearly": 2}),
        HOSTS,
        "hersonissos",
        "backup_keep",
        "unknown keys ['yearly']",
    ),
    "keep-zero": Bad(
        lambda i: i.set_host_var_file("hersonissos", backup_keep={"daily": 0}),
        HERSO_VARS,
        "hersonissos",
        "backup_keep.daily",
        "positive integer",
    ),
    "keep-string": Bad(
        lambda i: i.set_fleet(backup_keep={"daily": 7, "weekly": "4"}),
        FLEET,
        "all",
        "backup_keep.weekly",
        "'4'",
    ),
    "keep-boolean": Bad(
        lambda i: i.set_host("hersonissos", backup_keep={"monthly": True}),
        HOSTS,
        "hersonissos",
        "backup_keep.monthly",
    ),
    "keep-negative": Bad(
        lambda i: i.set_host("hersonissos", backup_keep={"weekly": -1}),
        HOSTS,
        "hersonissos",
        "backup_keep.weekly",
    ),
    "remote-a-plain-url": Bad(
        lambda i: i.set_fleet(backup_remote="ssh://kk@offsite.example.org/srv/kallikratis"),
        FLEET,
        "all",
        "backup_remote",
        "must be a mapping",
    ),
    "remote-not-ssh": Bad(
        lambda i: i.set_fleet(backup_remote=REMOTE | {"url": "rsync://offsite.example.org/borg"}),
        FLEET,
        "all",
        "backup_remote.url",
        "must be an ssh:// URL",
    ),
    "remote-newline": Bad(
        lambda i: i.set_host("hersonissos", backup_remote=REMOTE | {"url": "ssh://b@x.org/a\nb"}),
        HOSTS,
        "hersonissos",
        "backup_remote.url",
    ),
    "remote-shell": Bad(
        lambda i: i.set_host(
            "hersonissos", backup_remote=REMOTE | {"url": "ssh://b@x.org/a;reboot"}
        ),
        HOSTS,
        "hersonissos",
        "backup_remote.url",
    ),
    "remote-option-injection": Bad(
        lambda i: i.set_host(
            "hersonissos", backup_remote=REMOTE | {"url": "ssh://-oProxyCommand=x/a"}
        ),
        HOSTS,
        "hersonissos",
        "backup_remote.url",
    ),
    "remote-no-user": Bad(
        lambda i: i.set_fleet(backup_remote=REMOTE | {"url": "ssh://offsite.example.org/srv/k"}),
        FLEET,
        "all",
        "backup_remote.url",
        "must name the remote's login",
    ),
    "remote-bad-port": Bad(
        lambda i: i.set_fleet(backup_remote=REMOTE | {"url": "ssh://b@x.example.org:70000/a"}),
        FLEET,
        "all",
        "backup_remote.url",
        "port must be 1-65535",
    ),
    "remote-climbs": Bad(
        lambda i: i.set_fleet(backup_remote=REMOTE | {"url": "ssh://b@x.example.org/srv/../etc"}),
        FLEET,
        "all",
        "backup_remote.url",
        "'..'",
    ),
    "remote-relative-path": Bad(
        lambda i: i.set_fleet(backup_remote=REMOTE | {"url": "ssh://b@x.example.org/./k"}),
        FLEET,
        "all",
        "backup_remote.url",
        "path must be absolute and plain",
    ),
    "remote-no-path": Bad(
        lambda i: i.set_fleet(backup_remote=REMOTE | {"url": "ssh://b@x.example.org"}),
        FLEET,
        "all",
        "backup_remote.url",
    ),
    "remote-missing-host-key": Bad(
        lambda i: i.set_fleet(backup_remote={"url": REMOTE["url"]}),
        FLEET,
        "all",
        "backup_remote.host_key",
        "never trusted on first use",
    ),
    "remote-host-key-not-base64": Bad(
        lambda i: i.set_host(
            "hersonissos", backup_remote=REMOTE | {"host_key": "ssh-ed25519 AA*A"}
        ),
        HOSTS,
        "hersonissos",
        "backup_remote.host_key",
        "not valid base64",
    ),
    "remote-host-key-of-another-type": Bad(
        lambda i: i.set_fleet(backup_remote=REMOTE | {"host_key": "ssh-rsa " + ED25519.split()[1]}),
        FLEET,
        "all",
        "backup_remote.host_key",
        "is not a ssh-rsa key",
    ),
    "remote-host-key-a-private-key": Bad(
        lambda i: i.set_fleet(
            backup_remote=REMOTE | {"host_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}
        ),
        FLEET,
        "all",
        "backup_remote.host_key",
        "must be one public host key",
    ),
    "remote-unknown-key": Bad(
        lambda i: i.set_fleet(backup_remote=REMOTE | {"prune": True}),
        FLEET,
        "all",
        "backup_remote",
        "unknown keys ['prune']",
    ),
    "restore-test-network-not-a-network": Bad(
        lambda i: i.set_fleet(restore_test_network="10.77.250.1/28"),
        FLEET,
        "all",
        "restore_test_network",
        "host bits set",
    ),
    "restore-test-network-too-small": Bad(
        lambda i: i.set_fleet(restore_test_network="10.77.250.0/30"),
        FLEET,
        "all",
        "restore_test_network",
        "private /24 to /29",
    ),
    "restore-test-network-public": Bad(
        lambda i: i.set_fleet(restore_test_network="8.8.8.0/28"),
        FLEET,
        "all",
        "restore_test_network",
        "private /24 to /29",
    ),
    "restore-test-network-on-the-fleet-network": Bad(
        lambda i: i.set_fleet(restore_test_network="10.42.0.16/28"),
        FLEET,
        "all",
        "restore_test_network",
        "overlaps the fleet network 10.42.0.0/24",
    ),
    "restore-test-network-for-one-municipality": Bad(
        lambda i: i.set_host("hersonissos", restore_test_network="10.77.251.0/28"),
        HOSTS,
        "hersonissos",
        "restore_test_network",
        "fleet-wide setting",
    ),
    "retention-zero": Bad(
        lambda i: i.set_fleet(backup_retention_after_destroy=0),
        FLEET,
        "all",
        "backup_retention_after_destroy",
        "from 1 to 36500, got 0",
    ),
    "retention-string": Bad(
        lambda i: i.set_fleet(backup_retention_after_destroy="90d"),
        FLEET,
        "all",
        "backup_retention_after_destroy",
        "'90d'",
    ),
    "retention-boolean": Bad(
        lambda i: i.set_fleet(backup_retention_after_destroy=True),
        FLEET,
        "all",
        "backup_retention_after_destroy",
    ),
    "retention-for-one-municipality": Bad(
        lambda i: i.set_host("hersonissos", backup_retention_after_destroy=30),
        HOSTS,
        "hersonissos",
        "backup_retention_after_destroy",
        "fleet-wide setting",
    ),
    "retention-in-a-host-vars-file": Bad(
        lambda i: i.set_host_var_file("hersonissos", backup_retention_after_destroy=30),
        HERSO_VARS,
        "hersonissos",
        "backup_retention_after_destroy",
        "group_vars/all",
    ),
    "remote-a-list": Bad(
        lambda i: i.set_fleet(backup_remote=["ssh://x.example.org/a"]),
        FLEET,
        "all",
        "backup_remote",
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


def test_validate_command_exits_2_naming_the_field(inv: InventoryCopy, tmp_path: Path) -> None:
    inv.set_host("hersonissos", backup_keep={"daily": 0})
    done = subprocess.run(
        [sys.executable, "-m", "kallikratis.cli", "-i", str(inv.root), "validate"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(Path(__file__).parents[2] / "cli"), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{inv.hosts}: hersonissos: backup_keep.daily" in done.stdout + done.stderr


def test_the_restore_test_network_defaults_apart_from_the_fleet_network(inv: InventoryCopy) -> None:
    assert str(inv.load().restore_test_network) == "10.77.250.0/28"
    inv.set_fleet(restore_test_network="192.168.250.0/29")
    assert str(inv.load().restore_test_network) == "192.168.250.0/29"
    inv.edit(inv.fleet_vars, lambda d: d.pop("restore_test_network"))
    inv.edit(
        inv.fleet_vars,
        lambda d: d["fleet_network"].update(
            cidr="10.77.0.0/16", gateway="10.77.0.1", dns=["10.77.0.1"]
        ),
    )
    assert str(inv.load().restore_test_network) == "10.78.250.0/28"
