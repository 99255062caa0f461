"""The patch engine's wave logic against libvirt's test driver (real snapshots, real reverts).

SSH into the guests, Ansible and testinfra are replaced by :class:`FakeGuest` and two small
functions; everything on the libvirt side is the real API on a private test-driver node.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from kallikratis import model, patch, patchwaves
from kallikratis.errors import UsageError
from kallikratis.guest import GuestError, Upgrade, fetch_errors, parse_simulation
from kallikratis.provision import Engine
from support import SLUGS

MakeEngine = Callable[[model.Fleet], Engine]
PROBE = Upgrade("kallikratis-probe", "1.0", "1.1", "kallikratis:kallikratis")


class FakeGuest:
    """The state of one VM as the patch engine sees it over SSH."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        self.pending_list: list[Upgrade] = [PROBE]
        self.installed_versions = {"kallikratis-probe": "1.0"}
        self.flag = False
        self.flag_history: list[bool] = []
        self.needs_reboot = False
        self.reboots = 0
        self.fail_apply = False
        self.interrupt_apply = False
        self.fail_pending = False

    def pending(self, security_only: bool = False) -> list[Upgrade]:
        if self.fail_pending:
            raise GuestError("apt-get update could not read every source: Err:1 http://x")
        return [u for u in self.pending_list if u.security or not security_only]

    def in_maintenance(self) -> bool:
        return self.flag

    def maintenance(self, on: bool) -> None:
        self.flag = on
        self.flag_history.append(on)

    def apply(self, upgrades: list[Upgrade], security_only: bool) -> str:
        if self.interrupt_apply:
            raise KeyboardInterrupt  # SIGTERM while the upgrade runs
        if self.fail_apply:
            raise GuestError("exit 100: E: Sub-process /usr/bin/dpkg returned an error code (1)")
        for u in upgrades:
            self.installed_versions[u.package] = u.new
        return ""

    def installed(self, packages: list[str]) -> dict[str, str]:
        return {p: self.installed_versions[p] for p in packages if p in self.installed_versions}

    def reboot_required(self) -> bool:
        return self.needs_reboot

    def reboot(self, timeout: float = 600.0) -> float:
        self.reboots += 1
        self.needs_reboot = False
        return 1.0

    def set_clock(self, epoch: float) -> None:
        pass


class Harness:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.guests = {m.slug: FakeGuest(m.slug) for m in engine.fleet.municipalities}
        self.deploys: list[tuple[list[str], bool]] = []
        self.verifies: list[tuple[list[str], bool]] = []
        self.deploy_fail: dict[str, str] = {}
        self.verify_fail: dict[str, str] = {}
        self.stack_changes = 0
        self.interrupt_deploy = False
        self.recorded: list[tuple[str, str]] = []
        self.phases: dict[str, list[str]] = {s: [] for s in self.guests}
        self.lock = threading.Lock()

    def deploy(self, members: list[model.Municipality], check: bool) -> dict[str, Any]:
        self.deploys.append(([m.slug for m in members], check))
        if self.interrupt_deploy and not check:
            raise KeyboardInterrupt
        return {
            m.slug: (
                m.slug not in self.deploy_fail,
                self.stack_changes,
                self.deploy_fail.get(m.slug, ""),
            )
            for m in members
        }

    def verify(self, members: list[model.Municipality], maintenance: bool) -> dict[str, Any]:
        self.verifies.append(([m.slug for m in members], maintenance))
        out = {}
        for m in members:
            g = self.guests[m.slug]
            assert g.flag == maintenance, f"{m.slug}: verify ran with maintenance={g.flag}"
            bad = self.verify_fail.get(m.slug) if maintenance else None
            out[m.slug] = (bad is None, bad or "")
        return out

    def progress(self, slug: str, phase: str) -> None:
        with self.lock:
            self.phases[slug].append(phase)

    def run(self, selection: list[model.Municipality] | None = None, **opts: Any) -> list[Any]:
        steps = patch.Steps(
            guest=lambda m: self.guests[m.slug],  # type: ignore[arg-type,return-value]
            deploy=self.deploy,
            verify=self.verify,
        )
        now = opts.pop("now", None)
        options = patch.Options(**{"run_id": 7, "settle_seconds": 0, **opts})
        run = patch.PatchRun(
            self.engine.backend,
            selection or list(self.engine.fleet.municipalities),
            options,
            steps,
            self.progress,
            lambda o: self.recorded.append((o.slug, o.result)),
            now=(lambda: now) if now else datetime.now,
        )
        return run.run()

    def snaps(self, slug: str) -> list[str]:
        m = self.engine.fleet.get(slug)
        be = self.engine.backend(m.hypervisor)
        return [s.name for s in be.list_snapshots(m.vm_name)]


