"""A restore test's throwaway on libvirt's test driver: the derived fleet (its slug, domain,
isolated network, secrets), the VM's whole life (up, removal of domain, volumes, network,
derived state) on success, on failure, on Ctrl-C and after a killed run; the original VM
untouched. The steps inside a VM (deploy, the archive's relay, verify, the VM's answers) are
what the e2e test runs; here they are replaced, everything libvirt is real."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from kallikratis import model, restorefleet, secrets
from kallikratis.errors import KallikratisError, UsageError
from kallikratis.hypervisor import LibvirtBackend, connect
from kallikratis.keys import KeyStore
from kallikratis.paths import StateDir
from kallikratis.provision import Engine
from kallikratis.restorecontent import Content
from kallikratis.restoretest import RestoreTest
from support import InventoryCopy

SLUG = "hersonissos"
THROWAWAY_VM = "crete-rt-hersonissos-rt"
NETWORK = "crete-restoretest"
CONTENT = Content(posts={"1": "Ανακοίνωση"}, comments={"3"}, users={"admin"}, learners={"a"})


class Steps(RestoreTest):
    """The VM-side steps replaced; they look at what the real ones would find."""

    wait = False  # the test driver's VMs never answer SSH

    def __init__(self, *args: object, fail: str = "", **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fail = fail
        self.seen: dict[str, object] = {}

    def _maybe_fail(self, step: str) -> None:
        if self.fail == step:
            raise KallikratisError(f"{step} broke")
        if self.fail == f"ctrl-c:{step}":
            raise KeyboardInterrupt

    def deploy(self) -> None:
        engine, t = self._ready()
        be = self.factory(engine.fleet.hypervisors["hv01"].uri)
        self.seen["fleet"] = engine.fleet
        self.seen["throwaway"] = t
        self.seen["network_xml"] = be.conn.networkLookupByName(NETWORK).XMLDesc(0)
        self.seen["running"] = be.domain(THROWAWAY_VM).running  # type: ignore[union-attr]
        self.seen["vault"] = secrets.read_secrets(engine.fleet, t.slug, engine.keys)
        real = Engine(self.fleet, state_dir=self.state_dir, backend_factory=self.factory)
        self.seen["orphans"] = real.orphans()  # the real fleet's status: no stray volumes
        self._maybe_fail("deploy")

    def restore(self, archive: str) -> None:
        self.seen["archive"] = archive
        self._maybe_fail("restore")
        self.expected = CONTENT

    def verify(self) -> tuple[bool, str]:
        return (self.fail != "verify", "web: portal answers 502")

    def actual(self) -> Content:
        if self.fail == "content":
            return Content(posts={}, comments={"3"}, users={"admin"}, learners={"a"})
        return CONTENT


@pytest.fixture
def fleet(inv: InventoryCopy, vault_password: Path, state_dir: Path) -> model.Fleet:
    inv.use_test_driver()
    f = inv.load()
    secrets.ensure_secrets(f, f.get(SLUG), KeyStore(state_dir, f.name, f.inventory))
    return f


def _test(
    fleet: model.Fleet, state_dir: Path, backends: dict[str, LibvirtBackend], **kw: object
) -> Steps:
    def factory(uri: str) -> LibvirtBackend:
        if uri not in backends:
            backends[uri] = connect(uri)
        return backends[uri]

    return Steps(
        fleet,
        fleet.get(SLUG),
        state_dir=state_dir,
        backend_factory=factory,
        control=None,
        passphrase=lambda: "unused",
        **kw,
    )


def _gone(be: LibvirtBackend, fleet: model.Fleet, state_dir: Path) -> None:
    assert be.domain(THROWAWAY_VM) is None
    assert [v.name for v in be.volumes(fleet.pool.name) if v.name.startswith(THROWAWAY_VM)] == []
    assert not be.network_exists(NETWORK)
    assert not StateDir(state_dir).fleet("crete-rt").dir.exists()


@pytest.fixture
def original(fleet: model.Fleet, state_dir: Path) -> tuple[dict[str, LibvirtBackend], str]:
    """The municipality's own VM, running: its UUID (it must stay as it is)."""
    backends: dict[str, LibvirtBackend] = {}
    uri = fleet.hypervisors["hv01"].uri
    backends[uri] = connect(uri)
    engine = Engine(fleet, state_dir=state_dir, backend_factory=lambda u: backends[u])
    (result,) = engine.up([fleet.get(SLUG)], lambda *_: None, wait=False)
    assert result.result == "created"
    return backends, backends[uri].conn.lookupByName(fleet.get(SLUG).vm_name).UUIDString()


