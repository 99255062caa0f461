"""Faults during a patch run (issue 9, section 5): a revert that fails, a pool too full for a
memory snapshot, snapshots past their maximum age; on libvirt's test driver."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any

import libvirt
import pytest
from kallikratis import model, opsfields, patch
from kallikratis.cli import main
from kallikratis.commands import common
from kallikratis.commands import patch as patch_command
from kallikratis.commands import snapshots as snapshots_command
from kallikratis.errors import HypervisorError, InventoryError
from kallikratis.patchroom import GIB
from kallikratis.snapshotage import prune_expired
from support import SLUGS, InventoryCopy
from test_patch import PROBE, Harness, harness  # noqa: F401 - the fixture


def _vm(harness: Harness, slug: str) -> tuple[Any, model.Municipality]:  # noqa: F811
    m = harness.engine.fleet.get(slug)
    return harness.engine.backend(m.hypervisor), m


def _delete_snapshot_during_deploy(harness: Harness, slug: str) -> None:  # noqa: F811
    """The deploy fails, and meanwhile someone deleted the snapshot: the revert must fail."""
    real = harness.deploy

    def deploy(members: list[model.Municipality], check: bool) -> dict[str, Any]:
        if not check:
            be, m = _vm(harness, slug)
            for s in be.list_snapshots(m.vm_name):
                be.delete_snapshot(m.vm_name, s.name)
            harness.deploy_fail[slug] = "task Install WordPress: boom"
        return real(members, check)

    harness.deploy = deploy  # type: ignore[method-assign]


def test_failed_revert_of_a_serving_vm_leaves_maintenance_and_says_where_it_is(
    harness: Harness,  # noqa: F811
) -> None:
    slug = SLUGS[0]
    _delete_snapshot_during_deploy(harness, slug)
    outcomes = harness.run([harness.engine.fleet.get(slug)], canary=0)
    o = outcomes[0]
    assert o.result == "failed" and not o.reverted
    assert "REVERT FAILED (reverting" in o.reason
    assert "the VM is running and NOT reverted" in o.reason
    assert f"snapshot {o.snapshot} kept for a manual revert" in o.reason
    assert "maintenance mode off (it serves)" in o.reason
    assert "services answering" in o.reason
    assert harness.guests[slug].flag is False, "a serving VM does not stay in maintenance"
    assert harness.verifies[-1] == ([slug], True), "checked as it was: in maintenance mode"
    assert (slug, "failed") in harness.recorded


def test_failed_revert_of_a_broken_vm_keeps_the_notice(harness: Harness) -> None:  # noqa: F811
    slug = SLUGS[0]
    harness.verify_fail[slug] = "test_portal_answers: 502 Bad Gateway"
    be, m = _vm(harness, slug)

    def refuse(domain: str, name: str) -> None:
        raise HypervisorError(f"reverting {domain} to {name}: internal error: qemu died")

    be.revert_snapshot = refuse  # type: ignore[method-assign]
    outcomes = harness.run([m], canary=0)
    o = outcomes[0]
    assert o.result == "failed"
    assert "REVERT FAILED (reverting" in o.reason and "qemu died" in o.reason
    assert "maintenance mode ON (citizens see the notice)" in o.reason
    assert "services NOT answering (test_portal_answers: 502 Bad Gateway)" in o.reason
    assert harness.guests[slug].flag is True
    assert [s.name for s in be.list_snapshots(m.vm_name)] == [o.snapshot], "kept"


def test_failed_revert_exits_non_zero_through_the_cli(
    harness: Harness,  # noqa: F811
    inv: InventoryCopy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slug = SLUGS[0]
    _delete_snapshot_during_deploy(harness, slug)
    steps = patch.Steps(
        guest=lambda m: harness.guests[m.slug],  # type: ignore[arg-type,return-value]
        deploy=lambda ms, check: harness.deploy(ms, check),
        verify=harness.verify,
    )
    monkeypatch.setattr(common.Context, "engine", property(lambda _self: harness.engine))
    monkeypatch.setattr(common.Context, "fleet", property(lambda _self: harness.engine.fleet))
    monkeypatch.setattr(patch_command, "prepare_stack", lambda *_a: None)
    monkeypatch.setattr(patch_command, "fleet_steps", lambda *_a: steps)
    monkeypatch.setattr(sys, "argv", ["kallikratis", "-i", str(inv.root), "patch", slug])
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exited:
        main()  # the real entry point: error -> message and exit code
    assert exited.value.code == 5
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "REVERT FAILED" in text and "NOT reverted" in text
    assert "maintenance mode off (it serves)" in text
    assert f"patch failed on: {slug}" in text
    assert "libvirtError" not in text


# -- room for the snapshot -----------------------------------------------------------------------
def test_snapshot_disks_and_memory_on_the_test_driver(harness: Harness) -> None:  # noqa: F811
    be, m = _vm(harness, SLUGS[0])
    [disk] = be.snapshot_disks(m.vm_name)  # the read-only seed takes no snapshot
    assert (disk.name, disk.capacity_bytes) == (m.disk_volume, 10 * GIB)
    assert be.domain_memory(m.vm_name) == 1536 << 20
    capacity, available = be.pool_space(disk.pool)
    assert capacity == 100 * GIB and 0 < available <= capacity


def test_no_room_refuses_that_vm_and_the_wave_goes_on(harness: Harness) -> None:  # noqa: F811
    """need = 1.5 GiB memory + max(1 GiB, 10 % of 10 GiB) + 1 GiB margin = 3.5 GiB per VM:
    8 GiB free hold two of the wave's three snapshots."""
    be, _m = _vm(harness, SLUGS[0])
    be.pool_space = lambda pool: (100 * GIB, 8 * GIB)  # type: ignore[method-assign]
    outcomes = harness.run(canary=0, batch="10", max_fail="0")
    assert {o.slug: o.result for o in outcomes} == {
        SLUGS[0]: "patched",
        SLUGS[1]: "patched",
        SLUGS[2]: "failed",
    }
    o = outcomes[2]
    assert o.refused and "refused before any change" in o.reason
    assert "needs 3.5 GiB" in o.reason and "8.0 GiB available" in o.reason
    assert "7.0 GiB of it claimed by this wave" in o.reason
    assert harness.guests[SLUGS[2]].flag_history == [] and harness.snaps(SLUGS[2]) == []


