"""`kallikratis report` against the real fleet: Prometheus on the control VM, libvirt, the journal.

Assumes (issue 10): the shared e2e fleet holds the central VM :data:`CONTROL` (brought up by
``up --all`` and given the monitoring role by ``deploy --all``: the ``deployed`` fixture), with
the probe and scrape intervals short enough for the lab. Prometheus is then reachable at
``http://<control ip>:9090`` from the lab's namespace, where these tests run.

Budget (TCG): no boot and no deploy of its own; a few scrapes and probe rounds, ~3-4 min.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.conftest import CONTROL, SLUGS, Deployed

#: Prometheus scrapes and probes every 15 s or so in the lab; a change shows within minutes
WAIT_S = 240.0


def _report(deployed: Deployed, *args: str) -> tuple[int, dict[str, Any]]:
    done = deployed.fleet.kk("report", "--json", *args, check=False, timeout=300)
    assert done.returncode in (0, 5), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def _until(deployed: Deployed, ok: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _, data = _report(deployed)
        if ok(data):
            return data
        time.sleep(10)
    raise AssertionError(f"{what}: not within {WAIT_S:.0f} s; last report:\n{json.dumps(data)}")


def _rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["slug"]: r for r in data["municipalities"]}


def _state(data: dict[str, Any], slug: str, check: str) -> str:
    return str(_rows(data)[slug]["checks"][check]["state"])


def test_report_reads_prometheus_for_every_municipality(fresh: Deployed) -> None:
    data = _until(
        fresh,
        lambda d: (
            all(_state(d, s, "node") == "green" for s in SLUGS)
            and all(_state(d, s, "portal") == "green" for s in SLUGS)
        ),
        "every municipality scraped and probed",
    )
    assert data["summary"]["prometheus"] == "ok" and data["warnings"] == []
    assert sorted(_rows(data)) == sorted(SLUGS) and CONTROL not in _rows(data)
    for slug in SLUGS:
        row = _rows(data)[slug]
        assert row["checks"]["state"]["state"] == "green" and row["state"] == "running"
        assert row["checks"]["drift"]["state"] == "green"
        assert row["tls_days"] is not None and row["tls_days"] > 21
        assert row["versions"].get("wordpress"), row["versions"]
        assert row["use"]["posts"] is not None  # the portal's collector reports


def test_portal_down_on_one_municipality_is_red_there_only(fresh: Deployed) -> None:
    down, up = "hersonissos", "archanes-asterousia"
    fresh.fleet.ssh(down, "sudo systemctl stop nginx")
    try:
        data = _until(fresh, lambda d: _state(d, down, "portal") == "red", f"{down} portal red")
        assert _state(data, up, "portal") == "green"
        code, data = _report(fresh)
        assert code == 5 and down in [r["slug"] for r in data["municipalities"]]
        assert _rows(data)[down]["overall"] == "red"
    finally:
        fresh.fleet.ssh(down, "sudo systemctl start nginx")


def test_publish_puts_the_page_on_control(fresh: Deployed, tmp_path: Any) -> None:
    page = tmp_path / "scorecard.html"
    done = fresh.fleet.kk("report", "--publish", "--html", str(page), check=False, timeout=300)
    assert done.returncode in (0, 5), done.stderr[-3000:]
    assert "published https://control." in done.stderr
    served = fresh.fleet.ssh(CONTROL, "sudo cat /var/www/kallikratis-report/index.html")
    assert served == page.read_text(encoding="utf-8")
    assert served.count("<svg") == 3 and "Δήμος Χερσονήσου" in served


def test_unreachable_prometheus_is_a_warning_not_a_failure(fresh: Deployed) -> None:
    done = fresh.fleet.kk(
        "report", "--json", "--prometheus", "http://127.0.0.1:9", check=False, timeout=120
    )
    assert done.returncode in (0, 5), done.stderr[-3000:]
    data = json.loads(done.stdout)
    assert data["summary"]["prometheus"].startswith("unreachable")
    assert "warning: Prometheus" in done.stderr
    assert all(r["checks"]["state"]["state"] == "green" for r in data["municipalities"])
