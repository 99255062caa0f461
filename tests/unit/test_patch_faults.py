"""Faults during a patch run (issue 9, section 5): a revert that fails, a pool too full for a
memory snapshot, snapshots past their maximum age; on libvirt's test driver."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from kallikratis import model, patch
from kallikratis.cli import main
from kallikratis.commands import common
from kallikratis.commands import patch as patch_command
from kallikratis.errors import HypervisorError
from kallikratis.patchroom import GIB
from support import SLUGS, InventoryCopy
from test_patch import Harness, harness  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("harness")


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
