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
        assert m.backup_remote == ""


def test_fleet_values_and_a_municipality_override(inv: InventoryCopy) -> None:
    inv.set_fleet(
        backup_keep={"daily": 14, "weekly": 8, "monthly": 12},
        backup_remote="ssh://borg@offsite.example.org:2222/./kallikratis",
    )
    inv.set_host_var_file("hersonissos", backup_keep={"daily": 30})
    inv.set_host("minoa-pediada", backup_remote="")
    fleet = inv.load()
    herso, minoa, archanes = (fleet.get(s) for s in ("hersonissos", "minoa-pediada", SLUGS[0]))
    assert archanes.backup_keep == {"daily": 14, "weekly": 8, "monthly": 12}
    # a municipality's mapping replaces the fleet's (Ansible's precedence); the rest defaults
    assert herso.backup_keep == {"daily": 30, "weekly": 4, "monthly": 6}
    assert archanes.backup_remote == "ssh://borg@offsite.example.org:2222/./kallikratis"
    assert minoa.backup_remote == ""


@pytest.mark.parametrize(
    "url",
    [
        "ssh://borg@backup.example.org/./kallikratis",
        "ssh://offsite.example.org/srv/borg",
        "ssh://u_1@10.1.2.3:22/~/repos",
        "ssh://borg@[2001:db8::5]:2222/./crete",
    ],
)
def test_remote_urls_accepted(inv: InventoryCopy, url: str) -> None:
    inv.set_fleet(backup_remote=url)
    assert inv.load().get("hersonissos").backup_remote == url


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
    "remote-not-ssh": Bad(
        lambda i: i.set_fleet(backup_remote="rsync://offsite.example.org/borg"),
        FLEET,
        "all",
        "backup_remote",
        "must be an ssh:// URL",
    ),
    "remote-newline": Bad(
        lambda i: i.set_host("hersonissos", backup_remote="ssh://borg@x.example.org/a\nb"),
        HOSTS,
        "hersonissos",
        "backup_remote",
    ),
    "remote-shell": Bad(
        lambda i: i.set_host("hersonissos", backup_remote="ssh://borg@x.example.org/a;reboot"),
        HOSTS,
        "hersonissos",
        "backup_remote",
    ),
    "remote-option-injection": Bad(
        lambda i: i.set_host("hersonissos", backup_remote="ssh://-oProxyCommand=x/a"),
        HOSTS,
        "hersonissos",
        "backup_remote",
    ),
    "remote-bad-port": Bad(
        lambda i: i.set_fleet(backup_remote="ssh://borg@x.example.org:70000/a"),
        FLEET,
        "all",
        "backup_remote",
        "port must be 1-65535",
    ),
    "remote-climbs": Bad(
        lambda i: i.set_fleet(backup_remote="ssh://borg@x.example.org/srv/../etc"),
        FLEET,
        "all",
        "backup_remote",
        "'..'",
    ),
    "remote-no-path": Bad(
        lambda i: i.set_fleet(backup_remote="ssh://borg@x.example.org"),
        FLEET,
        "all",
        "backup_remote",
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
    "remote-not-a-string": Bad(
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
