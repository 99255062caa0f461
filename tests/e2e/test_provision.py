"""Real VMs: up, copy-on-write disks, pinned SSH, retired seeds, a private state directory,
idempotence and status, on the shared booted fleet (read-only).

The scratch municipality's life (kill -9 in the middle of `up`, onboarding, restore-test,
destroy, restore) is test_lifecycle's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from tests.e2e.conftest import (
    FLEET,
    POOL,
    SLUGS,
    VMS,
    Booted,
    dhcp_hosts,
    expected_volumes,
    our_domains,
    our_volumes,
)

# the shared VMs as deployed (running, the pristine inventory) when an earlier module changed them
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("at_base")]


def test_up_created_every_municipality(booted: Booted, conn: libvirt.virConnect) -> None:
    results = {r["slug"]: r for r in booted.up["results"]}
    assert set(results) == set(VMS)  # the municipalities and the central control VM
    for slug, r in results.items():
        assert r["result"] == "created", (slug, r)
        assert r["ssh_seconds"] is not None and r["ssh_seconds"] > 0
    assert our_domains(conn) >= {f"{FLEET}-{s}" for s in VMS}
    assert our_volumes(conn) >= expected_volumes(VMS)
    assert dhcp_hosts(conn) >= set(VMS)


def test_disks_are_copy_on_write_overlays(booted: Booted, conn: libvirt.virConnect) -> None:
    pool = conn.storagePoolLookupByName(POOL)
    for slug in SLUGS:
        vol = pool.storageVolLookupByName(f"{FLEET}-{slug}.qcow2")
        root = ET.fromstring(vol.XMLDesc(0))
        backing = root.findtext("./backingStore/path") or ""
        assert "/golden-" in backing, backing


def test_ssh_with_pinned_host_key(booted: Booted) -> None:
    for slug in VMS:
        assert booted.fleet.kk("ssh", slug, "--", "hostname").stdout.strip() == slug


def test_no_private_key_stays_in_a_seed_after_the_first_boot(
    booted: Booted, conn: libvirt.virConnect
) -> None:
    """`up` confirmed each VM's pinned host key, then rewrote its seed without the key."""
    pool = conn.storagePoolLookupByName(POOL)
    for slug in SLUGS:
        seed = Path(pool.storageVolLookupByName(f"{FLEET}-{slug}-seed.iso").path()).read_bytes()
        assert b"instance-id" in seed, "not a seed"  # the right volume, still attached
        assert b"PRIVATE KEY" not in seed, f"{slug}: a private key is still in its seed"
        xml = conn.lookupByName(f"{FLEET}-{slug}").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert ">retired</" in xml and "seed>" in xml, f"{slug}: seed not marked retired"


def _open_to_others(path: Path, root: Path) -> bool:
    """Can a user other than root (group or other) read *path*: read bits on it and search
    bits on every directory from *root* down to it?"""
    for bits in (0o040 | 0o010, 0o004 | 0o001):  # group, other
        read = bits & 0o044
        dirs = [path.parent, *[p for p in path.parent.parents if root in (p, *p.parents)]]
        if path.stat().st_mode & read and all(d.stat().st_mode & (bits & 0o011) for d in dirs):
            return True
    return False


def test_the_state_directory_is_private(booted: Booted) -> None:
    state = booted.fleet.state
    # runs/ exists once a playbook ran (an earlier module's deploy; not when this one runs alone)
    runs = [state / "runs"] if (state / "runs").exists() else []
    for d in (state, state / "fleets", state / "cp", *runs):
        assert d.stat().st_mode & 0o777 == 0o700, d  # the SSH control sockets live in cp/
    files = [p for p in state.rglob("*") if p.is_file() and not p.is_socket()]
    assert files and not [f for f in files if _open_to_others(f, state)]


def test_second_up_changes_nothing(booted: Booted, conn: libvirt.virConnect) -> None:
    fleet = booted.fleet
    names = {f"{FLEET}-{s}" for s in VMS}
    before = {n: conn.lookupByName(n).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for n in names}
    out = fleet.kk_json("up", "--all")
    assert {r["result"] for r in out["results"]} == {"unchanged"}
    after = {n: conn.lookupByName(n).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for n in names}
    assert before == after
    plan = fleet.kk_json("plan")
    assert {i["action"] for i in plan["items"]} == {"unchanged"} and plan["orphans"] == []


def test_status_reports_running_fleet(booted: Booted) -> None:
    rows = {r["slug"]: r for r in booted.fleet.kk_json("status")["municipalities"]}
    assert set(rows) == set(VMS)
    for r in rows.values():
        assert r["state"] == "running" and r["drift"] == [] and r["image"]
        assert r["uptime_s"] is not None and r["uptime_s"] >= 0
