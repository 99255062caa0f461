"""Patch runs on real VMs, with updates from the signed apt repository that the session serves
inside the lab (tests/helpers/aptrepo.py; the shared fleet's only apt source).

On the shared deployed fleet, reverted to its base snapshot first (``fresh``). The repository
serves `kallikratis-probe`: 1.0 installed first, 1.1 good (asks for a reboot), 1.2 breaks the
service that `watch_services` makes `verify` check. In this order:
  1. dry run: pending 1.0 → 1.1 listed per municipality, nothing changed;
  2. SIGTERM (what systemd sends) to a running `patch`: the VM in progress is reverted;
  3. `kill -9` of a `patch` of the canary in the middle: it stays in maintenance;
  4. patch all while the other VM is killed (`virsh destroy`) in the middle of its deploy: that
     one is reverted and reported, the canary (in maintenance since 3) is patched and rebooted,
     out of maintenance, verify green, the journal has the versions: the run converges;
  5. 1.2 with --canary 1: the canary fails its checks, is reverted and serves 1.1, the run
     stops, the other is untouched; a post written before survives; the maintenance page was
     served during the patch; a second patch run meanwhile is refused by the lock; libvirtd
     is restarted while the canary's checks run, and the revert still happens.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import libvirt
import pytest

from tests.e2e.conftest import (
    FLEET,
    SLUGS,
    Deployed,
    Fleet,
    restart_libvirtd,
    write_post,
)
from tests.helpers.aptrepo import AptRepo

pytestmark = pytest.mark.e2e
CANARY = SLUGS[0]  # the first in inventory order
OTHER = SLUGS[1]
PROBE = "kallikratis-probe.service"
PATCH_TIMEOUT = 1800


@dataclass
class Lab:
    fleet: Fleet
    repo: AptRepo
    conn: libvirt.virConnect
    sites: dict[str, tuple[str, str]] = field(default_factory=dict)  # slug -> (ip, domain)

    def ssh(self, slug: str, command: str, check: bool = True) -> str:
        return self.fleet.ssh(slug, command, check=check)

    def probe_version(self, slug: str) -> str:
        return self.ssh(slug, "cat /usr/share/kallikratis-probe/VERSION").strip()

    def probe_active(self, slug: str) -> bool:
        out = self.ssh(slug, f"systemctl is-active {PROBE} || true")
        return out.strip() == "active"

    def snapshots(self, slug: str) -> list[str]:
        dom = self.conn.lookupByName(f"{FLEET}-{slug}")
        return sorted(s.getName() for s in dom.listAllSnapshots() if s.getName().startswith("kk-"))

    def in_maintenance(self, slug: str) -> bool:
        out = self.ssh(slug, "test -e /etc/kallikratis/maintenance && echo yes || echo no")
        return out.strip() == "yes"

    def get(self, slug: str, path: str = "/") -> tuple[int, str]:
        """HTTPS from the controller, as a citizen (no maintenance bypass), fleet CA only."""
        ip, domain = self.sites[slug]
        context = ssl.create_default_context(cafile=str(self.fleet.ca_file))
        raw = socket.create_connection((ip, 443), timeout=20)
        conn = http.client.HTTPConnection(domain, 443, timeout=20)
        conn.sock = context.wrap_socket(raw, server_hostname=domain)
        try:
            conn.request("GET", path, headers={"Host": domain})
            res = conn.getresponse()
            return res.status, res.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def patch(self, *args: str) -> subprocess.CompletedProcess:
        return self.fleet.kk("patch", *args, "--json", check=False, timeout=PATCH_TIMEOUT)


def _results(done: subprocess.CompletedProcess | str, code: int | None = None) -> dict[str, dict]:
    out = done if isinstance(done, str) else done.stdout
    try:
        data = json.loads(out)
    except ValueError as exc:
        err = "" if isinstance(done, str) else done.stderr[-3000:]
        raise AssertionError(f"no JSON (exit {code}):\n{out[-3000:]}\n{err}") from exc
    return {m["slug"]: m for m in data["municipalities"]}


@pytest.fixture(scope="module")
def lab(fresh: Deployed) -> Iterator[Lab]:
    fleet = fresh.fleet
    lab = Lab(fleet, fresh.repo, fresh.conn)
    for slug in SLUGS:
        lab.ssh(slug, "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q kallikratis-probe")
        assert lab.probe_version(slug) == "1.0"
    fleet.set_fleet_vars(watch_services=[PROBE])
    lab.sites = fleet.sites()
    yield lab


def test_dry_run_lists_pending_updates_and_changes_nothing(lab: Lab) -> None:
    lab.repo.publish(["1.0", "1.1"])
    done = lab.patch(*SLUGS, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    results = _results(done)
    for slug in SLUGS:
        assert results[slug]["result"] == "planned"
        ups = {u["package"]: (u["old"], u["new"]) for u in results[slug]["upgrades"]}
        assert ups == {"kallikratis-probe": ("1.0", "1.1")}, ups
        assert lab.snapshots(slug) == []
        assert lab.probe_version(slug) == "1.0"
        assert not lab.in_maintenance(slug)


@pytest.mark.extended
def test_sigterm_reverts_the_vm_in_progress(lab: Lab) -> None:
    """systemd stops a scheduled run with SIGTERM: the VM being patched goes back to its
    snapshot and leaves maintenance mode before the process exits."""
    run = lab.fleet.popen("patch", OTHER, "--json")
    try:
        seen = run.wait_for(f"{OTHER}: upgrading packages", timeout=600)
        assert seen, f"never saw {OTHER} upgrading:\n{run.stderr[-3000:]}"
        run.signal(signal.SIGTERM)
        code, _out, err = run.finish(timeout=900)
    finally:
        run.kill()
    assert code != 0, err[-3000:]
    assert "revert" in err, err[-3000:]  # "reverting" / "confirming revert" (progress board)
    assert lab.probe_version(OTHER) == "1.0" and lab.probe_active(OTHER)
    assert not lab.in_maintenance(OTHER) and lab.snapshots(OTHER) == []
    assert lab.get(OTHER)[0] == 200


def test_kill_9_mid_patch_leaves_the_vm_in_maintenance(lab: Lab) -> None:
    """`kill -9` of a `patch` in the middle: the VM stays in maintenance; the next test's run
    (which patches it) is the one that converges."""
    run = lab.fleet.popen("patch", CANARY, "--json")
    try:
        seen = run.wait_for(f"{CANARY}: snapshot", timeout=600)
        time.sleep(2)  # into the snapshot
        run.signal(signal.SIGKILL, group=True)
        run.finish(timeout=60)
    finally:
        run.kill()
    assert seen, f"never saw {CANARY} snapshotting:\n{run.stderr[-3000:]}"
    assert lab.in_maintenance(CANARY), "the killed run had put it in maintenance mode"
    assert lab.probe_version(CANARY) == "1.0"


def test_a_vm_killed_mid_patch_is_reverted_and_the_others_go_on(lab: Lab) -> None:
    """One run over both: the VM killed (`virsh destroy`) during its deploy is reverted; the
    other, left in maintenance by the killed run above, is patched, rebooted and out of
    maintenance (the run converges), verify green, the journal has its versions."""
    victim = OTHER
    run = lab.fleet.popen("patch", *SLUGS, "--canary", "0", "--max-fail", "1", "--json")
    try:
        killed_at = run.wait_for(f"{victim}: deploying", timeout=900)
        if killed_at:
            lab.conn.lookupByName(f"{FLEET}-{victim}").destroy()
        code, out, stderr = run.finish(timeout=PATCH_TIMEOUT)
    finally:
        run.kill()
    assert killed_at, f"never saw {victim} deploying:\n{run.stderr[-3000:]}"
    assert code == 5, f"exit {code}\n{out}\n{stderr[-3000:]}"
    results = _results(out, code)
    assert results[victim]["result"] == "failed" and results[victim]["reverted"]
    assert "serving again" in results[victim]["reason"], results[victim]["reason"]
    assert lab.probe_version(victim) == "1.0" and lab.probe_active(victim)
    assert not lab.in_maintenance(victim) and lab.snapshots(victim) == []
    assert results[CANARY]["result"] == "patched", results[CANARY]
    assert results[CANARY]["rebooted"], "1.1 asks for a reboot"
    assert lab.probe_version(CANARY) == "1.1" and lab.probe_active(CANARY)
    assert not lab.in_maintenance(CANARY)
    assert len(lab.snapshots(CANARY)) == 1, "patch_keep_snapshots defaults to 1"
    checks = lab.fleet.kk_json("verify", CANARY)["checks"]
    assert not [c for c in checks if not c["passed"]]
    history = lab.fleet.kk_json("history", "--limit", "10")["runs"]
    patched = [
        r["detail"]
        for run in history
        if run["command"] == "patch"
        for r in run["results"]
        if r["result"] == "patched" and r["slug"] == CANARY
    ]
    assert patched and "kallikratis-probe 1.0 → 1.1" in patched[0], history


def _write_post(lab: Lab, slug: str, title: str) -> None:
    write_post(lab.fleet, slug, lab.sites[slug][1], title, "Written before the patch.")


def _post_titles(lab: Lab, slug: str, search: str) -> list[str]:
    status, body = lab.get(slug, f"/?rest_route=/wp/v2/posts&search={search}")
    assert status == 200, body[:300]
    return [p["title"]["rendered"] for p in json.loads(body)]


class Watcher(threading.Thread):
    """Polls the canary's home page as a citizen would, until stopped (bounded by a deadline)."""

    def __init__(self, lab: Lab, slug: str) -> None:
        super().__init__(daemon=True)
        self.lab, self.slug = lab, slug
        self.seen: list[tuple[int, bool]] = []  # (status, maintenance text present)
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + PATCH_TIMEOUT
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = self.lab.get(self.slug)
                notice = "Εργασίες συντήρησης" in body and "Scheduled maintenance" in body
                self.seen.append((status, notice))
            except OSError:
                self.seen.append((0, False))  # reverting or rebooting
            self.stop.wait(1.0)


