"""Real VMs: up, pinned SSH, idempotence, kill -9 convergence, destroy. In this order."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET

import libvirt
import pytest

from tests.e2e.conftest import FLEET, Fleet

pytestmark = pytest.mark.e2e
SLUGS = ["archanes-asterousia", "minoa-pediada", "hersonissos"]
POOL = "kallikratis"


def our_domains(conn: libvirt.virConnect) -> set[str]:
    return {d.name() for d in conn.listAllDomains() if d.name().startswith(f"{FLEET}-")}


def our_volumes(conn: libvirt.virConnect) -> set[str]:
    pool = conn.storagePoolLookupByName(POOL)
    pool.refresh()
    return {v.name() for v in pool.listAllVolumes() if v.name().startswith(f"{FLEET}-")}


def dhcp_hosts(conn: libvirt.virConnect) -> set[str]:
    xml = conn.networkLookupByName("kallikratis-e2e").XMLDesc(0)
    return {h.get("name", "") for h in ET.fromstring(xml).iterfind("./ip/dhcp/host")}


def expected_volumes(slugs: list[str]) -> set[str]:
    return {f"{FLEET}-{s}{suffix}" for s in slugs for suffix in (".qcow2", "-seed.iso")}


def test_up_creates_every_municipality(fleet: Fleet, conn: libvirt.virConnect) -> None:
    out = fleet.kk_json("up", "--all")
    results = {r["slug"]: r for r in out["results"]}
    assert set(results) == set(SLUGS)
    for slug, r in results.items():
        assert r["result"] == "created", (slug, r)
        assert r["ssh_seconds"] is not None and r["ssh_seconds"] > 0
    assert our_domains(conn) == {f"{FLEET}-{s}" for s in SLUGS}
    assert our_volumes(conn) == expected_volumes(SLUGS)
    assert dhcp_hosts(conn) >= set(SLUGS)


def test_disks_are_copy_on_write_overlays(conn: libvirt.virConnect) -> None:
    pool = conn.storagePoolLookupByName(POOL)
    for slug in SLUGS:
        vol = pool.storageVolLookupByName(f"{FLEET}-{slug}.qcow2")
        root = ET.fromstring(vol.XMLDesc(0))
        backing = root.findtext("./backingStore/path") or ""
        assert "/golden-" in backing, backing
        assert vol.info()[2] < 100 * 2**20, f"{slug} overlay uses {vol.info()[2]} bytes"


def test_ssh_with_pinned_host_key(fleet: Fleet) -> None:
    for slug in SLUGS:
        done = fleet.kk("ssh", slug, "--", "hostname")
        assert done.stdout.strip() == slug


def test_wrong_host_key_is_refused(fleet: Fleet, tmp_path) -> None:
    """Pinning is real: the same login with another key pinned for that address fails."""
    known = (fleet.state / "fleets" / FLEET / "known_hosts").read_text().splitlines()
    assert known and all(len(line.split()) == 3 for line in known)
    ip = known[0].split()[0]
    other = (fleet.state / "fleets" / FLEET / "known_hosts").read_text().splitlines()[1].split()
    bad = tmp_path / "known_hosts"
    bad.write_text(f"{ip} {other[1]} {other[2]}\n")
    done = subprocess.run(
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={bad}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-i",
            str(fleet.state / "ssh" / "id_ed25519"),
            f"kallikratis@{ip}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "host key" in done.stderr.lower()


def test_second_up_changes_nothing(fleet: Fleet, conn: libvirt.virConnect) -> None:
    before = {
        n: conn.lookupByName(n).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for n in our_domains(conn)
    }
    out = fleet.kk_json("up", "--all")
    assert {r["result"] for r in out["results"]} == {"unchanged"}
    after = {
        n: conn.lookupByName(n).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for n in our_domains(conn)
    }
    assert before == after
    plan = fleet.kk_json("plan")
    assert {i["action"] for i in plan["items"]} == {"unchanged"} and plan["orphans"] == []


def test_status_reports_running_fleet(fleet: Fleet) -> None:
    rows = {r["slug"]: r for r in fleet.kk_json("status")["municipalities"]}
    assert set(rows) == set(SLUGS)
    for r in rows.values():
        assert r["state"] == "running" and r["drift"] == [] and r["image"]
        assert r["uptime_s"] is not None and r["uptime_s"] >= 0


@pytest.mark.parametrize("kill_at", ["creating disk", "waiting for SSH"])
def test_kill_9_midway_then_up_converges(
    fleet: Fleet, conn: libvirt.virConnect, kill_at: str
) -> None:
    slug = "minoa-pediada"
    fleet.kk("destroy", slug, "--yes")
    assert f"{FLEET}-{slug}" not in our_domains(conn)
    proc = fleet.popen("up", slug)
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if kill_at in line or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert any(kill_at in line for line in seen), "".join(seen)
    out = fleet.kk_json("up", "--all")
    results = {r["slug"]: r["result"] for r in out["results"]}
    assert results[slug] in ("created", "started", "unchanged"), results
    assert {results[s] for s in SLUGS if s != slug} == {"unchanged"}
    assert fleet.kk("ssh", slug, "--", "hostname").stdout.strip() == slug
    assert our_domains(conn) == {f"{FLEET}-{s}" for s in SLUGS}
    assert our_volumes(conn) == expected_volumes(SLUGS)
    assert fleet.kk_json("plan")["orphans"] == []


def test_destroy_all_leaves_nothing(fleet: Fleet, conn: libvirt.virConnect) -> None:
    golden_before = {
        v
        for v in (p.name() for p in conn.storagePoolLookupByName(POOL).listAllVolumes())
        if v.startswith("golden-")
    }
    out = fleet.kk_json("destroy", "--all", "--yes")
    assert {r["result"] for r in out["results"]} == {"destroyed"}
    assert our_domains(conn) == set()
    assert our_volumes(conn) == set()
    assert dhcp_hosts(conn) & set(SLUGS) == set()
    golden_after = {
        v.name()
        for v in conn.storagePoolLookupByName(POOL).listAllVolumes()
        if v.name().startswith("golden-")
    }
    assert golden_before and golden_before <= golden_after
    again = fleet.kk_json("destroy", "--all", "--yes")
    assert {r["result"] for r in again["results"]} == {"absent"}
