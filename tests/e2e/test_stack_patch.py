"""Patch runs on real VMs, with updates from a signed apt repository served inside the lab.

Runs after test_stack.py (the e2e fleet is up and deployed; the module brings it there
itself when run alone). The repository (tests/e2e/aptrepo.py) serves `kallikratis-probe`:
1.0 installed first, 1.1 good (and asks for a reboot), 1.2 breaks the service that
`watch_services` makes `verify` check. In this order:
  1. dry run: pending 1.0 → 1.1 listed per municipality, nothing changed;
  2. patch all while one VM is killed (`virsh destroy`) in the middle of its deploy: that
     one is reverted and reported, the others are patched (and rebooted);
  3. the same command again converges: all three at 1.1, verify green, journal has versions;
  4. 1.2 with --canary 1: the canary fails its checks, is reverted and serves 1.1, the run
     stops, the others are untouched; a post written before survives; the maintenance page
     was served during the patch; a second patch run meanwhile is refused by the lock.
"""

from __future__ import annotations

import http.client
import json
import shlex
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
import yaml

from tests.e2e.aptrepo import AptRepo
from tests.e2e.conftest import FLEET, Fleet

pytestmark = pytest.mark.e2e
SLUGS = ["archanes-asterousia", "minoa-pediada", "hersonissos"]
CANARY = SLUGS[0]  # the first in inventory order
GATEWAY = "10.77.0.1"  # the e2e network's address on the host, inside the lab namespace
PROBE = "kallikratis-probe.service"
PATCH_TIMEOUT = 2400


@dataclass
class Lab:
    fleet: Fleet
    repo: AptRepo
    url: str
    conn: libvirt.virConnect
    sites: dict[str, tuple[str, str]] = field(default_factory=dict)  # slug -> (ip, domain)

    def set_fleet_vars(self, **values: object) -> None:
        path = self.fleet.inventory / "group_vars" / "all" / "fleet.yml"
        data = yaml.safe_load(path.read_text())
        data.update(values)
        path.write_text(yaml.safe_dump(data, allow_unicode=True))

    def ssh(self, slug: str, command: str, check: bool = True) -> str:
        return self.fleet.kk("ssh", slug, "--", command, check=check, timeout=300).stdout

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
        ca = self.fleet.state / "fleets" / FLEET / "pki" / "ca.crt"
        context = ssl.create_default_context(cafile=str(ca))
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