def test_a_passed_test_leaves_nothing_and_the_original_untouched(
    fleet: model.Fleet, state_dir: Path, original: tuple[dict[str, LibvirtBackend], str]
) -> None:
    backends, uuid = original
    test = _test(fleet, state_dir, backends)
    o = test.run("hersonissos-2026-12-01T02:00:04")
    assert (o.result, o.detail, o.verify) == ("passed", "", "passed")
    assert o.expected == o.actual == CONTENT.counts()
    assert list(o.timings) == [
        "removing leftovers",
        "throwaway fleet",
        "up",
        "deploy",
        "restore",
        "verify",
        "content check",
        "removing the throwaway",
    ]
    be = backends[fleet.hypervisors["hv01"].uri]
    _gone(be, fleet, state_dir)
    dom = be.domain(fleet.get(SLUG).vm_name)
    assert dom is not None and dom.running
    assert be.conn.lookupByName(fleet.get(SLUG).vm_name).UUIDString() == uuid
    assert test.seen["running"] is True


def test_the_throwaway_is_a_copy_on_an_isolated_network_without_control(
    fleet: model.Fleet, state_dir: Path, original: tuple[dict[str, LibvirtBackend], str]
) -> None:
    test = _test(fleet, state_dir, original[0])
    assert test.run("hersonissos-2026-12-01T02:00:04").result == "passed"
    derived: model.Fleet = test.seen["fleet"]  # type: ignore[assignment]
    t: model.Municipality = test.seen["throwaway"]  # type: ignore[assignment]
    m = fleet.get(SLUG)
    assert (derived.name, t.slug, t.vm_name) == ("crete-rt", "hersonissos-rt", THROWAWAY_VM)
    assert (t.domain, t.display_name, t.modules) == (m.domain, m.display_name, m.modules)
    assert [x.slug for x in derived.municipalities] == ["hersonissos-rt"]
    assert derived.control is None
    assert test.seen["orphans"] == []
    assert t.ip in fleet.restore_test_network
    assert derived.network.cidr == fleet.restore_test_network
    assert derived.network.controller == derived.network.gateway
    assert [str(n) for n in derived.management_sources] == ["10.77.250.1/32"]
    net = ET.fromstring(test.seen["network_xml"])  # type: ignore[arg-type]
    assert net.find("forward") is None  # host-only: nothing routed or NATed out
    assert net.findtext("name") == NETWORK
    mine = secrets.read_secrets(fleet, SLUG, KeyStore(state_dir, fleet.name, fleet.inventory))
    theirs: dict[str, str] = test.seen["vault"]  # type: ignore[assignment]
    for name in ("vault_portal_admin_password", "vault_portal_db_password"):
        assert theirs[name] == mine[name]  # the restored databases' accounts log in with them
    assert "vault_backup_passphrase" not in theirs
    assert "vault_backup_ssh_key" not in theirs


@pytest.mark.parametrize(
    ("fail", "verify", "detail"),
    [
        ("deploy", "", "deploy: deploy broke"),
        ("restore", "", "restore: restore broke"),
        ("verify", "failed", "verify: web: portal answers 502"),
        ("content", "passed", "content check: published posts missing"),
    ],
)
def test_a_failed_test_is_reported_and_still_removed(
    fleet: model.Fleet,
    state_dir: Path,
    original: tuple[dict[str, LibvirtBackend], str],
    fail: str,
    verify: str,
    detail: str,
) -> None:
    test = _test(fleet, state_dir, original[0], fail=fail)
    o = test.run("hersonissos-2026-12-01T02:00:04")
    assert (o.result, o.verify) == ("failed", verify)
    assert o.detail.startswith(detail)
    assert "removing the throwaway" in o.timings
    _gone(original[0][fleet.hypervisors["hv01"].uri], fleet, state_dir)


def test_ctrl_c_removes_the_throwaway_and_goes_on_up(
    fleet: model.Fleet, state_dir: Path, original: tuple[dict[str, LibvirtBackend], str]
) -> None:
    test = _test(fleet, state_dir, original[0], fail="ctrl-c:restore")
    with pytest.raises(KeyboardInterrupt):
        test.run("hersonissos-2026-12-01T02:00:04")
    _gone(original[0][fleet.hypervisors["hv01"].uri], fleet, state_dir)


def test_a_kept_or_killed_runs_leftover_is_removed_by_the_next_run(
    fleet: model.Fleet, state_dir: Path, original: tuple[dict[str, LibvirtBackend], str]
) -> None:
    be = original[0][fleet.hypervisors["hv01"].uri]
    kept = _test(fleet, state_dir, original[0], fail="verify", keep_on_failure=True)
    o = kept.run("hersonissos-2026-12-01T02:00:04")
    assert o.result == "failed" and "kept for inspection" in o.leftover
    assert be.domain(THROWAWAY_VM) is not None and be.network_exists(NETWORK)
    again = _test(fleet, state_dir, original[0])
    assert again.run("hersonissos-2026-12-01T02:00:05").result == "passed"
    _gone(be, fleet, state_dir)