def test_a_refused_canary_does_not_stop_the_run(harness: Harness) -> None:  # noqa: F811
    be, canary = _vm(harness, SLUGS[0])
    real = be.domain_memory
    be.domain_memory = lambda name: (  # type: ignore[method-assign]
        1 << 50 if name == canary.vm_name else real(name)
    )
    outcomes = harness.run(canary=1, batch="10", max_fail="0")
    assert [o.result for o in outcomes] == ["failed", "patched", "patched"]
    assert (
        outcomes[0].refused and "not enough room in storage pool kallikratis" in outcomes[0].reason
    )


# -- snapshots past their maximum age ------------------------------------------------------------
WEEK = 7 * 86400


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, WEEK), ("7d", WEEK), ("36h", 36 * 3600), ("2w", 2 * WEEK)]
)
def test_max_age_field(value: Any, seconds: int) -> None:
    assert opsfields.patch_snapshot_max_age(value) == (seconds, [])


@pytest.mark.parametrize("value", [7, "7", "0d", "30m", "7 d", "1y", True, "-1d"])
def test_bad_max_age_is_a_problem(value: Any) -> None:
    _default, problems = opsfields.patch_snapshot_max_age(value)
    assert [p[0] for p in problems] == ["patch_snapshot_max_age"]


def test_max_age_from_the_inventory(inv: InventoryCopy) -> None:
    inv.set_fleet(patch_snapshot_max_age="2d")
    inv.set_host("hersonissos", patch_snapshot_max_age="12h")
    fleet = inv.load()
    assert fleet.get("minoa-pediada").patch_snapshot_max_age == 2 * 86400
    assert fleet.get("hersonissos").patch_snapshot_max_age == 12 * 3600
    inv.set_host("hersonissos", patch_snapshot_max_age="forever")
    with pytest.raises(InventoryError) as caught:
        inv.load()
    assert [(p.entry, p.field) for p in caught.value.problems] == [
        ("hersonissos", "patch_snapshot_max_age")
    ]


def test_only_our_expired_snapshots_are_pruned(harness: Harness) -> None:  # noqa: F811
    be, m = _vm(harness, SLUGS[0])
    for name in ("kk-patch-20260101T000000-r1", "kk-patch-20260102T000000-r2"):
        be.create_snapshot(m.vm_name, name, "x")
    dom = be.conn.lookupByName(m.vm_name)
    dom.snapshotCreateXML("<domainsnapshot><name>before-manual-fix</name></domainsnapshot>", 0)
    now = time.time()
    assert prune_expired(harness.engine.backend, [m], now) == [], "none is a week old yet"
    later = now + WEEK + 60
    planned = prune_expired(harness.engine.backend, [m], later, dry_run=True)
    assert [(p.snapshot, p.result) for p in planned] == [
        ("kk-patch-20260101T000000-r1", "expired"),
        ("kk-patch-20260102T000000-r2", "expired"),
    ]
    assert len(be.list_snapshots(m.vm_name)) == 2, "a dry run deletes nothing"
    done = prune_expired(harness.engine.backend, [m], later, spare="-r2")
    assert [(p.snapshot, p.result) for p in done] == [("kk-patch-20260101T000000-r1", "deleted")]
    assert [s.name for s in be.list_snapshots(m.vm_name)] == ["kk-patch-20260102T000000-r2"]
    assert "before-manual-fix" in dom.snapshotListNames(0), "not ours: never touched"