def _results(done: subprocess.CompletedProcess) -> dict[str, dict]:
    try:
        data = json.loads(done.stdout)
    except ValueError as exc:
        raise AssertionError(
            f"no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        ) from exc
    return {m["slug"]: m for m in data["municipalities"]}


@pytest.fixture(scope="module")
def lab(
    fleet: Fleet, conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    fleet.kk("up", "--all", timeout=1800)  # creates the network (and VMs) when run alone
    repo = AptRepo(tmp_path_factory.mktemp("aptrepo"))
    repo.build()
    repo.publish(["1.0"])
    with repo.serve(GATEWAY, 0) as url:
        lab = Lab(fleet, repo, url, conn)
        lab.set_fleet_vars(apt_sources=[repo.source_entry(url)], watch_services=[])
        deploy = fleet.kk("deploy", "--all", "--json", check=False, timeout=1800)
        assert deploy.returncode == 0, deploy.stdout[-4000:] + deploy.stderr[-2000:]
        for slug in SLUGS:
            lab.ssh(
                slug, "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q kallikratis-probe"
            )
            assert lab.probe_version(slug) == "1.0"
        lab.set_fleet_vars(watch_services=[PROBE])
        rows = fleet.kk_json("status")["municipalities"]
        lab.sites = {r["slug"]: (r["ip"], r["domain"]) for r in rows}
        yield lab


def test_dry_run_lists_pending_updates_and_changes_nothing(lab: Lab) -> None:
    lab.repo.publish(["1.0", "1.1"])
    done = lab.patch("--all", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    results = _results(done)
    for slug in SLUGS:
        assert results[slug]["result"] == "planned"
        ups = {u["package"]: (u["old"], u["new"]) for u in results[slug]["upgrades"]}
        assert ups == {"kallikratis-probe": ("1.0", "1.1")}, ups
        assert lab.snapshots(slug) == []
        assert lab.probe_version(slug) == "1.0"
        assert not lab.in_maintenance(slug)


def test_a_vm_killed_mid_patch_is_reverted_and_the_others_go_on(lab: Lab) -> None:
    victim = "minoa-pediada"
    proc = lab.fleet.popen("patch", "--all", "--canary", "0", "--max-fail", "1", "--json")
    killed_at = None
    assert proc.stderr is not None
    stderr_lines = []
    for line in proc.stderr:  # progress lines: "[  12.3s] slug: phase"
        stderr_lines.append(line)
        if killed_at is None and f"{victim}: deploying" in line:
            lab.conn.lookupByName(f"{FLEET}-{victim}").destroy()
            killed_at = line.strip()
    out, _ = proc.communicate(timeout=PATCH_TIMEOUT)
    stderr = "".join(stderr_lines)
    assert killed_at, f"never saw {victim} deploying:\n{stderr[-3000:]}"
    assert proc.returncode == 5, f"exit {proc.returncode}\n{out}\n{stderr[-3000:]}"
    results = {m["slug"]: m for m in json.loads(out)["municipalities"]}
    assert results[victim]["result"] == "failed" and results[victim]["reverted"]
    assert "serving again" in results[victim]["reason"], results[victim]["reason"]
    assert lab.probe_version(victim) == "1.0" and lab.probe_active(victim)
    assert not lab.in_maintenance(victim) and lab.snapshots(victim) == []
    for slug in ("archanes-asterousia", "hersonissos"):
        assert results[slug]["result"] == "patched", results[slug]
        assert results[slug]["rebooted"], "1.1 asks for a reboot"
        assert lab.probe_version(slug) == "1.1" and lab.probe_active(slug)
        assert not lab.in_maintenance(slug) and len(lab.snapshots(slug)) == 1


def test_the_same_run_again_converges(lab: Lab) -> None:
    done = lab.patch("--all", "--canary", "0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = _results(done)
    assert results["minoa-pediada"]["result"] == "patched"
    assert results["archanes-asterousia"]["result"] == "unchanged"
    assert results["hersonissos"]["result"] == "unchanged"
    for slug in SLUGS:
        assert lab.probe_version(slug) == "1.1"
        assert len(lab.snapshots(slug)) == 1, "patch_keep_snapshots defaults to 1"
    checks = lab.fleet.kk_json("verify")["checks"]
    assert not [c for c in checks if not c["passed"]]
    history = lab.fleet.kk_json("history", "--limit", "5")["runs"]
    patched = {
        r["slug"]: r["detail"]
        for run in history
        if run["command"] == "patch"
        for r in run["results"]
        if r["result"] == "patched"
    }
    assert set(patched) == set(SLUGS), history
    assert all("kallikratis-probe 1.0 → 1.1" in d for d in patched.values()), patched


def _write_post(lab: Lab, slug: str, title: str) -> None:
    domain = lab.sites[slug][1]
    php = (
        f'$_SERVER["HTTP_HOST"] = $_SERVER["SERVER_NAME"] = "{domain}"; $_SERVER["HTTPS"] = "on";'
        ' require "/usr/share/wordpress/wp-load.php";'
        f' echo wp_insert_post(["post_title" => "{title}", "post_status" => "publish",'
        ' "post_content" => "Written before the patch."], true);'
    )
    out = lab.ssh(slug, "sudo -u www-data php -r " + shlex.quote(php))
    assert out.strip().isdigit(), out


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
    lab.repo.publish(["1.0", "1.1", "1.2"])

    watcher = Watcher(lab, CANARY)
    watcher.start()
    proc = lab.fleet.popen("patch", "--all", "--canary", "1", "--json")
    try:
        # wait until the canary is in maintenance, then a second run must be refused at once
        deadline = time.monotonic() + 600
        while not any(s == 503 for s, _ in watcher.seen) and time.monotonic() < deadline:
            time.sleep(1)
        started = time.monotonic()
        second = lab.fleet.kk("patch", "hersonissos", check=False, timeout=120)
        refused_in = time.monotonic() - started
        out, err = proc.communicate(timeout=PATCH_TIMEOUT)
    finally:
        watcher.stop.set()
        watcher.join(timeout=60)
        if proc.poll() is None:
            proc.kill()
    assert second.returncode == 6, second.stdout + second.stderr
    assert "patch" in second.stderr and str(proc.pid) in second.stderr, second.stderr
    assert refused_in < 30, f"the lock refusal took {refused_in:.0f} s"

    assert proc.returncode == 5, out + err[-3000:]
    results = {m["slug"]: m for m in json.loads(out)["municipalities"]}
    canary = results[CANARY]
    assert canary["result"] == "failed" and canary["reverted"], canary
    assert "kallikratis-probe" in canary["reason"], canary["reason"]
    assert "serving again" in canary["reason"], canary["reason"]
    assert [u["new"] for u in canary["upgrades"]] == ["1.2"]
    for slug in SLUGS[1:]:
        assert results[slug]["result"] == "skipped", results[slug]
        assert lab.snapshots(slug) == before[slug], f"{slug} was touched"
        assert lab.probe_version(slug) == "1.1"

    assert lab.probe_version(CANARY) == "1.1" and lab.probe_active(CANARY)
    assert lab.snapshots(CANARY) == before[CANARY]
    assert not lab.in_maintenance(CANARY)
    assert (503, True) in watcher.seen, f"no maintenance page seen: {watcher.seen[:20]}"
    assert _post_titles(lab, CANARY, title) == [title], "the post is gone after the revert"
    assert lab.get(CANARY)[0] == 200