@pytest.fixture
def harness(test_fleet: model.Fleet, make_engine: MakeEngine) -> Harness:
    engine = make_engine(test_fleet)
    results = engine.up(test_fleet.municipalities, lambda _s, _p: None, wait=False)
    assert {r.result for r in results} == {"created"}
    return Harness(engine)


def _results(outcomes: list[Any]) -> dict[str, str]:
    return {o.slug: o.result for o in outcomes}


# -- waves and limits ----------------------------------------------------------------------------
def test_waves_canary_then_batches() -> None:
    slugs = [f"m{i}" for i in range(7)]
    assert patchwaves.waves(slugs, 1, "3") == [["m0"], ["m1", "m2", "m3"], ["m4", "m5", "m6"]]
    assert patchwaves.waves(slugs, 0, "100%") == [slugs]
    assert patchwaves.waves(slugs, 2, "10%") == [["m0", "m1"], *[[s] for s in slugs[2:]]]
    assert patchwaves.waves(slugs[:1], 3, "10") == [["m0"]]
    assert patchwaves.waves([], 1, "10") == []


@pytest.mark.parametrize("batch", ["0", "-1", "x", "101%", "%", ""])
def test_bad_batch_is_refused(batch: str) -> None:
    with pytest.raises(UsageError, match="--batch"):
        patchwaves.waves(["a", "b"], 0, batch)


def test_allowed_failures() -> None:
    assert patchwaves.allowed_failures("0", 300) == 0
    assert patchwaves.allowed_failures("2", 300) == 2
    assert patchwaves.allowed_failures("10%", 332) == 33
    with pytest.raises(UsageError, match="--max-fail"):
        patchwaves.allowed_failures("-1", 3)


# -- reading apt's output ------------------------------------------------------------------------
SIMULATION = """\
NOTE: This is only a simulation!
Reading package lists...
Inst libssl3t64 [3.5.1-1] (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64])
Inst kallikratis-probe [1.0] (1.1 kallikratis:kallikratis [all])
Inst linux-image-6.12.48+deb13-cloud-amd64 (6.12.48-1 Debian:13.1/stable [amd64])
Conf libssl3t64 (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64])
"""


def test_parse_simulation() -> None:
    ups = parse_simulation(SIMULATION)
    assert [(u.package, u.old, u.new) for u in ups] == [
        ("libssl3t64", "3.5.1-1", "3.5.1-1+deb13u1"),
        ("kallikratis-probe", "1.0", "1.1"),
        ("linux-image-6.12.48+deb13-cloud-amd64", "", "6.12.48-1"),
    ]
    assert [u.security for u in ups] == [True, False, False]
    assert str(ups[1]) == "kallikratis-probe 1.0 → 1.1"


def test_fetch_errors() -> None:
    ok = "Hit:1 http://10.77.0.1:8000 kallikratis InRelease\nReading package lists..."
    assert fetch_errors(ok) == []
    bad = "Err:1 http://deb.debian.org/debian trixie InRelease\n  Temporary failure resolving"
    assert fetch_errors(bad) == ["Err:1 http://deb.debian.org/debian trixie InRelease"]


# -- whole runs ----------------------------------------------------------------------------------
def test_all_patched_in_waves(harness: Harness) -> None:
    outcomes = harness.run(canary=1, batch="10")
    assert _results(outcomes) == dict.fromkeys(SLUGS, "patched")
    assert [o.wave for o in outcomes] == [1, 2, 2]
    assert harness.deploys == [([SLUGS[0]], False), (list(SLUGS[1:]), False)]
    for slug in SLUGS:
        g = harness.guests[slug]
        assert g.installed_versions["kallikratis-probe"] == "1.1"
        assert g.flag_history == [True, False], "maintenance on for the patch, then off"
        assert len(harness.snaps(slug)) == 1
        assert harness.phases[slug][-1] == "patched"
    assert all(v[1] for v in harness.verifies), "verify ran in maintenance mode"
    assert sorted(harness.recorded) == sorted((s, "patched") for s in SLUGS)
    assert "kallikratis-probe 1.0 → 1.1" in outcomes[0].summary()