def test_a_bad_update_is_stopped_at_the_canary(lab: Lab) -> None:
    title = f"kk-post-{uuid.uuid4().hex[:8]}"
    _write_post(lab, CANARY, title)
    assert _post_titles(lab, CANARY, title) == [title]
    before = {slug: lab.snapshots(slug) for slug in SLUGS}
    versions = {slug: lab.probe_version(slug) for slug in SLUGS}  # the canary is at 1.1
    lab.repo.publish(["1.0", "1.1", "1.2"])

    watcher = Watcher(lab, CANARY)
    watcher.start()
    run = lab.fleet.popen("patch", *SLUGS, "--canary", "1", "--json")
    try:
        # wait (bounded) until the canary is in maintenance: a second run must be refused at once
        deadline = time.monotonic() + 600
        while not any(s == 503 for s, _ in watcher.seen) and time.monotonic() < deadline:
            time.sleep(1)
        assert any(s == 503 for s, _ in watcher.seen), f"never in maintenance: {run.stderr}"
        started = time.monotonic()
        second = lab.fleet.kk("patch", OTHER, check=False, timeout=120)
        refused_in = time.monotonic() - started
        # libvirtd restarts while the canary's checks run: the revert that follows finds the
        # run's connection dead, and the backend must open a new one
        verifying = run.wait_for(f"{CANARY}: verifying", timeout=PATCH_TIMEOUT)
        if verifying:
            restart_libvirtd()
        code, out, err = run.finish(timeout=PATCH_TIMEOUT)
    finally:
        watcher.stop.set()
        watcher.join(timeout=60)
        run.kill()
    assert second.returncode == 6, second.stdout + second.stderr
    assert "patch" in second.stderr and str(run.proc.pid) in second.stderr, second.stderr
    assert refused_in < 30, f"the lock refusal took {refused_in:.0f} s"

    assert verifying, f"never saw {CANARY} verifying:\n{err[-3000:]}"
    assert code == 5, out + err[-3000:]
    assert "reconnected to" in err, err[-3000:]  # the restart did hit the run's connection
    results = _results(out, code)
    canary = results[CANARY]
    assert canary["result"] == "failed" and canary["reverted"], canary
    assert "kallikratis-probe" in canary["reason"], canary["reason"]
    assert "serving again" in canary["reason"], canary["reason"]
    assert [u["new"] for u in canary["upgrades"]] == ["1.2"]
    for slug in SLUGS[1:]:
        assert results[slug]["result"] == "skipped", results[slug]
        assert lab.snapshots(slug) == before[slug], f"{slug} was touched"
        assert lab.probe_version(slug) == versions[slug]

    assert lab.probe_version(CANARY) == "1.1" and lab.probe_active(CANARY)
    assert lab.snapshots(CANARY) == before[CANARY]
    assert not lab.in_maintenance(CANARY)
    assert (503, True) in watcher.seen, f"no maintenance page seen: {watcher.seen[:20]}"
    assert _post_titles(lab, CANARY, title) == [title], "the post is gone after the revert"
    assert lab.get(CANARY)[0] == 200
