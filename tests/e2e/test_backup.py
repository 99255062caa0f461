"""Backups on the real shared fleet (``fresh``: reverted before the module): borgmatic on the
municipalities' VMs into their append-only repositories on control, the refusals, the faults
(an unreachable VM, `kill -9` mid-backup) and the off-site copy.

What a citizen or an employee made on hersonissos' portal and e-learning (a post with a comment,
an uploaded file, a Kolibri learner) is backed up. `restore-test` and `restore` run in
test_lifecycle: hersonissos' archive is proven in a throwaway VM in the background, while the
scratch municipality is destroyed (a final backup taken), brought up again and restored, and
what was made on it is back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from tests.e2e import portal_content as content
from tests.e2e.conftest import CONTROL, FLEET, GATEWAY, SCRATCH, SLUGS, Deployed, Fleet

pytestmark = pytest.mark.e2e
SLUG = "hersonissos"  # every module on
OTHER = "archanes-asterousia"
BACKUP_TIMEOUT = 1200
#: one throwaway VM: up (~80 s), a first deploy (~5 min under TCG), the relay, verify
RESTORE_TEST_TIMEOUT = 2400
BORGMATIC = "/etc/borgmatic/config.yaml"
#: borg as borgmatic runs it on the VM: its own key, control's pinned host key, no passphrase
BORG_AS_VM = (
    "env BORG_RSH='ssh -i /etc/borgmatic/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes"
    " -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/borgmatic/known_hosts'"
    " BORG_PASSCOMMAND='cat /etc/borgmatic/passphrase' borg"
)


@dataclass
class Lab:
    fleet: Fleet
    conn: libvirt.virConnect
    domain: str
    made: content.Made
    first: dict  # the JSON of the first `backup --all`


@pytest.fixture(scope="module")
def lab(fresh: Deployed) -> Iterator[Lab]:
    fleet = fresh.fleet
    domain = fleet.sites()[SLUG][1]
    made = content.make(fleet, SLUG, domain)
    assert content.all_present(fleet, made)
    first = fleet.kk_json("backup", "--all", timeout=BACKUP_TIMEOUT)
    yield Lab(fleet, fresh.conn, domain, made, first)


def _by_slug(report: dict) -> dict[str, dict]:
    return {m["slug"]: m for m in report["municipalities"]}


def _listing(output: str) -> str:
    """Archive lines of a `borg list` (an error message names the path, not archives)."""
    return "\n".join(line for line in output.splitlines() if line.count("-") >= 3 and ":" in line)


def _archives(fleet: Fleet, slug: str) -> list[dict]:
    return fleet.kk_json("backups", slug)["archives"]


def test_every_municipality_is_backed_up_into_its_own_repository(lab: Lab) -> None:
    results = _by_slug(lab.first)
    assert set(results) == set(SLUGS), "control is never backed up as a municipality"
    for slug in SLUGS:
        assert results[slug]["result"] == "ok", results[slug]
        archive = results[slug]["archive"]
        assert archive["name"].startswith(f"{slug}-"), archive
        assert 0 < archive["deduplicated_size"] <= archive["original_size"], archive
        assert [a["name"] for a in _archives(lab.fleet, slug)] == [archive["name"]]
    # the VM's own key reaches its own repository only: the neighbour's is refused by control
    repo = lab.fleet.ssh(SLUG, "sudo sed -n 's/^ *- path: \"\\(.*\\)\"$/\\1/p' " + BORGMATIC)
    assert repo.strip().endswith(f"/{SLUG}"), repo
    theirs = repo.strip()[: -len(SLUG)] + OTHER
    tried = lab.fleet.ssh(SLUG, f"sudo {BORG_AS_VM} list {shlex.quote(theirs)} 2>&1; echo rc=$?")
    assert "rc=0" not in tried and OTHER not in _listing(tried), tried


@pytest.mark.extended
def test_restore_to_new_brings_the_archive_into_a_fresh_vm(lab: Lab) -> None:
    """`restore hersonissos --to-new <scratch>`: the scratch entry (every module) is brought up
    and deployed, hersonissos' newest archive restored into it with its own domain, and the
    post, comment, upload and learner are there; hersonissos itself is not touched."""
    fleet = lab.fleet
    boot = fleet.ssh(SLUG, "cat /proc/sys/kernel/random/boot_id").strip()
    fleet.set_host(
        SCRATCH,
        display_name="Δήμος Μινώα Πεδιάδας",
        modules=["portal", "opendata", "education"],
    )
    try:
        done = fleet.kk_json(
            "restore", SLUG, "--to-new", SCRATCH, "--yes", timeout=RESTORE_TEST_TIMEOUT
        )
        assert done["result"] == "restored", done
        assert done["archive"] == _archives(fleet, SLUG)[-1]["name"], done
        print(f"restore --to-new: {done['seconds']} s, phases {done['phases']}")
        domain = fleet.sites()[SCRATCH][1]
        moved = dataclasses.replace(lab.made, slug=SCRATCH, domain=domain)
        assert content.all_present(fleet, moved), content.present(fleet, moved)
        home = content.php(fleet, SCRATCH, domain, ' echo get_option("home");')
        assert home == f"https://{domain}", home
        checks = fleet.kk_json("verify", SCRATCH)["checks"]
        assert [c["name"] for c in checks if not c["passed"]] == []
        assert fleet.ssh(SLUG, "cat /proc/sys/kernel/random/boot_id").strip() == boot
    finally:
        fleet.kk("destroy", SCRATCH, "--yes", "--no-final-backup", check=False, timeout=600)
        fleet.remove_host(SCRATCH)


def test_an_archive_of_another_municipality_is_refused(lab: Lab) -> None:
    theirs = _by_slug(lab.first)[OTHER]["archive"]["name"]
    done = lab.fleet.kk("restore", SLUG, "--archive", theirs, "--yes", check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert OTHER in done.stderr and theirs in done.stderr


def test_an_unreachable_vm_fails_alone_and_a_killed_backup_leaves_a_clean_repository(
    lab: Lab,
) -> None:
    # kill -9 of a backup while borg writes; the repository must check clean afterwards
    run = lab.fleet.popen("backup", SLUG, "--json")
    try:
        seen = run.wait_for(f"{SLUG}: backing up", timeout=300)
        assert seen, run.stderr[-3000:]
        run.signal(signal.SIGKILL, group=True)
        run.finish(timeout=60)
    finally:
        run.kill()
    before = {s: len(_archives(lab.fleet, s)) for s in SLUGS}
    # OTHER shut off: the backup of every municipality goes on without it, exit 5
    lab.conn.lookupByName(f"{FLEET}-{OTHER}").destroy()
    done = lab.fleet.kk("backup", "--all", "--json", check=False, timeout=BACKUP_TIMEOUT)
    assert done.returncode == 5, done.stdout[-3000:] + done.stderr[-3000:]
    results = _by_slug(json.loads(done.stdout))
    assert results[OTHER]["result"] == "failed", results[OTHER]
    assert results[SLUG]["result"] == "ok", results[SLUG]
    assert len(_archives(lab.fleet, SLUG)) == before[SLUG] + 1
    assert len(_archives(lab.fleet, OTHER)) == before[OTHER], "no archive lost, none added"
    # the repository itself, on control, as its owner: segments and index consistent
    check = lab.fleet.ssh(
        CONTROL, f"sudo -u borg borg check --repository-only /srv/backups/{SLUG} 2>&1; echo rc=$?"
    )
    assert check.strip().endswith("rc=0"), check
    # control's own weekly check, as its timer runs it (sandboxed unit): every repository clean
    weekly = lab.fleet.ssh(
        CONTROL,
        "sudo systemctl start kallikratis-backup-check.service; echo rc=$?;"
        " systemctl show -p Result --value kallikratis-backup-check.service",
        timeout=600,
    )
    assert weekly.split()[-2:] == ["rc=0", "success"], weekly
    on = lab.fleet.ssh(CONTROL, "findmnt --noheadings --output LABEL --mountpoint /srv/backups")
    assert on.strip() == "kk-backups", "the repositories are not on control's own volume"


# --------------------------------------------------------------------------- the off-site copy


class OffsiteStandIn:
    """The off-site remote, stood in by an sshd of the test's own on the fleet network's
    gateway (inside the lab namespace, like the test apt repository): its own host key, the
    authorized_keys lines `backup remote-keys` prints, this machine's borg serving them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.base = root / "offsite"  # the repositories: <base>/<slug>
        self.base.mkdir(parents=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host")], check=True
        )
        with socket.socket() as s:
            s.bind((GATEWAY, 0))
            self.port = int(s.getsockname()[1])
        self.authorized = root / "authorized_keys"
        self.authorized.write_text("")
        self.config = root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress {GATEWAY}\nHostKey {root / 'host'}\n"
            f"AuthorizedKeysFile {self.authorized}\nPidFile {root / 'sshd.pid'}\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nPermitRootLogin prohibit-password\n"
        )
        self.proc: subprocess.Popen | None = None

    @property
    def remote(self) -> dict[str, str]:
        """The inventory's backup_remote for this stand-in (its host key pinned)."""
        key = " ".join((self.root / "host.pub").read_text().split()[:2])
        return {"url": f"ssh://root@{GATEWAY}:{self.port}{self.base}", "host_key": key}

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(self.config)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((GATEWAY, self.port)) == 0:
                    return
            assert self.proc.poll() is None, "the stand-in sshd exited"
            time.sleep(0.2)
        raise AssertionError(f"the stand-in sshd is not listening on {GATEWAY}:{self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None


@pytest.mark.extended
def test_the_off_site_copy_goes_to_the_remote_and_its_failure_keeps_controls(
    lab: Lab, tmp_path: Path
) -> None:
    """backup_remote set to a stand-in on the gateway: one backup makes an archive on control
    and on the remote; with the remote stopped, the next one is partial (exit 5) and control's
    archive is still made. The inventory is put back at the end; the VMs are reverted by the
    module's fixture."""
    fleet = lab.fleet
    original = fleet.fleet_yml.read_text()
    standin = OffsiteStandIn(tmp_path)
    try:
        fleet.set_fleet_vars(backup_remote=standin.remote)
        # offsite.yaml and the remote's pinned host key: the backup role alone
        only = fleet.kk_json("deploy", SLUG, "--only", "backup", timeout=1800)
        assert only["only"] == ["backup"] and only["hosts"][SLUG]["changed"] > 0, only
        keys = fleet.kk_json("backup", "remote-keys")["municipalities"]
        lines = [k["authorized_keys"] for k in keys if k["authorized_keys"]]
        assert any(f"--restrict-to-repository {standin.base}/{SLUG}" in ln for ln in lines), keys
        standin.authorized.write_text("\n".join(lines) + "\n")
        standin.start()
        done = _by_slug(fleet.kk_json("backup", SLUG, timeout=BACKUP_TIMEOUT))[SLUG]
        assert done["result"] == "ok", done
        assert done["remote"]["result"] == "ok", done
        assert done["remote"]["archive"]["name"].startswith(f"{SLUG}-"), done
        assert (standin.base / SLUG / "data").is_dir()
        remote = fleet.kk_json("backups", SLUG, "--remote")
        assert [a["name"] for a in remote["archives"]] == [done["remote"]["archive"]["name"]]
        # the remote goes away: control's archive is still made, the run says partial, exit 5
        standin.stop()
        failed = fleet.kk("backup", SLUG, "--json", check=False, timeout=BACKUP_TIMEOUT)
        assert failed.returncode == 5, failed.stdout[-3000:] + failed.stderr[-3000:]
        partial = _by_slug(json.loads(failed.stdout))[SLUG]
        assert partial["result"] == "partial", partial
        assert partial["archive"]["name"].startswith(f"{SLUG}-"), partial
        assert partial["remote"]["result"] == "failed", partial
        assert "the remote cannot be reached" in partial["remote"]["detail"], partial
        # on control: the newest archive is the partial run's (prune keeps one a day)
        assert _archives(fleet, SLUG)[-1]["name"] == partial["archive"]["name"]
    finally:
        standin.stop()
        fleet.fleet_yml.write_text(original)
        assert os.path.exists(fleet.fleet_yml)
