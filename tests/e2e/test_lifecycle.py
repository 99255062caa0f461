"""Real VMs: the whole life of a municipality, on the scratch municipality alone, and beside
it the proof of another municipality's backups.

One new inventory entry (the onboarding story): `up` killed in the middle then converged; onboarded
with `opendata` off (its "absent" path) and unattended upgrades on; a post with a comment, an
upload and a Kolibri learner made on it; the automation key rotated; `destroy` takes a final
backup; the same entry brought up and deployed again, and `restore` brings all four back from
that archive, its own `verify` green.

Meanwhile (``proof``, a background thread started with the onboarding), hersonissos gets a post
with a comment, an upload and a learner, is backed up, and `restore-test` proves that archive
in a throwaway VM while hersonissos keeps serving; the last test joins it. Both stories are
single-VM work (one vCPU each: a lone first deploy leaves about 40 % of the two host cores
idle, measured), so side by side they share the machine instead of queueing; they lock
different municipalities, as two sysadmins' runs would.

It works on the deployed shared fleet only through control (backup store) and hersonissos;
archanes-asterousia is powered off from the onboarding on (``quiet``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from kallikratis.patchmetrics import TEXTFILE_DIR

from tests.e2e import portal_content as content
from tests.e2e.conftest import (
    CONTROL,
    FLEET,
    POOL,
    SCRATCH,
    SLUGS,
    VMS,
    Deployed,
    Fleet,
    Running,
    dhcp_hosts,
    expected_volumes,
    our_domains,
    our_volumes,
)

pytestmark = pytest.mark.e2e
#: one throwaway VM: up (~80 s), a first deploy (~5 min under TCG), the relay, verify
RESTORE_TEST_TIMEOUT = 2400
#: whose backups the restore test proves: a shared municipality with every module, which keeps
#: serving meanwhile (the scratch one is busy with its own story)
PROVEN = "hersonissos"
#: what a lifecycle test may see of the restore test's throwaway while it runs (derived fleet
#: `<fleet>-rt`): its domain and volumes are not the scratch story's
THROWAWAY = f"{FLEET[:17].rstrip('-')}-rt-{PROVEN}-rt"


#: the scratch municipality's story across this module's tests (they run in file order)
STORY: dict[str, object] = {}


@pytest.fixture(scope="module")
def scratch(fresh: Deployed) -> Iterator[Fleet]:
    """The scratch municipality as one new inventory entry; entry and VM removed afterwards.
    On the deployed fleet: control holds the backup store that the story backs up into."""
    fleet = fresh.fleet
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


@pytest.fixture(scope="module")
def quiet(scratch: Fleet, conn: libvirt.virConnect) -> None:
    """The shared municipality that neither story needs powered off for the rest of the module
    (from the onboarding on): under TCG an idle municipality costs 10-18 % of a host core (the
    exporters, the probes) while the two stories keep both cores busy. The next module's
    `claim()` reverts it to the base snapshot, as after test_backup's shut-off VM."""
    for slug in SLUGS:
        dom = conn.lookupByName(f"{FLEET}-{slug}")
        if slug != PROVEN and dom.isActive():
            dom.destroy()


@dataclass
class Proof:
    """What the background restore test of PROVEN saw before and got."""

    made: content.Made
    archive: str
    boot: str
    comment_id: str
    learners: int
    run: dict