def test_nothing_pending_changes_nothing(harness: Harness) -> None:
    for g in harness.guests.values():
        g.pending_list = []
    outcomes = harness.run(canary=0, batch="10")
    assert _results(outcomes) == dict.fromkeys(SLUGS, "unchanged")
    assert harness.deploys == [(list(SLUGS), True)], "only a check-mode deploy"
    assert all(g.flag_history == [] for g in harness.guests.values())
    assert all(harness.snaps(s) == [] for s in SLUGS)


def test_stack_change_alone_is_patched(harness: Harness) -> None:
    for g in harness.guests.values():
        g.pending_list = []
    harness.stack_changes = 2
    outcomes = harness.run(canary=0)
    assert _results(outcomes) == dict.fromkeys(SLUGS, "patched")
    assert outcomes[0].stack_changes == 2


def test_canary_failure_reverts_and_stops(harness: Harness) -> None:
    canary = SLUGS[0]
    harness.verify_fail[canary] = "test_watched_services: kallikratis-probe.service not running"
    outcomes = harness.run(canary=1, batch="10", max_fail="0")
    assert _results(outcomes) == {canary: "failed", SLUGS[1]: "skipped", SLUGS[2]: "skipped"}
    o = outcomes[0]
    assert o.reverted and "kallikratis-probe.service not running" in o.reason
    assert "serving again" in o.reason
    assert harness.guests[canary].flag is False, "not left in maintenance mode"
    assert harness.snaps(canary) == [], "the snapshot reverted to is gone"
    assert harness.verifies[-1] == ([canary], False), "revert confirmed outside maintenance"
    for slug in SLUGS[1:]:
        assert harness.guests[slug].flag_history == [], f"{slug} untouched"
        assert "run stopped" in outcomes[SLUGS.index(slug)].reason
    dom = harness.engine.backend("hv01").domain(harness.engine.fleet.get(canary).vm_name)
    assert dom is not None and dom.running


def test_max_fail_lets_the_run_go_on(harness: Harness) -> None:
    harness.deploy_fail[SLUGS[0]] = "task Install WordPress: boom"
    outcomes = harness.run(canary=1, batch="10", max_fail="1")
    assert _results(outcomes) == {SLUGS[0]: "failed", SLUGS[1]: "patched", SLUGS[2]: "patched"}
    assert "deploy: task Install WordPress: boom" in outcomes[0].reason


def test_failed_upgrade_is_reverted(harness: Harness) -> None:
    harness.guests[SLUGS[1]].fail_apply = True
    outcomes = harness.run(canary=0, max_fail="5")
    assert _results(outcomes)[SLUGS[1]] == "failed"
    assert outcomes[1].reverted and "upgrading packages" in outcomes[1].reason
    assert [s for s, _ in harness.deploys[0:1]] == [[SLUGS[0], SLUGS[2]]]


def test_shut_off_vm_fails_without_changes(harness: Harness) -> None:
    m = harness.engine.fleet.get(SLUGS[2])
    harness.engine.backend(m.hypervisor).conn.lookupByName(m.vm_name).destroy()
    outcomes = harness.run(canary=0, max_fail="1")
    assert _results(outcomes) == {SLUGS[0]: "patched", SLUGS[1]: "patched", SLUGS[2]: "failed"}
    assert "shut off" in outcomes[2].reason and not outcomes[2].reverted
    assert harness.snaps(SLUGS[2]) == []


def test_unreadable_sources_fail_before_any_change(harness: Harness) -> None:
    harness.guests[SLUGS[0]].fail_pending = True
    outcomes = harness.run(canary=1)
    assert outcomes[0].result == "failed" and "apt-get update" in outcomes[0].reason
    assert harness.guests[SLUGS[0]].flag_history == []
    assert harness.snaps(SLUGS[0]) == []


def test_reboot_when_the_guest_asks(harness: Harness) -> None:
    harness.guests[SLUGS[0]].needs_reboot = True
    outcomes = harness.run(canary=0)
    assert [o.rebooted for o in outcomes] == [True, False, False]
    assert harness.guests[SLUGS[0]].reboots == 1


