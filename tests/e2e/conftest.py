"""End-to-end fixtures: a real libvirtd (the lab's), real QEMU VMs, a fleet of our own.

These tests run inside the lab's network namespace (`scripts/lab test`); they fail, never skip,
when the lab is missing. The fleet `e2e` uses its own network (10.77.0.0/24) and state
directory, so it never touches the lab's `crete` VMs.

Boots and first deploys dominate the run under TCG, so they are spent once per session and
shared; every module still establishes its own preconditions through these fixtures, so any
module passes alone and in any order:

- ``fleet``: the inventory copy and the state directory; at the end of the session
  ``destroy --all`` must leave no domain, volume or DHCP reservation of ours (checked).
- ``booted``: ``up --all`` of the shared municipalities (:data:`SLUGS`) and the central
  ``control`` VM (:data:`VMS`), and the test apt
  repository (``aptrepo.py``) served on the fleet network's gateway as the VMs' only apt source
  (the VMs cannot reach Debian's mirrors under the network rule).
- ``deployed``: ``deploy --all`` once, then a libvirt snapshot :data:`BASE_SNAPSHOT` (disk and
  memory) of every shared VM and a copy of the inventory (with the secrets the deploy
  generated). ``deployed.restore()`` reverts the VMs and the inventory to that point in seconds;
  a module that changes either calls it first (``fresh`` fixture) and in its ``finally``.

:data:`SCRATCH` is a municipality outside the shared set: a module that needs a VM to create,
kill or destroy adds it to the inventory itself and removes it again.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml
from kallikratis.hypervisor import LibvirtBackend

from tests.helpers.aptrepo import AptRepo

ROOT = Path(__file__).resolve().parents[2]
URI = "qemu:///system"
FLEET = "e2e"
NETWORK = "kallikratis-e2e"
GATEWAY = "10.77.0.1"  # the e2e network's address on the host, inside the lab namespace
POOL = "kallikratis"
SLUGS = ["archanes-asterousia", "hersonissos"]  # the shared, deployed municipalities
CONTROL = "control"  # the central services VM (inventory group `central`), shared too
VMS = [*SLUGS, CONTROL]  # every shared VM: booted, deployed, snapshotted, reverted
SCRATCH = "minoa-pediada"  # onboarded, killed and destroyed by the modules that need it
#: the monitoring on control, sped up for the tests (production: 60 s scrapes, PortalDown
#: after 5 min, notifications grouped for 30 s); probes stay at 30 s: under TCG every probe
#: costs the portals CPU for the whole session
#: control's lab overrides: production's scrape (60 s), probe (60 s) and evaluation (30 s)
#: intervals, since every scrape and probe costs the TCG VMs CPU for the whole session (with
#: 15 s scrapes and 30 s probes, test_isolation, which deploys nothing, took 27 % longer than
#: before control existed), but alerts that fire and notify within minutes
LAB_MONITORING = {
    "monitoring_portal_down_for": "1m",
    "monitoring_group_wait": "5s",
    "monitoring_group_interval": "10s",
}
BASE_SNAPSHOT = "e2e-deployed"  # not kk-…: patch runs never list or prune it
#: OpenSSH control masters, in the state directory's 0700 cp/ (never /tmp): Ansible's
#: (a 10-character hash each) and verify's (v<run pid>-<%C>); mitogen's mux sockets are not masters
SSH_MASTER_GLOBS = ("cp/*",)


class Running:
    """A kallikratis process started in the background; its stderr read by a thread, so
    every wait on it has a bound."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # stdout has its own reader: communicate() would race the stderr reader for lines
        self._stdout: list[str] = []
        self._out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._out_reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self._stdout.append(self.proc.stdout.read())

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str | None:
        """The first stderr line containing *text*, or None (process ended or *timeout*)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if text in line:
                return line
        return None

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """Wait (bounded) for the exit; (returncode, stdout, all stderr)."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        self._reader.join(timeout=30)
        self._out_reader.join(timeout=30)
        out = "".join(self._stdout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.proc.returncode, out or "", "".join(self.lines)

    def signal(self, signum: int, group: bool = False) -> None:
        if self.proc.poll() is None:
            (os.killpg if group else os.kill)(self.proc.pid, signum)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


@dataclass
class Fleet:
    inventory: Path
    state: Path
    env: dict[str, str]

    def argv(self, *args: str, relative: bool = False) -> list[str]:
        inventory = self.inventory.name if relative else str(self.inventory)
        return [sys.executable, "-m", "kallikratis.cli", "-i", inventory, *args]

    def kk(
        self, *args: str, check: bool = True, timeout: float = 900, relative: bool = False
    ) -> subprocess.CompletedProcess:
        """Run kallikratis on this fleet; *relative*: as `-i e2e` from the inventory's parent
        directory, the way the CLI's own help shows it."""
        done = subprocess.run(
            self.argv(*args, relative=relative),
            cwd=self.inventory.parent if relative else None,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"kallikratis {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
            )
        return done

    def kk_json(self, *args: str, check: bool = True, timeout: float = 900) -> dict:
        done = self.kk(*args, "--json", check=check, timeout=timeout)
        try:
            return json.loads(done.stdout)
        except ValueError as exc:
            raise AssertionError(
                f"kallikratis {' '.join(args)}: no JSON (exit {done.returncode})\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ) from exc

    def popen(self, *args: str) -> Running:
        return Running(
            subprocess.Popen(
                self.argv(*args),
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        )

    def ssh(self, slug: str, command: str, check: bool = True, timeout: float = 300) -> str:
        return self.kk("ssh", slug, "--", command, check=check, timeout=timeout).stdout

    # -- the inventory ----------------------------------------------------------------------
    @property
    def hosts_yml(self) -> Path:
        return self.inventory / "hosts.yml"

    @property
    def fleet_yml(self) -> Path:
        return self.inventory / "group_vars" / "all" / "fleet.yml"

    def municipalities(self) -> dict[str, Any]:
        data = yaml.safe_load(self.hosts_yml.read_text())
        return data["all"]["children"]["municipalities"]["hosts"]

    def set_host(self, slug: str, **values: object) -> None:
        """Change (or, with an empty entry, add) *slug*'s entry; a None value removes a key."""
        data = yaml.safe_load(self.hosts_yml.read_text())
        hosts = data["all"]["children"]["municipalities"]["hosts"]
        entry = hosts.setdefault(slug, {}) or {}
        for key, value in values.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
        hosts[slug] = entry
        self.hosts_yml.write_text(yaml.safe_dump(data, allow_unicode=True))

    def remove_host(self, slug: str) -> None:
        data = yaml.safe_load(self.hosts_yml.read_text())
        data["all"]["children"]["municipalities"]["hosts"].pop(slug, None)
        self.hosts_yml.write_text(yaml.safe_dump(data, allow_unicode=True))

    def set_fleet_vars(self, **values: object) -> None:
        data = yaml.safe_load(self.fleet_yml.read_text())
        data.update(values)
        self.fleet_yml.write_text(yaml.safe_dump(data, allow_unicode=True))

    @property
    def ca_file(self) -> Path:
        return self.state / "fleets" / FLEET / "pki" / "ca.crt"

    def sites(self) -> dict[str, tuple[str, str]]:
        """slug -> (ip, domain), from `status` (the live view)."""
        rows = self.kk_json("status")["municipalities"]
        return {r["slug"]: (r["ip"], r["domain"]) for r in rows}


def write_post(fleet: Fleet, slug: str, domain: str, title: str, content: str) -> int:
    """Publish a WordPress post on *slug*'s portal (WordPress's own API, as www-data)."""
    php = (
        f'$_SERVER["HTTP_HOST"] = $_SERVER["SERVER_NAME"] = "{domain}"; $_SERVER["HTTPS"] = "on";'
        ' require "/usr/share/wordpress/wp-load.php";'
        f' echo wp_insert_post(["post_title" => "{title}", "post_status" => "publish",'
        f' "post_content" => "{content}"], true);'
    )
    out = fleet.ssh(slug, "sudo -u www-data php -r " + shlex.quote(php))
    assert out.strip().isdigit(), out
    return int(out)


def close_ssh_masters(state: Path) -> None:
    """End every OpenSSH control master of ours: after a revert or a host-key change, a
    persisted master would reach the VM without a new handshake (or hang on a dead one)."""
    for pattern in SSH_MASTER_GLOBS:
        for sock in glob.glob(str(state / pattern)):
            if sock.rsplit("/", 1)[-1].startswith("mitogen_unix_"):
                continue
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "kallikratis-master"],
                capture_output=True,
                timeout=30,
                check=False,
            )


def our_domains(conn: libvirt.virConnect) -> set[str]:
    return {d.name() for d in conn.listAllDomains() if d.name().startswith(f"{FLEET}-")}


def our_volumes(conn: libvirt.virConnect) -> set[str]:
    try:
        pool = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        return set()
    pool.refresh()
    return {v.name() for v in pool.listAllVolumes() if v.name().startswith(f"{FLEET}-")}


def expected_volumes(slugs: list[str]) -> set[str]:
    """Each VM's disk and seed, and control's own backup-store volume."""
    volumes = {f"{FLEET}-{s}{suffix}" for s in slugs for suffix in (".qcow2", "-seed.iso")}
    return volumes | {f"{FLEET}-{CONTROL}-backups.qcow2" for s in slugs if s == CONTROL}


def dhcp_hosts(conn: libvirt.virConnect) -> set[str]:
    try:
        xml = conn.networkLookupByName(NETWORK).XMLDesc(0)
    except libvirt.libvirtError:
        return set()
    return {h.get("name", "") for h in ET.fromstring(xml).iterfind("./ip/dhcp/host")}


class LiveConnection:
    """The session's libvirt connection, opened again when libvirtd restarted under it (a
    test restarts the daemon in the middle of a patch run). A dead connection can still say
    it is alive until a call fails, so a call that fails at the transport is made once more
    on a new connection."""

    LOST = (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn = libvirt.open(uri)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return getattr(self._conn, name)(*args, **kwargs)
            except libvirt.libvirtError as exc:
                lost = exc.get_error_domain() in self.LOST or exc.get_error_code() in (
                    libvirt.VIR_ERR_NO_CONNECT,
                    libvirt.VIR_ERR_INVALID_CONN,
                )
                if not lost or name == "close":
                    raise
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = libvirt.open(self.uri)
            return getattr(self._conn, name)(*args, **kwargs)

        return call


def _require_lab() -> libvirt.virConnect:
    if not os.environ.get("LAB_NS"):
        pytest.fail("end-to-end tests run inside the lab: use `scripts/lab test`", pytrace=False)
    try:
        return LiveConnection(URI)  # type: ignore[return-value]  # a virConnect by proxy
    except libvirt.libvirtError as exc:
        pytest.fail(f"no libvirtd at {URI} ({exc}); use `scripts/lab test`", pytrace=False)


def restart_libvirtd() -> int:
    """Stop the lab's libvirtd (SIGTERM, as systemd would) and start it again the way
    `scripts/lab start` does; the VMs' QEMU processes go on meanwhile. Returns the new pid."""
    pidfile = Path("/run/libvirtd.pid")
    old = int(pidfile.read_text().strip())
    os.kill(old, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(old, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"libvirtd {old} did not stop within 60 s")
    time.sleep(3)  # down for a moment: calls in flight fail, new ones are refused
    subprocess.run([str(ROOT / "scripts" / "lab"), "start"], check=True, timeout=120)
    new = int(pidfile.read_text().strip())
    assert new != old
    return new


@pytest.fixture(scope="session")
def conn() -> Iterator[libvirt.virConnect]:
    # errors are raised as exceptions and handled; libvirt's default handler would also print
    # each one (e.g. the guest agent's missing hwclock after it has set the clock)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    c = _require_lab()
    yield c
    c.close()


def _e2e_inventory(dest: Path) -> Path:
    inv = dest / "e2e"
    # not the lab's vault files: they are encrypted with the lab's vault password
    shutil.copytree(ROOT / "inventories" / "crete", inv, ignore=shutil.ignore_patterns("vault.yml"))
    f = Fleet(inv, dest, {})
    data = yaml.safe_load(f.fleet_yml.read_text())
    data["fleet_name"] = FLEET
    data["fleet_domain"] = "e2e.kallikratis.test"
    data["fleet_network"].update(
        name=NETWORK, cidr="10.77.0.0/24", gateway=GATEWAY, dns=[GATEWAY], bridge="kk-e2e"
    )
    f.fleet_yml.write_text(yaml.safe_dump(data, allow_unicode=True))
    f.remove_host(SCRATCH)  # not part of the shared fleet; its host_vars stay for onboarding
    # the interoperability hub is not in the shared fleet (CI time: a fourth VM under TCG)
    data = yaml.safe_load(f.hosts_yml.read_text())
    data["all"]["children"]["central"]["hosts"].pop("hub", None)
    f.hosts_yml.write_text(yaml.safe_dump(data, allow_unicode=True))
    (inv / "host_vars" / CONTROL).mkdir(parents=True, exist_ok=True)
    (inv / "host_vars" / CONTROL / "lab.yml").write_text(yaml.safe_dump(LAB_MONITORING))
    return inv


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `extended` (README: "Tests") run only with KALLIKRATIS_E2E_EXTENDED=1: the
    suite with them outgrew CI's time on the 2-core TCG machine. pytest reports them as
    deselected, never as passed."""
    if os.environ.get("KALLIKRATIS_E2E_EXTENDED") == "1":
        return
    left_out = [item for item in items if item.get_closest_marker("extended")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("extended")]


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, conn: libvirt.virConnect) -> Iterator[Fleet]:
    inv = _e2e_inventory(tmp_path_factory.mktemp("inventory"))
    state = tmp_path_factory.mktemp("state")
    env = dict(
        os.environ,
        KALLIKRATIS_STATE_DIR=str(state),
        KALLIKRATIS_DOMAIN_TYPE="qemu",
        KALLIKRATIS_IMAGE_CACHE=os.environ.get(
            "KALLIKRATIS_IMAGE_CACHE", "/var/lib/kallikratis/images"
        ),
    )
    env.pop("KALLIKRATIS_INVENTORY", None)
    f = Fleet(inv, state, env)
    _destroy_leftovers(conn)
    yield f
    # `destroy --all` leaves nothing of ours behind, whatever happened (checked, not hoped)
    f.set_host(SCRATCH, display_name="Δήμος Μινώα Πεδιάδας")  # so --all covers it too
    # no final backups: the session may end with VMs in any state (test_provision checks them)
    done = f.kk("destroy", "--all", "--yes", "--no-final-backup", check=False, timeout=600)
    left = (our_domains(conn), our_volumes(conn), dhcp_hosts(conn) & {*VMS, SCRATCH})
    _remove_network(conn)
    assert done.returncode == 0 and left == (set(), set(), set()), (done.stderr[-3000:], left)


def _destroy_leftovers(conn: libvirt.virConnect) -> None:
    """An earlier interrupted run's VMs (another state directory): remove them by hand."""
    for name in our_domains(conn):
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByName(POOL)
        pool.refresh()
        for vol in pool.listAllVolumes():
            if vol.name().startswith(f"{FLEET}-"):
                vol.delete(0)
    _remove_network(conn)


def _remove_network(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        net = conn.networkLookupByName(NETWORK)
        if net.isActive():
            net.destroy()
        net.undefine()


@dataclass
class Booted:
    fleet: Fleet
    up: dict  # the JSON report of the `up --all` that created the shared VMs
    repo: AptRepo
    repo_url: str


@pytest.fixture(scope="session")
def booted(
    fleet: Fleet, conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Booted]:
    up = fleet.kk_json("up", "--all", timeout=1200)
    repo = AptRepo(tmp_path_factory.mktemp("aptrepo"))
    repo.build()
    repo.publish(["1.0"])
    with repo.serve(GATEWAY, 0) as url:  # the gateway exists once `up` made the network
        fleet.set_fleet_vars(apt_sources=[repo.source_entry(url)])
        yield Booted(fleet, up, repo, url)


@dataclass
class Deployed:
    fleet: Fleet
    conn: libvirt.virConnect
    deploy: dict  # the JSON report of the first `deploy --all`
    pristine: Path  # the inventory as it was when the snapshots were taken
    repo: AptRepo
    restores: list[float] = field(default_factory=list)
    dirty: bool = False  # a module changed the shared VMs or the inventory since the snapshot

    def restore(self) -> None:
        """The shared VMs and the inventory back to the base snapshot (seconds, not minutes).
        One VM after the other, control last: reverted side by side, control ran again while a
        municipality was still loading its memory, and its next probe recorded that portal
        down (seen on real VMs); nor was it faster (11-18 s for the three, I/O-bound)."""
        started = time.monotonic()
        close_ssh_masters(self.fleet.state)
        backend = LibvirtBackend(URI, self.conn)  # the revert and clock steps of patch runs
        for slug in VMS:
            name = f"{FLEET}-{slug}"
            backend.revert_snapshot(name, BASE_SNAPSHOT)
            for snap in self.conn.lookupByName(name).listAllSnapshots():
                if snap.getName() != BASE_SNAPSHOT:
                    snap.delete(0)
        for slug in VMS:
            assert backend.sync_guest_clock(f"{FLEET}-{slug}", attempts=20), f"{slug}: clock"
        shutil.rmtree(self.fleet.inventory)
        shutil.copytree(self.pristine, self.fleet.inventory)
        self.repo.publish(["1.0"])
        self.dirty = False
        self.restores.append(time.monotonic() - started)

    def claim(self) -> None:
        """For a module that is about to change the fleet: back to the base snapshot first if
        a module before it changed it (put back lazily, never at a module's end)."""
        if self.dirty:
            self.restore()
        self.dirty = True


#: the session's Deployed once made (for modules that do not need the deploy: see `at_base`)
SESSION: dict[str, Deployed] = {}


@pytest.fixture(scope="session")
def deployed(
    booted: Booted, conn: libvirt.virConnect, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    fleet = booted.fleet
    out = fleet.kk_json("deploy", "--all", timeout=1800)
    for slug in SLUGS:  # the deploy only queues the collectors' first run: none in the snapshot
        fleet.ssh(slug, "sudo systemctl start kallikratis-metrics.service", timeout=300)
    close_ssh_masters(fleet.state)
    for slug in VMS:
        dom = conn.lookupByName(f"{FLEET}-{slug}")
        dom.snapshotCreateXML(
            f"<domainsnapshot><name>{BASE_SNAPSHOT}</name>"
            "<description>e2e: first deploy done</description></domainsnapshot>",
            0,
        )
    pristine = tmp_path_factory.mktemp("pristine") / "e2e"
    shutil.copytree(fleet.inventory, pristine)
    deployed = Deployed(fleet, conn, out, pristine, booted.repo)
    SESSION["deployed"] = deployed
    yield deployed
    # measured, for the record: how long putting the fleet back took each time
    art = Path(os.environ.get("KALLIKRATIS_TEST_ARTIFACTS", "/tmp/kallikratis-test-artifacts"))
    art.mkdir(parents=True, exist_ok=True)
    times = " ".join(f"{t:.1f}" for t in deployed.restores)
    (art / "e2e-restores.txt").write_text(f"restores of {len(VMS)} VMs (s): {times}\n")


@pytest.fixture(scope="module")
def fresh(deployed: Deployed) -> Iterator[Deployed]:
    """The shared fleet as deployed, for a module that changes it. Put back lazily: at the
    start of the next module that needs it, not at the end of this one (a revert of every VM
    saved per module; the session ends with `destroy --all` whatever the state)."""
    deployed.claim()
    yield deployed


@pytest.fixture(scope="module")
def at_base() -> Iterator[None]:
    """For a module on the booted fleet that needs no deploy of its own (test_provision): the
    shared VMs back at the base snapshot if a module before it changed them; changed after."""
    deployed = SESSION.get("deployed")
    if deployed is not None:
        deployed.claim()
    yield