class Background:
    """The restore test's thread; its `kallikratis restore-test` process, so teardown can stop
    it (SIGINT: the command removes its throwaway on Ctrl-C too)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="restore-test")
        self.running: Running | None = None
        self.stopping = threading.Event()

    def prove(self, fleet: Fleet) -> Proof:
        domain = f"{PROVEN}.e2e.kallikratis.test"
        made = content.make(fleet, PROVEN, domain)
        assert content.all_present(fleet, made)
        backup = {m["slug"]: m for m in fleet.kk_json("backup", PROVEN)["municipalities"]}
        assert backup[PROVEN]["result"] == "ok", backup
        newest = backup[PROVEN]["archive"]["name"]
        assert fleet.kk_json("backups", PROVEN)["archives"][-1]["name"] == newest
        boot = fleet.ssh(PROVEN, "cat /proc/sys/kernel/random/boot_id").strip()
        comment_id = content.php(
            fleet,
            PROVEN,
            domain,
            f' $c = get_comments(["search" => "{made.comment}", "status" => "approve"]);'
            " echo $c ? $c[0]->comment_ID : 0;",
        )
        learners = fleet.ssh(
            PROVEN,
            "sudo sqlite3 /var/lib/kolibri/db.sqlite3 "
            "'select count(*) from kolibriauth_facilityuser'",
        )
        if self.stopping.is_set():
            raise RuntimeError("stopped before the restore test")
        self.running = fleet.popen("restore-test", PROVEN, "--json")
        rc, out, err = self.running.finish(timeout=RESTORE_TEST_TIMEOUT)
        assert rc == 0 and out.strip(), f"restore-test exit {rc}:\n{err[-3000:]}"
        return Proof(made, newest, boot, comment_id.strip(), int(learners.strip()), json.loads(out))

    def stop(self) -> None:
        self.stopping.set()
        if self.running is not None:
            self.running.signal(signal.SIGINT)
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def proof(scratch: Fleet) -> Iterator[Future[Proof]]:
    """PROVEN's content, backup and restore test, running in the background from the first test
    that asks for it (the onboarding) until the last one joins it. Only commands that lock other
    municipalities run meanwhile (no `--all`) and nothing reverts the fleet."""
    background = Background()
    try:
        yield background.pool.submit(background.prove, scratch)
    finally:
        background.stop()


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
    assert all(results[s] == "unchanged" for s in VMS), results
    assert scratch.kk("ssh", SCRATCH, "--", "hostname").stdout.strip() == SCRATCH
    assert our_domains(conn) == {f"{FLEET}-{s}" for s in [*VMS, SCRATCH]}
    assert our_volumes(conn) == expected_volumes([*VMS, SCRATCH])
    assert scratch.kk_json("plan")["orphans"] == []


@pytest.mark.usefixtures("quiet", "proof")
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
    # not what the background restore test is writing meanwhile (its runs, journal, locks and
    # derived fleet): files there may vanish between the listing and the copy
    busy = shutil.ignore_patterns("cp", "runs", "locks", "journal.sqlite*", f"{FLEET}-rt")
    shutil.copytree(scratch.state, copy, ignore=busy)
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
    # (the background restore test's throwaway may exist meanwhile: not this story's)
    assert {v for v in our_volumes(conn) if not v.startswith(THROWAWAY)} == expected_volumes(VMS)
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
    brought up and deployed again is a new VM without it; `restore` (the newest archive: the
    final one) brings the post, the comment, the upload and the learner back, and its own
    `verify` is green. (`up` and `deploy`, not `onboard`: onboard's verify of the empty VM
    would be one more `verify` of about a minute under TCG before restore's own.)"""
    made, final = STORY.get("made"), STORY.get("final")
    assert isinstance(made, content.Made) and final, "needs the onboard and destroy tests"
    up = scratch.kk_json("up", SCRATCH, timeout=900)
    assert [r["result"] for r in up["results"]] == ["created"], up
    deployed = scratch.kk_json("deploy", SCRATCH, timeout=1800)["hosts"][SCRATCH]
    assert (deployed["failed"], deployed["unreachable"]) == (0, 0), deployed
    assert not any(content.present(scratch, made).values()), "a new VM has none of it"
    restored = scratch.kk_json("restore", SCRATCH, "--yes", timeout=1200)
    # "restored": its verify passed (a failing verify reverts the VM and says failed)
    assert restored["result"] == "restored" and not restored["reverted"], restored
    assert "verifying" in restored["phases"], restored
    assert restored["archive"] == final, restored
    assert content.all_present(scratch, made), content.present(scratch, made)
    flag = scratch.ssh(SCRATCH, "test -e /etc/kallikratis/maintenance && echo on || echo off")
    assert flag.strip() == "off"


def test_restore_test_proved_the_archive_while_the_original_kept_serving(
    scratch: Fleet, conn: libvirt.virConnect, proof: Future[Proof]
) -> None:
    """Joins the background restore test of PROVEN (started with the onboarding): the newest
    archive restored into one throwaway VM on the isolated network, verified, content-checked
    against the archive (the post, comment, upload and learner made before the backup among
    it), removed; PROVEN itself not touched while the scratch story ran beside it."""
    p = proof.result(timeout=RESTORE_TEST_TIMEOUT)
    [row] = p.run["results"]
    assert row["result"] == "passed", row
    assert (row["archive"], row["verify"], row["leftover"]) == (p.archive, "passed", ""), row
    assert row["expected"] == row["actual"], row
    # the content check saw what was made before the backup
    assert row["content"]["posts"].get(str(p.made.post_id)) == p.made.title, row["content"]
    assert p.comment_id in row["content"]["comments"], row["content"]
    upload = p.made.upload.split("/wp-content/uploads/", 1)[1]
    assert row["content"]["uploads"].get(upload) == len(p.made.upload_text.encode()), row
    assert row["expected"]["learners"] == p.learners >= 2, row  # admin + learner
    print(f"restore-test of {PROVEN}: {row['seconds']} s, phases {row['phases']}")
    # the original kept serving: same boot, never in maintenance
    assert scratch.ssh(PROVEN, "cat /proc/sys/kernel/random/boot_id").strip() == p.boot
    flag = scratch.ssh(PROVEN, "test -e /etc/kallikratis/maintenance && echo on || echo off")
    assert flag.strip() == "off"
    assert content.all_present(scratch, p.made)
    # the throwaway is gone: domain, volumes, isolated network
    assert not [d for d in conn.listAllDomains() if d.name() == THROWAWAY]
    names = [n for pool in conn.listAllStoragePools() for n in pool.listVolumes()]
    assert not [n for n in names if n.startswith(THROWAWAY)], names
    assert f"{FLEET}-restoretest" not in conn.listNetworks() + conn.listDefinedNetworks()
    # control's monitoring got the result
    prom = scratch.ssh(
        CONTROL, f"sudo cat {TEXTFILE_DIR}/kallikratis-restore-test-run-{PROVEN}.prom"
    )
    assert f'kallikratis_restore_test_last_success{{municipality="{PROVEN}"}} 1' in prom, prom
    runs = scratch.kk_json("history", PROVEN)["runs"]
    assert runs[0]["command"] == "restore-test", runs[0]
