"""site.yml over municipalities and central VMs: two runs side by side, one merged result."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kallikratis import ansible, siterun
from support import SLUGS, InventoryCopy


def _run(
    hosts: dict[str, ansible.HostOutcome], rc: int, seconds: float, tag: str
) -> ansible.PlaybookRun:
    return ansible.PlaybookRun(
        "site.yml", rc, seconds, Path(f"/runs/x{tag}/artifacts"), hosts, "mitogen_linear"
    )


def test_municipalities_and_central_vms_run_at_the_same_time(
    inv: InventoryCopy, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv.add_central()
    fleet = inv.load()
    calls: list[tuple[list[str], str]] = []
    running = 0
    overlapped = threading.Event()
    lock = threading.Lock()

    def fake_run(
        playbook: str, inventory: Path, *, limit: list[str], tag: str = "", **kw: Any
    ) -> ansible.PlaybookRun:
        nonlocal running
        with lock:
            calls.append((limit, tag))
            running += 1
            if running == 2:
                overlapped.set()
        overlapped.wait(5)  # both runs are in flight before either ends
        time.sleep(0.05)
        with lock:
            running -= 1
        failed = 1 if "control" in limit else 0
        return _run(
            {h: ansible.HostOutcome(ok=3, failed=failed) for h in limit},
            failed * 2,
            1.0 + failed,
            tag,
        )

    monkeypatch.setattr(ansible, "run_playbook", fake_run)
    run = siterun.run_site(fleet.inventory, fleet.municipalities, state_dir=Path("/nowhere"))
    assert overlapped.is_set()
    assert sorted(calls, key=lambda c: c[1]) == [(list(SLUGS), ""), (["control"], "central")]
    assert set(run.hosts) == {*SLUGS, "control"}
    assert run.hosts["control"].result == "failed" and run.hosts[SLUGS[0]].result == "ok"
    assert (run.rc, run.seconds) == (2, 2.0)


def test_one_kind_alone_is_one_plain_run(
    inv: InventoryCopy, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv.add_central()
    fleet = inv.load()
    calls: list[dict[str, Any]] = []

    def fake_run(playbook: str, inventory: Path, **kw: Any) -> ansible.PlaybookRun:
        calls.append(kw)
        return _run({h: ansible.HostOutcome(ok=1) for h in kw["limit"]}, 0, 1.0, "")

    monkeypatch.setattr(ansible, "run_playbook", fake_run)
    siterun.run_site(fleet.inventory, fleet.tenants[:1], state_dir=Path("/nowhere"))
    assert [c["limit"] for c in calls] == [[SLUGS[0]]] and "tag" not in calls[0]


def test_not_started_only_when_neither_run_started() -> None:
    a = _run({"a": ansible.HostOutcome(ok=1)}, 0, 1.0, "")
    b = replace_not_started(
        _run({"c": ansible.HostOutcome(failed=1)}, 4, 1.0, "central"), "no hosts"
    )
    assert siterun.merge([a, b]).not_started == ""
    both = siterun.merge([replace_not_started(a, "x"), b])
    assert both.not_started == "x; no hosts"


def replace_not_started(run: ansible.PlaybookRun, why: str) -> ansible.PlaybookRun:
    from dataclasses import replace

    return replace(run, not_started=why)