def test_dry_run_changes_nothing(harness: Harness) -> None:
    outcomes = harness.run(canary=1, dry_run=True)
    assert _results(outcomes) == dict.fromkeys(SLUGS, "planned")
    assert [u.new for u in outcomes[0].upgrades] == ["1.1"]
    assert harness.deploys == [] and harness.verifies == []
    assert all(g.flag_history == [] for g in harness.guests.values())
    assert all(harness.snaps(s) == [] for s in SLUGS)


def test_security_only(harness: Harness) -> None:
    sec = Upgrade("libssl3t64", "3.5.1-1", "3.5.1-1+deb13u1", "Debian-Security:13/stable-security")
    harness.guests[SLUGS[0]].pending_list = [PROBE, sec]
    outcomes = harness.run(canary=0, security_only=True, dry_run=True)
    assert [u.package for u in outcomes[0].upgrades] == ["libssl3t64"]


def test_old_snapshots_are_pruned(harness: Harness) -> None:
    slug = SLUGS[0]
    keep_two = dataclasses.replace(harness.engine.fleet.get(slug), patch_keep_snapshots=2)
    for run_id in (1, 2, 3):
        harness.guests[slug].pending_list = [PROBE]
        outcomes = harness.run([keep_two], canary=0, run_id=run_id)
        assert outcomes[0].result == "patched"
    assert [n.rsplit("-", 1)[-1] for n in harness.snaps(slug)] == ["r2", "r3"]
    harness.run([harness.engine.fleet.get(slug)], canary=0, run_id=4)
    assert [n.rsplit("-", 1)[-1] for n in harness.snaps(slug)] == ["r4"]


def test_left_in_maintenance_converges(harness: Harness) -> None:
    """An interrupted run left a VM in maintenance mode with nothing else pending."""
    g = harness.guests[SLUGS[0]]
    g.pending_list, g.flag = [], True
    outcomes = harness.run([harness.engine.fleet.get(SLUGS[0])], canary=0)
    assert outcomes[0].result == "patched" and g.flag is False


def test_interrupt_reverts_unfinished(harness: Harness) -> None:
    harness.interrupt_deploy = True
    with pytest.raises(KeyboardInterrupt):
        harness.run(canary=0)
    for slug in SLUGS:
        assert harness.guests[slug].flag is False
        assert harness.snaps(slug) == []
        assert (slug, "failed") in harness.recorded


def test_interrupt_during_the_upgrade_reverts(harness: Harness) -> None:
    """SIGTERM while packages are being upgraded: the VM goes back to its snapshot."""
    harness.guests[SLUGS[0]].interrupt_apply = True
    with pytest.raises(KeyboardInterrupt):
        harness.run([harness.engine.fleet.get(SLUGS[0])], canary=0)
    assert "reverting" in harness.phases[SLUGS[0]]
    assert harness.guests[SLUGS[0]].flag is False
    assert harness.snaps(SLUGS[0]) == []
    assert (SLUGS[0], "failed") in harness.recorded


def test_a_rebooted_vm_gets_a_second_verify_once_services_settle(harness: Harness) -> None:
    slug = SLUGS[0]
    harness.guests[slug].needs_reboot = True
    harness.verify_fail[slug] = "kolibri not listening yet"
    real_verify = harness.verify

    def verify_then_heal(members: list[model.Municipality], maintenance: bool) -> dict[str, Any]:
        out = real_verify(members, maintenance)
        harness.verify_fail.pop(slug, None)  # the service came up meanwhile
        return out

    harness.verify = verify_then_heal  # type: ignore[method-assign]
    outcomes = harness.run([harness.engine.fleet.get(slug)], canary=0)
    assert outcomes[0].result == "patched" and outcomes[0].rebooted
    assert [v for v in harness.verifies if v[1]] == [([slug], True), ([slug], True)]


def test_scheduled_run_respects_windows(harness: Harness) -> None:
    fleet = harness.engine.fleet
    sunday_3am = datetime(2026, 11, 29, 3, 0)
    inside = dataclasses.replace(fleet.get(SLUGS[0]), patch_window="Sun 02:00-05:00")
    outside = dataclasses.replace(fleet.get(SLUGS[1]), patch_window="Sat 02:00-05:00")
    anytime = fleet.get(SLUGS[2])
    outcomes = harness.run([inside, outside, anytime], canary=0, scheduled=True, now=sunday_3am)
    assert _results(outcomes) == {SLUGS[0]: "patched", SLUGS[1]: "skipped", SLUGS[2]: "patched"}
    assert "outside its patch window" in outcomes[1].reason