def test_a_network_another_vm_uses_is_not_removed(
    fleet: model.Fleet, state_dir: Path, original: tuple[dict[str, LibvirtBackend], str]
) -> None:
    be = original[0][fleet.hypervisors["hv01"].uri]
    kept = _test(fleet, state_dir, original[0], fail="verify", keep_on_failure=True)
    kept.run("hersonissos-2026-12-01T02:00:04")
    xml = be.domain_xml(THROWAWAY_VM, inactive=True).replace(THROWAWAY_VM, "someone-elses-vm")
    root = ET.fromstring(xml)
    root.remove(root.find("uuid"))  # type: ignore[arg-type]
    for meta in root.iterfind("metadata"):
        root.remove(meta)  # not ours: no metadata
    be.conn.defineXML(ET.tostring(root, encoding="unicode"))
    be.remove_domain(THROWAWAY_VM)
    assert not be.remove_network(NETWORK)
    assert be.network_exists(NETWORK)
    be.conn.lookupByName("someone-elses-vm").undefine()
    assert be.remove_network(NETWORK)
    assert not be.network_exists(NETWORK)


def test_the_derived_inventory_is_private_and_gone_afterwards(
    fleet: model.Fleet, state_dir: Path
) -> None:
    keys = KeyStore(state_dir, fleet.name, fleet.inventory)
    root = restorefleet.write(fleet, fleet.get(SLUG), state_dir, keys)
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    vault = root / "host_vars" / "hersonissos-rt" / "vault.yml"
    assert oct(vault.stat().st_mode & 0o777) == "0o600"
    assert vault.read_bytes().startswith(b"$ANSIBLE_VAULT")
    entry = yaml.safe_load((root / "hosts.yml").read_text())["all"]["children"]
    assert "central" not in entry
    assert "ip" not in entry["municipalities"]["hosts"]["hersonissos-rt"]
    assert (root / "host_vars" / "hersonissos-rt" / "data" / "budget_lines.csv").is_file()
    restorefleet.remove(state_dir, fleet)
    assert not root.exists()


def test_a_name_too_long_for_a_vm_is_refused(inv: InventoryCopy) -> None:
    long_slug = "a" * (63 - len("crete-") - 1)
    inv.add_host(long_slug, display_name="Δήμος Μακρύς")
    f = inv.load()
    with pytest.raises(UsageError, match="longer than 63"):
        restorefleet.check_names(f, f.get(long_slug))


def test_ansible_sees_the_throwaway_as_kallikratis_computes_it(
    fleet: model.Fleet, state_dir: Path, vault_password: Path, tmp_path: Path
) -> None:
    """Plain ansible-inventory on the derived inventory (the vars plugin, the vault): the
    throwaway is managed from the isolated network's gateway, knows no control VM and no
    backup store, and has the original's domain and application secrets."""
    import json
    import os
    import subprocess
    import sys

    from kallikratis import addresses, inventory, paths

    keys = KeyStore(state_dir, fleet.name, fleet.inventory)
    root = restorefleet.write(fleet, fleet.get(SLUG), state_dir, keys)
    derived = inventory.load(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "KALLIKRATIS_"))}
    env.update(
        ANSIBLE_CONFIG=str(paths.PROJECT_ROOT / "ansible.cfg"),
        KALLIKRATIS_STATE_DIR=str(state_dir),
        KALLIKRATIS_VAULT_PASSWORD_FILE=str(vault_password),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        PYTHONPATH=str(paths.PROJECT_ROOT / "cli"),
        **addresses.to_env(derived),
    )
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-inventory"),
            "-i",
            str(root),
            "--host",
            "hersonissos-rt",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    plain = {
        k: (v.get("__ansible_unsafe", v) if isinstance(v, dict) else v) for k, v in got.items()
    }
    t = derived.get("hersonissos-rt")
    assert plain["ansible_host"] == str(t.ip)
    assert plain["kallikratis_domain"] == fleet.get(SLUG).domain
    assert plain["kallikratis_mgmt_networks"] == ["10.77.250.1/32"]
    assert plain["kallikratis_control_hosts"] == []
    assert not plain.get("kallikratis_backup_store")
    assert "fleets/crete-rt/known_hosts" in str(plain["ansible_ssh_common_args"])
    mine = secrets.read_secrets(fleet, SLUG, keys)
    assert got["vault_portal_db_password"] == mine["vault_portal_db_password"]
    assert "vault_backup_passphrase" not in got
