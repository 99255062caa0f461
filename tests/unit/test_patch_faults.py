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
