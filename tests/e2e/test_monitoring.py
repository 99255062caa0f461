"""Central control on real VMs: the `control` VM's Prometheus scrapes and probes every
municipality, the collectors measure use, the alerts fire for the one that breaks, and
`kallikratis report` shows it.

On the shared deployed fleet, reverted first (``fresh``). The e2e inventory shortens the
monitoring's alert durations (control's host_vars, :data:`LAB_MONITORING`): PortalDown after
1 minute instead of 5; scrapes and probes every 60 s as in production.
In this order:
  1. every municipality's node exporter is `up`, every portal probed successfully;
  2. a post published on a portal shows in the use figures (collector run, then scraped);
  3. a package pending from the test apt repository appears in `report`;
  4. nginx stopped on one municipality (right after 1., so that its alert's minute runs while
     2. and 3. wait for their scrapes): PortalDown fires for that one only (read from the
     alert log receiver on control), and `report` marks it red and exits non-zero;
  5. `report --publish` puts the scorecard on control; headless Chromium shows it at
     https://control.<fleet_domain>/ (basic auth, the fleet CA) and screenshots it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kallikratis.keys import KeyStore
from kallikratis.secrets import read_secret

from tests.e2e.conftest import CONTROL, FLEET, ROOT, SLUGS, VMS, Deployed, Fleet, write_post
from tests.helpers.chromium import browser_profile, headless

pytestmark = pytest.mark.e2e
BROKEN = SLUGS[1]  # hersonissos: every module on
HEALTHY = SLUGS[0]
ARTIFACTS = Path(os.environ.get("KALLIKRATIS_TEST_ARTIFACTS", "/tmp/kallikratis-test-artifacts"))
METRICS_SERVICE = "kallikratis-metrics.service"  # runs every collector once
ALERT_LOG = "/var/log/kallikratis/alerts.jsonl"


@dataclass
class Monitor:
    fleet: Fleet
    prometheus: str
    sites: dict[str, tuple[str, str]]

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=20) as res:  # noqa: S310 - our own lab VM
            data = json.load(res)
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def values(self, promql: str) -> dict[str, float]:
        """municipality -> value of each series of *promql*."""
        return {
            r["metric"].get("municipality", ""): float(r["value"][1]) for r in self.query(promql)
        }

    def wait(self, what: str, ready: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = ready()
            if last:
                return last
            time.sleep(5)
        raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")

    def collect(self, slug: str) -> None:
        """Run the collectors now (their timer would in a few minutes)."""
        self.fleet.ssh(slug, f"sudo systemctl start {METRICS_SERVICE}")

    def alerts(self) -> list[dict[str, Any]]:
        out = self.fleet.ssh(CONTROL, f"sudo cat {ALERT_LOG} 2>/dev/null || true")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def report(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.fleet.kk("report", "--json", *args, check=False, timeout=300)
        try:
            return done.returncode, json.loads(done.stdout)
        except ValueError as exc:
            raise AssertionError(
                f"report: no JSON: {done.stdout[-2000:]} {done.stderr[-2000:]}"
            ) from exc


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["slug"]: r for r in report["municipalities"]}


@pytest.fixture(scope="module")
def mon(fresh: Deployed) -> Iterator[Monitor]:
    fleet = fresh.fleet
    sites = fleet.sites()
    m = Monitor(fleet, f"http://{sites[CONTROL][0]}:9090", sites)
    m.wait(
        "every node exporter up",
        lambda: (v := m.values('up{job="node"}')) and all(v.get(s) == 1 for s in VMS) and v,
        timeout=180,
    )
    yield m


@pytest.fixture(scope="module")
def broken(mon: Monitor) -> int:
    """nginx stopped on BROKEN, as early as the tests allow (after the probes of every portal
    were seen): PortalDown's minute and the scrapes before it run while the tests about HEALTHY
    wait for theirs. The number of alert notifications logged before the stop: the log on
    control is the alert history, the fleet's first deploy included (the portals were probed
    before they were up), so only what arrives from then on counts."""
    seen = len(mon.alerts())
    mon.fleet.ssh(BROKEN, "sudo systemctl stop nginx")
    return seen


def test_every_municipality_is_scraped_and_probed(mon: Monitor) -> None:
    up = mon.values('up{job="node"}')
    assert {s for s, v in up.items() if v == 1} >= set(VMS), up
    probes = mon.wait(
        "every portal probed",
        lambda: (v := mon.values('probe_success{module="site"}')) and set(v) >= set(SLUGS) and v,
        timeout=120,
    )
    assert {s: probes[s] for s in SLUGS} == dict.fromkeys(SLUGS, 1.0), probes
    # the probes check TLS against the fleet CA: a certificate with days left
    days = mon.values('(probe_ssl_earliest_cert_expiry{module="site"} - time()) / 86400')
    assert all(days[s] > 21 for s in SLUGS), days
    # only what modules are on is probed: archanes has no e-learning, hersonissos has
    education = mon.values('probe_success{module="education"}')
    assert HEALTHY not in education and education.get(BROKEN) == 1.0, education


@pytest.mark.usefixtures("broken")  # HEALTHY only: BROKEN's alert runs meanwhile
def test_a_published_post_shows_in_the_use_figures(mon: Monitor) -> None:
    metric = f'kallikratis_portal_posts_published{{municipality="{HEALTHY}"}}'
    mon.collect(HEALTHY)
    before = mon.wait("posts counted", lambda: mon.values(metric).get(HEALTHY), 120)
    write_post(mon.fleet, HEALTHY, mon.sites[HEALTHY][1], f"kk-{uuid.uuid4().hex[:8]}", "Νέα")
    mon.collect(HEALTHY)
    after = mon.wait(
        "the new post counted",
        lambda: (n := mon.values(metric).get(HEALTHY, 0)) > before and n,
        timeout=120,
    )
    assert after == before + 1


def test_a_pending_package_appears_in_the_report(mon: Monitor, fresh: Deployed) -> None:
    fleet = mon.fleet
    fleet.ssh(
        HEALTHY,
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q kallikratis-probe",
    )
    fresh.repo.publish(["1.0", "1.1"])
    fleet.ssh(HEALTHY, "sudo apt-get update -q")
    mon.collect(HEALTHY)
    metric = f'kallikratis_upgrades_pending{{municipality="{HEALTHY}"}}'
    mon.wait("the upgrade seen by Prometheus", lambda: mon.values(metric).get(HEALTHY, 0) >= 1, 120)
    _, report = mon.report(HEALTHY)
    row = _rows(report)[HEALTHY]
    assert row["updates_pending"] >= 1, row


def test_a_portal_down_alerts_for_that_municipality_only(mon: Monitor, broken: int) -> None:
    # per municipality only its latest notification since the stop (firing, then maybe resolved)
    def firing() -> list[str]:
        latest: dict[str, str] = {}
        for payload in mon.alerts()[broken:]:
            for a in payload.get("alerts", []):
                if a["labels"].get("alertname") == "PortalDown":
                    latest[a["labels"].get("municipality", "")] = a.get("status", "")
        return sorted(m for m, status in latest.items() if status == "firing")

    now: list[list[str]] = [[]]

    def alone() -> bool:
        now[0] = firing()
        return now[0] == [BROKEN]

    try:
        mon.wait("PortalDown for hersonissos alone", alone, timeout=300)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; firing in the alert log: {now[0]}") from None
    code, report = mon.report()
    rows = _rows(report)
    assert report["summary"]["prometheus"] == "ok" and not report["warnings"], report["warnings"]
    assert CONTROL not in rows  # the scorecard is about municipalities
    assert code == 5, "a municipality is down: the report is red"
    assert rows[BROKEN]["overall"] == "red", rows[BROKEN]
    assert rows[BROKEN]["checks"]["portal"]["state"] == "red", rows[BROKEN]["checks"]
    assert rows[HEALTHY]["checks"]["portal"]["state"] == "green", rows[HEALTHY]["checks"]


def test_without_prometheus_the_report_still_reads_libvirt(mon: Monitor) -> None:
    code, report = mon.report("--prometheus", "http://127.0.0.1:9")
    rows = _rows(report)
    assert report["warnings"], report
    assert rows[HEALTHY]["checks"]["state"]["state"] == "green"
    assert rows[HEALTHY]["checks"]["node"]["state"] == "unknown"
    assert code in (0, 5)


def test_the_dashboard_is_served_on_control(mon: Monitor, tmp_path: Path) -> None:
    fleet = mon.fleet
    done = fleet.kk("report", "--publish", check=False, timeout=300)
    assert done.returncode in (0, 1, 5), done.stderr[-2000:]  # red: hersonissos is down
    ip, domain = mon.sites[CONTROL]
    keys = KeyStore(fleet.state, FLEET, fleet.inventory)
    password = read_secret(_model(fleet), CONTROL, keys, "vault_monitoring_report_password")
    env = browser_profile(tmp_path, fleet.ca_file)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-control.png"
    shot.unlink(missing_ok=True)
    common = headless(tmp_path, domain, ip)
    url = f"https://kallikratis:{urllib.parse.quote(password, safe='')}@{domain}/"
    dom = subprocess.run(
        [*common, "--dump-dom", url], env=env, capture_output=True, text=True, timeout=180
    )
    page = dom.stdout
    assert BROKEN in page and HEALTHY in page, dom.stderr[-2000:]
    assert page.count("<svg") >= 3, "the three charts"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,1800", url],
        env=env,
        capture_output=True,
        timeout=180,
    )
    assert shot.exists() and shot.stat().st_size > 20_000
    # without the password: 401, not the page (from the controller, the fleet CA only)
    context = ssl.create_default_context(cafile=str(fleet.ca_file))
    conn = http.client.HTTPSConnection(ip, 443, timeout=20, context=context)
    conn.sock = context.wrap_socket(socket.create_connection((ip, 443), 20), server_hostname=domain)
    conn.request("GET", "/", headers={"Host": domain})
    assert conn.getresponse().status == 401
    conn.close()


def _model(fleet: Fleet) -> Any:
    from kallikratis import inventory

    return inventory.load(fleet.inventory)


def test_the_monitorings_footprint_is_measured(mon: Monitor) -> None:
    """The figures bench/monitoring.py projects from (series per municipality, Prometheus'
    memory, the collectors' CPU), and the report's Prometheus answers recorded as fixtures,
    kept in the artifacts directory."""
    series = mon.values('count by (municipality) ({municipality!=""})')
    assert all(0 < series.get(s, 0) < 5000 for s in SLUGS), series
    rss = mon.fleet.ssh(CONTROL, "ps -o rss= -C prometheus").split()
    # systemd logs each run's CPU time when the oneshot unit stops ("Consumed 1.234s CPU time")
    consumed = mon.fleet.ssh(
        HEALTHY,
        f"sudo journalctl -u {METRICS_SERVICE} -o cat --no-pager"
        " | grep -o 'Consumed .*CPU time' | tail -n 3",
        check=False,
    ).splitlines()
    figures = {
        "series_per_municipality": {s: series[s] for s in SLUGS},
        "prometheus_rss_kib": int(rss[0]) if rss else None,
        "collectors_cpu_last_runs": consumed,  # the runs' own words, e.g. "Consumed 2.1s CPU time"
        "prometheus_uptime_s": mon.fleet.ssh(CONTROL, "ps -o etimes= -C prometheus").strip(),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "monitoring-figures.json").write_text(json.dumps(figures, indent=2))
    recorded = ARTIFACTS / "prometheus-recorded"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "record-prometheus"), mon.prometheus]
        + ["--out", str(recorded)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (recorded / "index.json").exists()
