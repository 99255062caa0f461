"""Real VMs: up, pinned SSH, idempotence, kill -9 convergence, onboarding, destroy, and the
whole life of a municipality's data.

Works on the shared booted fleet (read-only) and on the scratch municipality, which this module
adds to the inventory (one new entry: the onboarding story), kills in the middle of `up`,
onboards with `opendata` off (its "absent" path) and unattended upgrades on. A post with a
comment, an upload and a Kolibri learner are made on it; `destroy` takes a final backup; the
same entry is onboarded again and `restore` brings all four back, `verify` green.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.e2e import portal_content as content
from tests.e2e.conftest import (
    CONTROL,
    FLEET,
    POOL,
    SCRATCH,
    SLUGS,
    VMS,
    Booted,
    Fleet,
    dhcp_hosts,
    our_domains,
    our_volumes,
)

# the shared VMs as deployed (running, the pristine inventory) when an earlier module changed them
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("at_base")]


def expected_volumes(slugs: list[str]) -> set[str]:
    """Each VM's disk and seed, and control's own backup-store volume."""
    volumes = {f"{FLEET}-{s}{suffix}" for s in slugs for suffix in (".qcow2", "-seed.iso")}
    return volumes | {f"{FLEET}-{CONTROL}-backups.qcow2" for s in slugs if s == CONTROL}


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


#: the scratch municipality's story across this module's tests (they run in file order)
STORY: dict[str, object] = {}


@pytest.fixture(scope="module")
def scratch(booted: Booted) -> Iterator[Fleet]:
    """The scratch municipality as one new inventory entry; entry and VM removed afterwards."""
    fleet = booted.fleet
    fleet.set_host(
        SCRATCH,
        display_name="Δήμος Μινώα Πεδιάδας",
        # opendata off (its "absent" path runs); portal and education on: the data that the
        # whole cycle below backs up, loses with the VM and restores
        modules=["portal", "education"],
        base_unattended_upgrades=True,
    )
    STORY.clear()
    try:
        yield fleet
    finally:
        fleet.kk("destroy", SCRATCH, "--yes", "--no-final-backup", check=False, timeout=600)
        fleet.remove_host(SCRATCH)


@pytest.mark.parametrize(
    "kill_at", [pytest.param("creating disk", marks=pytest.mark.extended), "waiting for SSH"]
)
def test_kill_9_midway_then_up_converges(
    scratch: Fleet, conn: libvirt.virConnect, kill_at: str
) -> None:
    scratch.kk("destroy", SCRATCH, "--yes", "--no-final-backup")  # never deployed: no data
    assert f"{FLEET}-{SCRATCH}" not in our_domains(conn)
    run = scratch.popen("up", SCRATCH)
    seen = run.wait_for(kill_at, timeout=300)
    run.signal(signal.SIGKILL, group=True)
    run.finish(timeout=30)
    assert seen, f"never saw {kill_at!r}:\n{run.stderr[-3000:]}"
    out = scratch.kk_json("up", "--all", timeout=900)
    results = {r["slug"]: r["result"] for r in out["results"]}
    details = {r["slug"]: r["detail"] for r in out["results"]}
    # killed before its first boot was confirmed, the VM still had the key in its seed: the
    # converging `up` confirms the pinned key and retires the seed ("changed")
    assert results[SCRATCH] in ("created", "started", "unchanged", "changed"), results
    if results[SCRATCH] == "changed":
        assert "seed" in details[SCRATCH], details
    assert {results[s] for s in SLUGS} == {"unchanged"}
    assert scratch.kk("ssh", SCRATCH, "--", "hostname").stdout.strip() == SCRATCH
    assert our_domains(conn) == {f"{FLEET}-{s}" for s in [*VMS, SCRATCH]}
    assert our_volumes(conn) == expected_volumes([*VMS, SCRATCH])
    assert scratch.kk_json("plan")["orphans"] == []


def test_onboard_with_a_module_off_and_unattended_upgrades(scratch: Fleet) -> None:
    """One entry with `modules: [portal, education]`: onboard (up, deploy, verify) brings it
    online with WordPress and Kolibri and without Datasette, unattended upgrades on. Then a
    citizen's and an employee's data is made on it, for the whole cycle below."""
    done = scratch.kk("onboard", SCRATCH, timeout=1800)
    assert f"{SCRATCH} is online" in done.stdout, done.stdout[-3000:]
    domain = f"{SCRATCH}.e2e.kallikratis.test"
    checks = {
        "kolibri": "systemctl is-active kolibri",
        "portal config": f"test -e /etc/wordpress/config-{domain}.php",
        "no datasette": "! systemctl is-active --quiet datasette",
        "no opendata snippet": "test ! -e /etc/nginx/kallikratis.d/opendata.conf",
        "unattended upgrades": "systemctl is-enabled unattended-upgrades",
        "periodic": "apt-config dump APT::Periodic::Unattended-Upgrade | grep -q '\"1\"'",
    }
    script = "; ".join(f"if {cmd} >/dev/null; then echo 'ok {n}'; fi" for n, cmd in checks.items())
    out = scratch.ssh(SCRATCH, script)
    assert {f"ok {n}" for n in checks} == set(out.splitlines()), out
    made = content.make(scratch, SCRATCH, domain)
    assert content.all_present(scratch, made)
    STORY["made"] = made


def test_keys_rotate_replaces_the_automation_key(scratch: Fleet, tmp_path: Path) -> None:
    """On the scratch VM and a copy of the state directory (the shared VMs' base snapshot only
    knows the session's key, so they keep it)."""
    copy = tmp_path / "state"
    shutil.copytree(scratch.state, copy, ignore=shutil.ignore_patterns("cp"))
    rotated = Fleet(scratch.inventory, copy, dict(scratch.env, KALLIKRATIS_STATE_DIR=str(copy)))
    before = (copy / "ssh" / "id_ed25519.pub").read_text()
    out = rotated.kk_json("keys", "rotate", SCRATCH, timeout=600)
    assert [(r["slug"], r["result"]) for r in out["results"]] == [(SCRATCH, "rotated")], out
    assert (copy / "ssh" / "id_ed25519.pub").read_text() != before
    assert rotated.kk("ssh", SCRATCH, "--", "hostname").stdout.strip() == SCRATCH
    ip = scratch.sites()[SCRATCH][0]
    old_key = scratch.state / "ssh" / "id_ed25519"  # the session's key, before the rotation
    refused = subprocess.run(
        [
            "ssh", "-i", str(old_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", f"UserKnownHostsFile={copy / 'fleets' / FLEET / 'known_hosts'}",
            "-o", "ConnectTimeout=20", f"kallikratis@{ip}", "true",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
    # the session's key back on the scratch VM (test set-up, not the product): the next test's
    # `destroy` takes a final backup over SSH with the session's state directory
    append = f"printf '%s\\n' {shlex.quote(before.strip())} >> ~/.ssh/authorized_keys"
    rotated.kk("ssh", SCRATCH, "--", append)
    assert scratch.kk("ssh", SCRATCH, "--", "hostname").stdout.strip() == SCRATCH


def test_destroy_leaves_nothing_of_it(scratch: Fleet, conn: libvirt.virConnect) -> None:
    ip = scratch.sites()[SCRATCH][0]
    golden = {v.name() for v in conn.storagePoolLookupByName(POOL).listAllVolumes()}
    golden = {v for v in golden if v.startswith("golden-")}
    done = scratch.kk("destroy", SCRATCH, "--yes", "--json", timeout=900)
    out = json.loads(done.stdout)
    assert {r["result"] for r in out["results"]} == {"destroyed"}
    # a final backup first, named; its repository on control outlives the VM
    final = re.search(rf"final backup of {SCRATCH}: ({SCRATCH}-\S+)", done.stderr)
    assert final, done.stderr[-3000:]
    assert final.group(1) in out["results"][0]["detail"], out
    kept = scratch.kk_json("backups", SCRATCH)["archives"]
    assert final.group(1) in [a["name"] for a in kept], kept
    assert f"{FLEET}-{SCRATCH}" not in our_domains(conn)
    assert our_volumes(conn) == expected_volumes(VMS)
    assert SCRATCH not in dhcp_hosts(conn)
    known = (scratch.state / "fleets" / FLEET / "known_hosts").read_text().splitlines()
    assert ip not in {line.split()[0] for line in known if line.strip()}
    left = {v.name() for v in conn.storagePoolLookupByName(POOL).listAllVolumes()}
    assert golden and golden <= left, "the golden image must stay"
    again = scratch.kk_json("destroy", SCRATCH, "--yes")
    assert {r["result"] for r in again["results"]} == {"absent"}
    STORY["final"] = final.group(1)


def test_onboarded_again_and_restored_everything_is_back(scratch: Fleet) -> None:
    """The whole cycle: what was made before `destroy` is in its final backup; the same entry
    onboarded again is a new VM without it; `restore` (the newest archive: the final one)
    brings the post, the comment, the upload and the learner back, and `verify` is green."""
    made, final = STORY.get("made"), STORY.get("final")
    assert isinstance(made, content.Made) and final, "needs the onboard and destroy tests"
    done = scratch.kk("onboard", SCRATCH, timeout=1800)
    assert f"{SCRATCH} is online" in done.stdout, done.stdout[-3000:]
    assert not any(content.present(scratch, made).values()), "a new VM has none of it"
    restored = scratch.kk_json("restore", SCRATCH, "--yes", timeout=1200)
    assert restored["result"] == "restored" and not restored["reverted"], restored
    assert restored["archive"] == final, restored
    assert content.all_present(scratch, made), content.present(scratch, made)
    flag = scratch.ssh(SCRATCH, "test -e /etc/kallikratis/maintenance && echo on || echo off")
    assert flag.strip() == "off"
    checks = scratch.kk_json("verify", SCRATCH)["checks"]
    assert [c["name"] for c in checks if not c["passed"]] == []