def test_a_patch_run_prunes_expired_snapshots_but_not_its_own(
    harness: Harness,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slug = SLUGS[0]
    keep = dataclasses.replace(harness.engine.fleet.get(slug), patch_keep_snapshots=5)
    assert harness.run([keep], canary=0, run_id=1)[0].result == "patched"
    [first] = harness.snaps(slug)
    real = patch.prune_expired
    monkeypatch.setattr(  # the next run starts eight days later
        patch, "prune_expired", lambda be, ms, now, **kw: real(be, ms, now + WEEK + 86400, **kw)
    )
    harness.guests[slug].pending_list = [PROBE]
    [o] = harness.run([keep], canary=0, run_id=2)
    assert o.result == "patched"
    assert [n.rsplit("-", 1)[-1] for n in harness.snaps(slug)] == ["r2"]
    assert o.pruned == [f"{first} deleted"]
    assert "expired snapshots: kk-patch-" in o.summary()


def test_snapshots_prune_command(
    harness: Harness,  # noqa: F811
    inv: InventoryCopy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    be, m = _vm(harness, SLUGS[1])
    be.create_snapshot(m.vm_name, "kk-patch-20260101T000000-r1", "x")
    monkeypatch.setattr(common.Context, "engine", property(lambda _self: harness.engine))
    monkeypatch.setattr(common.Context, "fleet", property(lambda _self: harness.engine.fleet))
    real = snapshots_command.prune_expired
    monkeypatch.setattr(
        snapshots_command,
        "prune_expired",
        lambda be, ms, now, **kw: real(be, ms, now + WEEK + 60, **kw),
    )

    def kk(*args: str) -> Any:
        monkeypatch.setattr(sys, "argv", ["kallikratis", "-i", str(inv.root), *args])
        main()
        return json.loads(capsys.readouterr().out)

    dry = kk("snapshots", "prune", "--dry-run", "--json")
    assert [(s["slug"], s["result"]) for s in dry["snapshots"]] == [(SLUGS[1], "expired")]
    assert harness.snaps(SLUGS[1]) == ["kk-patch-20260101T000000-r1"]
    done = kk("snapshots", "prune", SLUGS[1], "--json")
    assert [s["result"] for s in done["snapshots"]] == ["deleted"]
    assert harness.snaps(SLUGS[1]) == []


def test_a_snapshot_made_before_the_connection_dropped_is_used(
    harness: Harness,  # noqa: F811
) -> None:
    """create_snapshot is not retried after a reconnect; if the snapshot was made, the run
    uses it (a revert then has something to go back to) rather than failing the VM."""
    slug = SLUGS[0]
    be, m = _vm(harness, slug)
    real = be.create_snapshot

    def made_then_lost(domain: str, name: str, description: str) -> Any:
        real(domain, name, description)
        raise HypervisorError(f"snapshotting {domain}: End of file while reading data (...)")

    be.create_snapshot = made_then_lost  # type: ignore[method-assign]
    harness.verify_fail[slug] = "portal: 500"
    [o] = harness.run([m], canary=0)
    assert o.result == "failed" and o.reverted and "serving again" in o.reason


class DaemonRestart:
    """The backend's connection as libvirtd restarts under it: from *armed* on, the next
    call fails as a call in flight does (EOF on the socket); the daemon comes back with its
    state (the reopened connection is the same test-driver node)."""

    def __init__(self, real: Any) -> None:
        self.real, self.armed, self.failed = real, False, 0

    def close(self) -> None:  # the reconnect closes the dead connection: not the node
        pass

    def isAlive(self) -> int:  # noqa: N802 - libvirt's name
        return 0 if self.failed and self.armed else 1

    def __getattr__(self, name: str) -> Any:
        if self.armed and not self.failed:
            self.failed += 1
            raise lv_eof()
        return getattr(self.real, name)


def lv_eof() -> libvirt.libvirtError:
    err = libvirt.libvirtError("End of file while reading data: Input/output error")
    err.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, err.args[0], 2, None, None)
    return err


def test_libvirtd_restart_before_the_revert_is_survived(harness: Harness) -> None:  # noqa: F811
    slug = SLUGS[0]
    be, m = _vm(harness, slug)
    real = be.conn
    restart = DaemonRestart(real)
    be.conn = restart
    be._opener = lambda _uri: real  # type: ignore[attr-defined]
    real_deploy = harness.deploy

    def deploy_fails_and_libvirtd_restarts(ms: list[model.Municipality], check: bool) -> Any:
        if not check:
            harness.deploy_fail[slug] = "task Install WordPress: boom"
            restart.armed = True
        return real_deploy(ms, check)

    harness.deploy = deploy_fails_and_libvirtd_restarts  # type: ignore[method-assign]
    [o] = harness.run([m], canary=0)
    assert restart.failed == 1 and be.reconnects == 1
    assert o.result == "failed" and o.reverted, o.reason
    assert "reverted to the snapshot, serving again" in o.reason
    assert harness.snaps(slug) == [] and harness.guests[slug].flag is False
